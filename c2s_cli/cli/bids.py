"""``c2s bids BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS-Apps entry point (library: :mod:`c2s_cli.bids`)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from c2s_cli.cli.app import BatchSizeOpt, DeviceOpt, SelfSimilarityOpt, PrecisionOpt, QuietOpt, SeriesModeOpt, SeriesStepsOpt, ThreadsOpt, VerboseOpt, _guarded, _planes, _start, app
from c2s_cli.errors import EXIT_PARTIAL, UsageError


@app.command()
@_guarded
def bids(
    bids_dir: Annotated[Path, typer.Argument(help="The raw BIDS dataset (read only).")],
    output_dir: Annotated[Path, typer.Argument(help="The derivatives folder, e.g. BIDS_DIR/derivatives/c2s.")],
    level: Annotated[str, typer.Argument(help="participant (denoise) or group (summary and HTML report).")],
    participant_label: Annotated[Optional[list[str]], typer.Option("--participant-label", help="Subjects to process (with or without sub-).")] = None,
    session_label: Annotated[Optional[list[str]], typer.Option("--session-label", help="Sessions to process.")] = None,
    datatype: Annotated[Optional[list[str]], typer.Option("--datatype", help="Datatype folders (anat, dwi, func, …).")] = None,
    suffix: Annotated[Optional[list[str]], typer.Option("--suffix", help="Suffixes (default: T1w T2w PDw FLAIR T2starw dwi).")] = None,
    bids_filter_file: Annotated[Optional[Path], typer.Option("--bids-filter-file", help="JSON of entities to select, as fMRIPrep takes it.")] = None,
    desc: Annotated[str, typer.Option(help="The desc- label of the outputs.")] = "c2s",
    model: Annotated[str, typer.Option(help="Model name or .safetensors path.", envvar="C2S_MODEL")] = "default",
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in image units (default: estimated).")] = None,
    planes: Annotated[str, typer.Option(help="axial,coronal,sagittal: view aggregation.")] = "axial",
    tta: Annotated[int, typer.Option(help="1, 2, 4 or 8 in-plane flips per slice.")] = 1,
    self_similarity: SelfSimilarityOpt = True,
    series_mode: SeriesModeOpt = "auto",
    series_steps: SeriesStepsOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "auto",
    batch_size: BatchSizeOpt = None,
    save_residual: Annotated[bool, typer.Option("--save-residual", help="Also write input − output (desc-<desc>residual).")] = False,
    save_sigma_map: Annotated[bool, typer.Option("--save-sigma-map", help="Also write the σ used per voxel (desc-<desc>sigma).")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Resume: skip outputs that exist.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace outputs c2s wrote before.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Denoise a BIDS dataset into a BIDS derivatives dataset (participant), or summarise one (group)."""
    from c2s_cli import bids as lib

    log = _start(quiet, verbose)
    if level not in ("participant", "group"):
        raise UsageError(f"level must be participant or group, got {level!r}")
    if level == "group":
        summary = lib.run_group(output_dir, on_warning=log.warn)
        log.info(f"{summary['files']} file(s): {summary['ok']} ok, {summary['failed']} failed; "
                 f"{output_dir / 'c2s_report.html'}")
        if summary["failed"]:
            raise typer.Exit(EXIT_PARTIAL)
        return
    from c2s_cli.api import Denoiser, check_options
    from c2s_cli.config import DenoiseOptions

    opts = DenoiseOptions(sigma=sigma, planes=_planes(planes), tta=tta, force=force, threads=threads,
                          series_mode=series_mode, series_steps=series_steps, self_similarity=self_similarity)
    check_options(opts)
    lib.check_dataset(bids_dir)
    lib.check_output_dir(bids_dir, output_dir)
    files = lib.find_inputs(bids_dir, participants=participant_label or (), sessions=session_label or (),
                            datatypes=datatype or (), suffixes=suffix or lib.DEFAULT_SUFFIXES,
                            filters=lib.load_filter(bids_filter_file))
    if not files:
        raise UsageError(f"{bids_dir}: no image matches the selection (participants {participant_label or 'all'}, "
                         f"suffixes {suffix or list(lib.DEFAULT_SUFFIXES)})")
    den = Denoiser(model, device, batch_size=batch_size, threads=threads, precision=precision)
    log.info(f"c2s bids: {len(files)} file(s), model {den.name} (sha256 {den.sha256[:12]}…)")
    run = lib.run_participant(den, bids_dir, output_dir, files, opts, desc=desc, skip_existing=skip_existing,
                              on_file=lambda bf, r: log.info(f"{r['input']}: {r['status']}"
                                                             + (f" ({r['error']})" if r.get("error") else "")),
                              on_warning=log.warn, residual=save_residual, sigma_map=save_sigma_map,
                              command=shlex.join(["c2s", *sys.argv[1:]]))
    log.debug(json.dumps(run.records, default=str))
    if run.failed:
        log.warn(f"{run.failed} of {len(run.records)} file(s) failed (see {output_dir / 'logs'})")
        raise typer.Exit(EXIT_PARTIAL)
