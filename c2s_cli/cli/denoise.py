"""``c2s denoise``: the batch over :meth:`c2s_cli.api.Denoiser.denoise_file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

import dataclasses

from c2s_cli._version import __version__
from c2s_cli.cli.app import BatchSizeOpt, DeviceOpt, SelfSimilarityOpt, PrecisionOpt, QuietOpt, SeriesModeOpt, SeriesOpt, SeriesStepsOpt, ThreadsOpt, VerboseOpt, _guarded, _Log, _message, _planes, _start, app
from c2s_cli.errors import EXIT_PARTIAL, UsageError



@app.command()
@_guarded
def denoise(
    inputs: Annotated[list[str], typer.Argument(help="NIfTI files, DICOM files or folders; @list.txt; - for stdin.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file or series folder (one input), else a folder.")],
    model: Annotated[str, typer.Option(help="Model name or .safetensors path.", envvar="C2S_MODEL")] = "default",
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in image units (default: estimated).")] = None,
    sigma_map: Annotated[Optional[Path], typer.Option("--sigma-map", help="σ per voxel, NIfTI on the input's grid (spatially varying noise, e.g. dwidenoise -noise); 'auto' estimates it from the scan; 'none': one σ per volume from the whole-scan estimate (by default a 4-D series of 8+ volumes gets a map over its volumes, and a 3-D volume whose estimate is in doubt gets a map if its noise varies).")] = None,
    save_sigma_map: Annotated[Optional[Path], typer.Option("--save-sigma-map", help="Write the σ used per voxel as NIfTI (one input).")] = None,
    save_rank_map: Annotated[Optional[Path], typer.Option("--save-rank-map", help="A series in the context mode: write the rank of the local low-rank model behind each volume's prediction from the others, per 8³ block, as 3-D NIfTI (as dwidenoise -rank; one input).")] = None,
    coils: Annotated[Optional[int], typer.Option("--noise-coils", min=1, help="Effective coil count N (1 = Rician).")] = None,
    no_vst: Annotated[bool, typer.Option("--no-vst", help="Skip the Rician variance stabilisation.")] = False,
    strength: Annotated[float, typer.Option(help="Multiplies σ for the network (1 = as estimated).")] = 1.0,
    tta: Annotated[int, typer.Option(help="Average over 1, 2, 4 or 8 in-plane flips/transposes per slice (N× time).")] = 1,
    planes: Annotated[str, typer.Option(help="Denoise along these planes and average: axial (acquisition axis), coronal, sagittal (N× time).")] = "axial",
    self_similarity: SelfSimilarityOpt = True,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchSizeOpt = None,
    threads: ThreadsOpt = None,
    series: SeriesOpt = None,
    slice_axis: Annotated[Optional[int], typer.Option(min=0, max=2, help="Axis to slice along (default: acquisition).")] = None,
    dtype: Annotated[str, typer.Option(help="NIfTI output type: float32 or input.")] = "float32",
    suffix: Annotated[str, typer.Option(help="Suffix of output names in folder mode.")] = "_c2s",
    residual: Annotated[Optional[Path], typer.Option("--residual", help="Also write the residual, input − output, as NIfTI (one input).")] = None,
    noise_map: Annotated[Optional[Path], typer.Option("--noise-map", hidden=True, help="Old name of --residual.")] = None,
    preview: Annotated[Optional[Path], typer.Option(help="Write a before/after/residual PNG (one input).")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="NIfTI mask on the input's grid: voxels outside are returned unchanged.")] = None,
    guide: Annotated[Optional[list[Path]], typer.Option(help="Co-registered other contrast(s) for a multi-contrast model.")] = None,
    adapt: Annotated[int, typer.Option(min=0, help="Fine-tune the model on each input for this many steps first.")] = 0,
    phase: Annotated[Optional[Path], typer.Option(help="Complex data: the phase of the (magnitude) input, NIfTI or DICOM on its grid, in radians or Siemens -4096..4095. Its slowly varying phase is removed and the real part denoised (Gaussian noise, no Rician floor). A complex NIfTI input needs no flag.")] = None,
    imaginary: Annotated[Optional[Path], typer.Option(help="Complex data: the imaginary part of the (real-part) input, on its grid.")] = None,
    complex_out: Annotated[bool, typer.Option("--complex-out", help="Complex data: write the denoised complex image (NIfTI complex64) instead of its magnitude.")] = False,
    series_mode: SeriesModeOpt = "auto",
    series_steps: SeriesStepsOpt = None,
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
    if phase is not None and imaginary is not None:
        raise UsageError("--phase and --imaginary both given: give the phase of a magnitude input or the imaginary "
                         "part of a real input")
    auto_map = sigma_map is not None and str(sigma_map) == "auto"  # a file named auto: ./auto
    no_map = sigma_map is not None and str(sigma_map) == "none"  # one σ per volume, also for 4-D series
    opts = DenoiseOptions(sigma=sigma, sigma_map=None if auto_map or no_map else sigma_map, estimate_sigma_map=auto_map,
                          default_sigma_map=not no_map, save_sigma_map=save_sigma_map, save_rank_map=save_rank_map, coils=coils, vst=False if no_vst else None, strength=strength, tta=tta,
                          planes=_planes(planes), slice_axis=slice_axis, series=series, dtype=dtype, mask=mask,
                          guides=tuple(guide or ()), adapt=adapt, residual=residual, preview=preview, force=force,
                          threads=threads, series_mode=series_mode, series_steps=series_steps, phase=phase,
                          imaginary=imaginary, complex_out=complex_out, self_similarity=self_similarity)
    check_options(opts)  # before any input is read
    items = batch.shard(batch.expand(inputs, series, keep_going=keep_going), num_parts, part_id)
    single = len(items) == 1 and len(inputs) == 1 and inputs[0] != "-" and not inputs[0].startswith("@")
    jobs = batch.plan(items, output, single=single, suffix=suffix)
    from c2s_cli.io.atomic import check_name_length

    for j in jobs:  # before anything else touches the name (a stat of a name over the limit fails)
        check_name_length(j.output, j.output.parent)
    if dry_run:
        for j in jobs:
            typer.echo(json.dumps({"input": str(j.item.path), "series": j.item.series, "output": str(j.output),
                                   "model": model, "device": device, "error": j.item.error}))
        return
    for flag, value in (("--residual", residual), ("--preview", preview), ("--mask", mask), ("--guide", guide),
                        ("--sigma-map", opts.sigma_map), ("--save-sigma-map", save_sigma_map), ("--save-rank-map", save_rank_map), ("--phase", phase),
                        ("--imaginary", imaginary)):
        if value and len(jobs) != 1:
            raise UsageError(f"{flag} needs exactly one input")
    everything = batch.input_paths(items)
    if not single:
        batch.check_plan(jobs, force=force, skip_existing=skip_existing)
    rep = batch.Report(report, everything, [*(j.output for j in jobs), residual, preview, save_sigma_map, save_rank_map])
    if not single:
        output.mkdir(parents=True, exist_ok=True)
    from c2s_cli.api import Denoiser

    den = Denoiser(model, device, batch_size=batch_size, threads=threads, precision=precision)
    log.info(f"c2s {__version__}: model {den.name} (sha256 {den.sha256[:12]}…), device {den.device}, {len(jobs)} input(s)")
    from c2s_cli import runner

    run_jobs = [runner.Job(j.item.path, j.output, dataclasses.replace(opts, series=j.item.series), error=j.item.error)
                for j in jobs]
    view = _JobView(log, adapt, den.name, as_json)
    try:
        records = runner.run(den, run_jobs, inputs=everything, keep_going=keep_going, skip_existing=skip_existing,
                             report=rep, on_start=view.start, on_record=view.record,
                             on_progress=view.progress, on_warning=lambda job, w: log.warn(f"{job.input}: {w}"),
                             message=_message)
    finally:
        view.stop()
        rep.close()
    failures = [f"{r.job.input}: {r.error}" for r in records if r.status == "failed"]
    if failures:
        log.warn(f"{len(failures)} of {len(jobs)} input(s) failed:\n  " + "\n  ".join(failures))
        raise typer.Exit(EXIT_PARTIAL)


class _JobView:
    """What a person sees of each job: a progress bar on a terminal, progress lines in a log otherwise, and the
    σ, timing, skip and failure lines."""

    def __init__(self, log: _Log, adapt: int, model: str, as_json: bool) -> None:
        self.log, self.adapt, self.model, self.as_json = log, adapt, model, as_json
        self.prog: Any = None
        self.task: Any = None
        self.tick: Any = None

    def start(self, job: Any) -> None:
        self.stop()
        self.prog = self.log.progress()
        self.prog.start()
        self.task = self.prog.add_task(job.input.name, total=None, status="")
        self.tick = self.log.ticker(str(job.input))
        if self.adapt:
            self.log.info(f"{job.input}: adapting {self.model} for {self.adapt} steps")

    def progress(self, job: Any, stage: str, done: int, total: int) -> None:
        if self.prog is not None:
            self.prog.update(self.task, description=f"{stage} {job.input.name}", completed=done, total=total)
        if self.tick is not None:
            self.tick(stage, done, total)

    def stop(self) -> None:
        if self.prog is not None:
            self.prog.stop()
            self.prog = None

    def record(self, rec: Any) -> None:
        self.stop()
        p = rec.job.input
        if rec.status == "skipped":
            self.log.info(f"{p}: skipped, {rec.job.output} exists")
        elif rec.status == "failed":
            self.log.warn(rec.error)
        else:
            first = rec.result["noise"][0]
            self.log.info(f"{p}: σ = {first['sigma']:.4g}, from {first['method']}")
            self.log.info(f"{p} → {rec.job.output} ({rec.result['seconds']['total']:.1f} s)")
        if self.as_json:
            typer.echo(json.dumps(rec.to_dict(), default=str))
