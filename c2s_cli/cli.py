"""The ``c2s`` command line: ``denoise``, ``train`` and ``info``. The only module that knows Typer and rich.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 some inputs of a batch failed, 4 input rejected,
130 interrupted. Logs and progress go to stderr; ``--json`` data goes to stdout.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from c2s_cli import __version__
from c2s_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_RUNTIME,
    C2SError,
    InputError,
    UsageError,
)

app = typer.Typer(
    name="c2s",
    help="Self-supervised MRI denoising (Corruption2Self). Run `c2s COMMAND --help` for details.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: typer's rich help formatter costs ~0.2 s of imports on every --help
    context_settings={"help_option_names": ["-h", "--help"]},
)

_VERBOSE = False

# library parameter → the CLI's flag (errors name parameters; the CLI speaks flags)
_FLAGS = {
    "output": "-o", "model": "--model", "sigma": "--sigma", "coils": "--noise-coils", "vst": "--no-vst",
    "strength": "--strength", "tta": "--tta", "planes": "--planes", "slice_axis": "--slice-axis", "dtype": "--dtype",
    "mask": "--mask", "guides": "--guide", "adapt": "--adapt", "residual": "--residual", "preview": "--preview",
    "report": "--report", "sigma_map": "--sigma-map", "save_sigma_map": "--save-sigma-map", "device": "--device", "threads": "--threads", "batch_size": "--batch-size",
    "part_id": "--part-id", "reference": "--reference", "run_dir": "--run-dir", "series": "--series",
    "resume": "--resume", "init": "--init", "guide_names": "--guide-names",
}


def _message(exc: C2SError) -> str:
    """The error's one line, its leading parameter name replaced by the CLI flag (``sigma must…`` → ``--sigma must…``)."""
    msg = str(exc)
    flag = _FLAGS.get(exc.param or "")
    if flag and (msg.startswith(exc.param + " ") or msg.startswith(exc.param + ":")):  # type: ignore[operator]
        return f"{flag}{msg[len(exc.param):]}"  # type: ignore[arg-type]
    if flag and exc.param == "vst" and "VST off" in msg:
        return msg.replace("turn the VST off", "use --no-vst")
    return msg


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a command; map errors to one line on stderr and a distinct exit code (traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write("c2s: interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        except C2SError as exc:
            if _VERBOSE:
                traceback.print_exc()
            sys.stderr.write(f"c2s: error: {_message(exc)}\n")
            sys.exit(exc.exit_code)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # unexpected: one line; the traceback (never locals) only with -v
            if _VERBOSE:
                traceback.print_exc()
            sys.stderr.write(f"c2s: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)\n")
            sys.exit(EXIT_RUNTIME)

    return wrapper


class _Log:
    """Messages and progress on stderr; quiet hides info, verbose adds details."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.verbose = verbose

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg, markup=False)

    def debug(self, msg: str) -> None:
        if self.verbose:
            self.console.print(msg, markup=False, style="dim")

    def warn(self, msg: str) -> None:
        self.console.print(f"c2s: warning: {msg}", markup=False, style="yellow")

    def progress(self) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            disable=self.quiet or not self.console.is_terminal,
            transient=True,
        )


QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors on stderr.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="More detail; tracebacks on errors.")]


def _start(quiet: bool, verbose: bool) -> _Log:
    """Set the verbosity for error reporting and return the stderr logger of a command."""
    global _VERBOSE
    _VERBOSE = verbose
    return _Log(quiet, verbose)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"c2s {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Self-supervised MRI denoising (Corruption2Self)."""


# ------------------------------------------------------------------------------------------------------ info


@app.command()
@_guarded
def info(
    path: Annotated[Optional[Path], typer.Argument(help="A NIfTI file, a DICOM file or folder, or a .safetensors model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    series: Annotated[Optional[str], typer.Option(help="DICOM series to describe (UID or SeriesNumber).")] = None,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Estimate the noise level (scans).")] = True,
    coils: Annotated[int, typer.Option("--noise-coils", min=1, help="Effective coil count N (1 = Rician).")] = 1,
    models: Annotated[bool, typer.Option("--models", help="List the available models.")] = False,
) -> None:
    """Describe a scan, a DICOM folder or a model checkpoint (no weights are loaded)."""
    from c2s_cli import inspect

    if models:
        rows = inspect.models_info()
        if as_json:
            typer.echo(json.dumps(rows))
        for r in rows if not as_json else []:
            ok = {True: "verified", False: "SHA-256 MISMATCH", None: "unregistered"}[r["verified"]]
            typer.echo(f"{r['name']:<12} {r['sha256'][:16]}…  {ok:<16} {r['path']}")
            if r["trained_on"]:
                typer.echo(f"{'':<12} trained on: {r['trained_on']}")
        return
    if path is None:
        raise UsageError("give a PATH (or --models)")
    out = inspect.model_info(path) if path.suffix == ".safetensors" else inspect.scan_info(path, series=series, noise=noise, coils=coils)
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for k, v in out.items():
        if k in ("affine", "config") or v in (None, "", [], {}):
            continue
        if k == "noise" and isinstance(v, dict):
            s = v.get("sigma")
            line = f"σ = {s:.4g} ({v.get('method')})" if s else "unavailable"
            line += f", σ_object/σ_background = {v['ratio']:.2f}" if v.get("ratio") else ""
            table.add_row("noise", line)
            for w in v.get("warnings", []):
                table.add_row("", f"⚠ {w}")
        elif k == "series" and isinstance(v, list):
            for i, s in enumerate(v):
                table.add_row("series" if i == 0 else "", f"#{s['number']} {s['description']!r} {s['modality']} ×{s['images']}  {s['uid']}")
        else:
            table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    Console(no_color="NO_COLOR" in os.environ).print(table)


# ------------------------------------------------------------------------------------------------------ denoise


def _planes(text: str) -> tuple[str, ...]:
    from c2s_cli.api import check_planes

    plane_list = tuple(p.strip() for p in text.split(",") if p.strip())
    check_planes(plane_list)
    return plane_list


@app.command()
@_guarded
def denoise(
    inputs: Annotated[list[str], typer.Argument(help="NIfTI files, DICOM files or folders; @list.txt; - for stdin.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file or series folder (one input), else a folder.")],
    model: Annotated[str, typer.Option(help="Model name or .safetensors path.", envvar="C2S_MODEL")] = "default",
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in image units (default: estimated).")] = None,
    sigma_map: Annotated[Optional[Path], typer.Option("--sigma-map", help="σ per voxel, NIfTI on the input's grid (spatially varying noise, e.g. dwidenoise -noise).")] = None,
    save_sigma_map: Annotated[Optional[Path], typer.Option("--save-sigma-map", help="Write the σ used per voxel as NIfTI (one input).")] = None,
    coils: Annotated[Optional[int], typer.Option("--noise-coils", min=1, help="Effective coil count N (1 = Rician).")] = None,
    no_vst: Annotated[bool, typer.Option("--no-vst", help="Skip the Rician variance stabilisation.")] = False,
    strength: Annotated[float, typer.Option(help="Multiplies σ for the network (1 = as estimated).")] = 1.0,
    tta: Annotated[int, typer.Option(help="Average over 1, 2, 4 or 8 in-plane flips/transposes per slice (N× time).")] = 1,
    planes: Annotated[str, typer.Option(help="Denoise along these planes and average: axial (acquisition axis), coronal, sagittal (N× time).")] = "axial",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", envvar="C2S_DEVICE")] = "auto",
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Slices per forward pass.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads.")] = None,
    series: Annotated[Optional[str], typer.Option(help="DICOM series to use (UID or SeriesNumber).")] = None,
    slice_axis: Annotated[Optional[int], typer.Option(min=0, max=2, help="Axis to slice along (default: acquisition).")] = None,
    dtype: Annotated[str, typer.Option(help="NIfTI output type: float32 or input.")] = "float32",
    suffix: Annotated[str, typer.Option(help="Suffix of output names in folder mode.")] = "_c2s",
    residual: Annotated[Optional[Path], typer.Option("--residual", help="Also write the residual, input − output, as NIfTI (one input).")] = None,
    noise_map: Annotated[Optional[Path], typer.Option("--noise-map", hidden=True, help="Old name of --residual.")] = None,
    preview: Annotated[Optional[Path], typer.Option(help="Write a before/after/residual PNG (one input).")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="NIfTI mask on the input's grid: voxels outside are returned unchanged.")] = None,
    guide: Annotated[Optional[list[Path]], typer.Option(help="Co-registered other contrast(s) for a multi-contrast model.")] = None,
    adapt: Annotated[int, typer.Option(min=0, help="Fine-tune the model on each input for this many steps first.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace existing outputs that c2s wrote (never anything else).")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose output exists.")] = False,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Continue after a failed input (exit 3).")] = False,
    num_parts: Annotated[Optional[int], typer.Option(help="Split the inputs into N parts (SLURM_ARRAY_TASK_COUNT).")] = None,
    part_id: Annotated[Optional[int], typer.Option(help="Process part K of N (SLURM_ARRAY_TASK_ID).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Append the JSON objects as JSON Lines to this file.")] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Denoise scans with a pre-trained C2S model: one forward pass per slice, headers and geometry kept."""
    from c2s_cli import batch
    from c2s_cli.api import check_options
    from c2s_cli.config import DenoiseOptions

    log = _start(quiet, verbose)
    if noise_map is not None:
        if residual is not None:
            raise UsageError("--noise-map is the old name of --residual; give one of them")
        log.warn("--noise-map is renamed --residual (it writes input − output, not a noise level map)")
        residual = noise_map
    if force and skip_existing:
        raise UsageError("--force and --skip-existing contradict each other")
    opts = DenoiseOptions(sigma=sigma, sigma_map=sigma_map, save_sigma_map=save_sigma_map, coils=coils, vst=False if no_vst else None, strength=strength, tta=tta,
                          planes=_planes(planes), slice_axis=slice_axis, series=series, dtype=dtype, mask=mask,
                          guides=tuple(guide or ()), adapt=adapt, residual=residual, preview=preview, force=force,
                          threads=threads)
    check_options(opts)  # before any input is read
    items = batch.shard(batch.expand(inputs, series, keep_going=keep_going), num_parts, part_id)
    single = len(items) == 1 and len(inputs) == 1 and inputs[0] != "-" and not inputs[0].startswith("@")
    jobs = batch.plan(items, output, single=single, suffix=suffix)
    if dry_run:
        for j in jobs:
            typer.echo(json.dumps({"input": str(j.item.path), "series": j.item.series, "output": str(j.output),
                                   "model": model, "device": device, "error": j.item.error}))
        return
    for flag, value in (("--residual", residual), ("--preview", preview), ("--mask", mask), ("--guide", guide),
                        ("--sigma-map", sigma_map), ("--save-sigma-map", save_sigma_map)):
        if value and len(jobs) != 1:
            raise UsageError(f"{flag} needs exactly one input")
    everything = batch.input_paths(items)
    if not single:
        batch.check_plan(jobs, force=force, skip_existing=skip_existing)
    rep = batch.Report(report, everything, [*(j.output for j in jobs), residual, preview, save_sigma_map])
    if not single:
        output.mkdir(parents=True, exist_ok=True)
    from c2s_cli.api import Denoiser

    den = Denoiser(model, device, batch_size=batch_size, threads=threads)
    log.info(f"c2s {__version__}: model {den.name} (sha256 {den.sha256[:12]}…), device {den.device}, {len(jobs)} input(s)")
    failures: list[str] = []
    try:
        for j in jobs:
            p = j.item.path
            if j.output.exists() and skip_existing:
                log.info(f"{p}: skipped, {j.output} exists")
                rec: dict[str, Any] = {"input": str(p), "output": str(j.output), "status": "skipped"}
            else:
                try:
                    if j.item.error:
                        raise InputError(j.item.error)
                    rec = _denoise_one(den, j, dataclasses.replace(opts, series=j.item.series), everything, log)
                except C2SError as exc:
                    if not keep_going:
                        raise
                    failures.append(f"{p}: {_message(exc)}")
                    log.warn(_message(exc))
                    rec = {"input": str(p), "output": str(j.output), "status": "failed", "error": _message(exc)}
            if as_json:
                typer.echo(json.dumps(rec, default=str))
            rep.write(rec)
    finally:
        rep.close()
    if failures:
        log.warn(f"{len(failures)} of {len(jobs)} input(s) failed:\n  " + "\n  ".join(failures))
        raise typer.Exit(EXIT_PARTIAL)


def _denoise_one(den: Any, job: Any, opts: Any, everything: list[Path], log: _Log) -> dict[str, Any]:
    with log.progress() as prog:
        task = prog.add_task(job.item.path.name, total=None, status="")

        def on_progress(stage: str, done: int, total: int) -> None:
            prog.update(task, description=f"{stage} {job.item.path.name}", completed=done, total=total)

        if opts.adapt:
            log.info(f"{job.item.path}: adapting {den.name} for {opts.adapt} steps")
        rec = den.denoise_file(job.item.path, job.output, opts, inputs=everything, on_progress=on_progress,
                               on_warning=lambda w: log.warn(f"{job.item.path}: {w}"))
    first = rec["noise"][0]
    log.info(f"{job.item.path}: σ = {first['sigma']:.4g} ({first['method']})")
    log.info(f"{job.item.path} → {job.output} ({rec['seconds']['total']:.1f} s)")
    return rec


# ------------------------------------------------------------------------------------------------------ train


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
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    patch_size: Annotated[Optional[int], typer.Option(min=16)] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0)] = None,
    seed: Annotated[int, typer.Option()] = 0,
    planes: Annotated[str, typer.Option(help="Comma list of axial,coronal,sagittal (axial = acquisition axis).")] = "axial",
    val_fraction: Annotated[Optional[float], typer.Option(min=0.0, max=0.5)] = None,
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in image units for every input (default: estimated).")] = None,
    coils: Annotated[int, typer.Option("--noise-coils", min=1)] = 1,
    no_vst: Annotated[bool, typer.Option("--no-vst")] = False,
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
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Run folder (default: OUTPUT without suffix + '.run').")] = None,
    device: Annotated[str, typer.Option(envvar="C2S_DEVICE")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1)] = None,
    series: Annotated[Optional[str], typer.Option()] = None,
    description: Annotated[str, typer.Option(help="What the data are (stored in the model metadata).")] = "",
    reference: Annotated[Optional[Path], typer.Option(help="Clean reference of the first input: report PSNR at validation.")] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast (CUDA, or CPUs with native bf16).")] = False,
    force: Annotated[bool, typer.Option("--force")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a C2S denoiser on your own noisy scans (self-supervised: no clean images needed)."""
    from c2s_cli import training
    from c2s_cli.batch import expand
    from c2s_cli.train import dist_env

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
                   "val_fraction": val_fraction},
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
            status = f"loss {rec['loss']:.4f}{val} {rec['step'] / max(rec['seconds'], 1e-9):.2f} steps/s"
            prog.update(task, completed=rec["step"], total=cfg.train.steps, status=status)
            if not prog.console.is_terminal and not log.quiet:
                log.info(f"step {rec['step']}/{cfg.train.steps} {status}")

        res = training.fit(cfg, items, output, rd, guides=guide or [], sigma_maps=sigma_map or [], init=init, resume=resume is not None,
                           force=force, epochs=epochs, device=device, reference=reference, description=description,
                           on_log=on_log, on_info=log.info, on_warning=log.warn)
    if res is not None:
        ranks = f", {world} ranks with identical weights" if world > 1 else ""
        log.info(f"wrote {output} ({res.steps} steps, {res.seconds:.0f} s, final loss {res.loss:.4f}{ranks})")


# ------------------------------------------------------------------------------------------------------ entry


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point."""
    import logging
    import warnings

    # pydicom reports damaged values by quoting them: keep element values (possibly patient data) out of the logs
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _on_term)
    app()
