"""``c2s train``: self-supervised training (library: :mod:`c2s_cli.training`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from c2s_cli.cli.app import DeviceOpt, QuietOpt, SeriesOpt, ThreadsOpt, VerboseOpt, _guarded, _Log, _planes, _start, app
from c2s_cli.errors import UsageError



def _parse_range(text: str | None, flag: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} expects MIN,MAX, got {text!r}") from None
    if not 0 < lo <= hi:
        raise UsageError(f"{flag} expects 0 < MIN ≤ MAX, got {text!r}")
    return lo, hi


@app.command()
@_guarded
def train(
    inputs: Annotated[list[str], typer.Argument(help="Noisy scans: NIfTI files, DICOM folders, folders of them, @list.txt.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write (.safetensors).")],
    steps: Annotated[Optional[int], typer.Option(min=1, help="Optimisation steps.")] = None,
    epochs: Annotated[Optional[float], typer.Option(min=0.01, help="Passes over the training slices (instead of --steps).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Patches per optimisation step.")] = None,
    patch_size: Annotated[Optional[int], typer.Option(min=16, help="Training patch size in pixels (square).")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Peak learning rate (AdamW; warm-up, then cosine).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw (same seed, same model).")] = 0,
    planes: Annotated[str, typer.Option(help="Comma list of axial,coronal,sagittal (axial = acquisition axis).")] = "axial",
    val_fraction: Annotated[Optional[float], typer.Option(min=0.0, max=0.5, help="Fraction of slices held out for the self-supervised validation loss.")] = None,
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in image units for every input (default: estimated).")] = None,
    coils: Annotated[int, typer.Option("--noise-coils", min=1, help="Effective coil count N (1 = Rician).")] = 1,
    no_vst: Annotated[bool, typer.Option("--no-vst", help="Skip the Rician variance stabilisation (signed / Gaussian data).")] = False,
    add_noise: Annotated[Optional[str], typer.Option(help="MIN,MAX: add Rician noise of MIN..MAX × the 99.5th percentile (data augmentation for clean-ish scans).")] = None,
    noisy_copies: Annotated[int, typer.Option(min=1, help="Noisy copies per input with --add-noise.")] = 1,
    tau_max: Annotated[Optional[float], typer.Option(help="GDSM: τ ~ U(0, T·σ_d].")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="GDSM weight exponent: w = (τ² + σ_d²)^α.")] = None,
    target_fraction: Annotated[Optional[float], typer.Option(help="Detail refinement: σ_tg = fraction·σ_d.")] = None,
    context: Annotated[Optional[int], typer.Option(min=0, help="Neighbouring slices on each side (2.5D).")] = None,
    channels: Annotated[Optional[str], typer.Option(help="U-Net widths (default 16,32,64,128; e.g. 24,48,96,128 is wider and slower).")] = None,
    guide: Annotated[Optional[list[Path]], typer.Option(help="Other contrast(s) on each target's grid, K per target, in input order (multi-contrast).")] = None,
    guide_names: Annotated[Optional[str], typer.Option(help="Comma list naming the K guide contrasts (e.g. FLAIR).")] = None,
    sigma_map: Annotated[Optional[list[Path]], typer.Option("--sigma-map", help="σ per voxel (NIfTI on the input's grid), one per input in input order.")] = None,
    guide_dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability of zeroing a guide channel per sample.")] = 0.0,
    invert: Annotated[float, typer.Option("--invert", min=0.0, max=1.0, help="Probability of training on the contrast-inverted patch (bright-on-dark as dark-on-bright).")] = 0.0,
    init: Annotated[Optional[str], typer.Option(help="Start from this model (name or path): fine-tuning.")] = None,
    distill_planes: Annotated[float, typer.Option("--distill-planes", min=0.0, help="With --init: λ of the self-distillation term, the distance to the start model's own 3-plane average on the noisy volumes (the shipped default's stage 3; 0: off).")] = 0.0,
    distill_match: Annotated[str, typer.Option("--distill-match", help="Distil on the training volumes whose name contains this.")] = "mni152",
    distill_tta: Annotated[int, typer.Option("--distill-tta", help="TTA of the 3-plane teacher (1, 2, 4 or 8).")] = 2,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Run folder (default: OUTPUT without suffix + '.run').")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    series: SeriesOpt = None,
    description: Annotated[str, typer.Option(help="What the data are (stored in the model metadata).")] = "",
    reference: Annotated[Optional[Path], typer.Option(help="Clean reference of the first input: report PSNR at validation.")] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast (CUDA, or CPUs with native bf16).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output model (and run folder) that c2s wrote.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a C2S denoiser on your own noisy scans (self-supervised: no clean images needed)."""
    from c2s_cli import training
    from c2s_cli.batch import expand
    from c2s_cli.loop import dist_env

    log = _start(quiet, verbose)
    training.check_model_path(output)
    rd = resume or run_dir or output.with_suffix(".run")
    if resume is not None:
        cfg = training.resume_config(resume, steps)
    else:
        cfg = training.build_config(
            init=init, n_targets=len(expand(inputs, series)), n_guides=len(guide or []),
            guide_names=[x.strip() for x in guide_names.split(",")] if guide_names else None,
            model={"context": context, "channels": tuple(int(c) for c in channels.split(",")) if channels else None},
            gdsm={"tau_max": tau_max, "alpha": alpha, "target_fraction": target_fraction},
            train={"seed": seed, "planes": _planes(planes), "add_noise": _parse_range(add_noise, "--add-noise"),
                   "noisy_copies": noisy_copies, "guide_dropout": guide_dropout, "invert": invert, "bf16": bf16,
                   "steps": steps, "batch_size": batch_size, "patch_size": patch_size, "lr": lr,
                   "val_fraction": val_fraction, "distill_planes": distill_planes, "distill_match": distill_match,
                   "distill_tta": distill_tta},
            noise={"vst": not no_vst, "coils": coils, "sigma": sigma},
        )
    items = [(it.path, it.series) for it in expand(inputs, series)]
    if cfg.train.invert > 0 and not cfg.noise.vst:
        log.warn(f"--invert {cfg.train.invert} with --no-vst: the inversion is exact only for the VST domain's "
                 "symmetric noise; magnitude (Rician) noise is not symmetric")
    if dry_run:
        typer.echo(json.dumps({"inputs": [str(p) for p, _ in items], "run_dir": str(rd), "output": str(output),
                               "config": cfg.to_dict()}, indent=2))
        return
    if threads:
        import torch

        torch.set_num_threads(threads)
    world, rank = dist_env()
    if rank != 0:
        log = _Log(quiet=True)
    with log.progress() as prog:
        task = prog.add_task("train", total=cfg.train.steps, status="")

        def on_log(rec: dict[str, Any]) -> None:
            val = f" val {rec['val_loss']:.4f}" if rec.get("val_loss") is not None else ""
            val += f" PSNR {rec['psnr']:.2f} dB" if rec.get("psnr") is not None else ""
            status = f"loss {rec['loss']:.4f}{val} {rec['steps_per_second']:.2f} steps/s"
            prog.update(task, completed=rec["step"], total=cfg.train.steps, status=status)
            if not prog.console.is_terminal and not log.quiet:
                log.info(f"step {rec['step']}/{cfg.train.steps} {status}")

        res = training.fit(cfg, items, output, rd, guides=guide or [], sigma_maps=sigma_map or [], init=init, resume=resume is not None,
                           force=force, epochs=epochs, device=device, reference=reference, description=description,
                           on_log=on_log, on_info=log.info, on_warning=log.warn)
    if res is not None:
        ranks = f", {world} ranks with identical weights" if world > 1 else ""
        log.info(f"wrote {output} ({res.steps} steps, {res.seconds:.0f} s, final loss {res.loss:.4f}{ranks})")
    if world > 1:
        _exit_worker()


def _exit_worker() -> None:
    """End a torchrun worker whose work is done (model written, process group destroyed) without interpreter
    finalisation: a gloo rank has aborted in C++ teardown after a successful run ("terminate called without an
    active exception", SIGABRT; CI 2026-12-02, twice, once after the process group was destroyed explicitly), which
    torchrun reports as a failed job. Nothing is left to finalise: the output is renamed into place and unlocked."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
