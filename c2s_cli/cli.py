"""The ``c2s`` command line: ``denoise``, ``train`` and ``info``. The only module that knows Typer and rich.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 some inputs of a batch failed, 4 input rejected,
130 interrupted. Logs and progress go to stderr; ``--json`` data goes to stdout.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
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
            sys.stderr.write(f"c2s: error: {exc}\n")
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


# ------------------------------------------------------------------------------------------------------ inputs


def _read_list(spec: str) -> list[str]:
    if spec == "-":
        return [line.strip() for line in sys.stdin if line.strip()]
    if spec.startswith("@"):
        f = Path(spec[1:])
        if not f.is_file():
            raise InputError(f"{spec}: list file not found")
        return [line.strip() for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [spec]


def _expand(specs: list[str], series: str | None) -> list[tuple[Path, str | None]]:
    """Inputs as (path, series) items: NIfTI files, DICOM files/folders; a folder of NIfTI files gives each file.

    A folder holding several DICOM series gives one item per series unless ``series`` picks one.
    """
    from c2s_cli.io import is_nifti, looks_like_dicom
    from c2s_cli.io.dicom import list_series

    items: list[tuple[Path, str | None]] = []
    paths = sorted({Path(p) for s in specs for p in _read_list(s)}, key=lambda p: str(p))
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            niftis = sorted(f for f in p.rglob("*") if f.is_file() and is_nifti(f))
            if niftis:
                items += [(f, None) for f in niftis]
                continue
            if series is not None:
                items.append((p, series))
                continue
            infos, _ = list_series(p)
            if not infos:
                raise InputError(f"{p}: no NIfTI file or DICOM image series found")
            items += [(p, None)] if len(infos) == 1 else [(p, i.uid) for i in infos]
        elif is_nifti(p) or looks_like_dicom(p):
            items.append((p, series))
        else:
            raise InputError(f"{p}: unknown format (expected .nii, .nii.gz, a DICOM file or a DICOM folder)")
    return items


def _out_name(path: Path, series_label: str | None, suffix: str, dicom_out: bool) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    if series_label:
        name = f"{name}_s{series_label}"
    return f"{name}{suffix}" if dicom_out else f"{name}{suffix}.nii.gz"


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
    if models:
        _info_models(as_json)
        return
    if path is None:
        raise UsageError("give a PATH (or --models)")
    if path.suffix == ".safetensors":
        out = _info_model(path)
    else:
        out = _info_scan(path, series, noise, coils)
    if as_json:
        typer.echo(json.dumps(out, default=str))
    else:
        _print_table(out)


def _info_model(path: Path) -> dict[str, Any]:
    from c2s_cli.checkpoint import check_meta, read_header, sha256

    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    meta, tensors = read_header(path)
    cfg = check_meta(path, meta)
    params = 0
    for t in tensors.values():
        n = 1
        for s in t["shape"]:
            n *= int(s)
        params += n
    training = json.loads(meta.get("training", "{}"))
    return {
        "kind": "model",
        "path": str(path),
        "sha256": sha256(path),
        "format_version": meta.get("format_version"),
        "c2s_version": meta.get("c2s_version"),
        "parameters": params,
        "config": cfg.to_dict(),
        "guides": list(cfg.model.guide_names) if cfg.model.guides else [],
        "training": training,
    }


def _info_models(as_json: bool) -> None:
    from c2s_cli.checkpoint import list_models, read_header, sha256

    rows = []
    for name, path, expected in list_models():
        meta, _ = read_header(path)
        actual = sha256(path)
        training = json.loads(meta.get("training", "{}"))
        rows.append(
            {
                "name": name,
                "path": str(path),
                "sha256": actual,
                "verified": expected == actual if expected else None,
                "trained_on": training.get("description", training.get("sources", "")),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        ok = {True: "verified", False: "SHA-256 MISMATCH", None: "unregistered"}[r["verified"]]
        typer.echo(f"{r['name']:<12} {r['sha256'][:16]}…  {ok:<16} {r['path']}")
        if r["trained_on"]:
            typer.echo(f"{'':<12} trained on: {r['trained_on']}")


def _info_scan(path: Path, series: str | None, noise: bool, coils: int) -> dict[str, Any]:
    import numpy as np

    from c2s_cli.io import looks_like_dicom, read_volume
    from c2s_cli.io.dicom import list_series

    out: dict[str, Any] = {}
    if path.is_dir() or (path.exists() and looks_like_dicom(path) and not path.name.lower().endswith((".nii", ".nii.gz"))):
        infos, warnings = list_series(path)
        out["series"] = [
            {"uid": i.uid, "number": i.number, "description": i.description, "modality": i.modality, "images": i.count}
            for i in infos
        ]
        if len(infos) > 1 and series is None:
            out.update({"kind": "dicom-folder", "path": str(path), "warnings": warnings})
            return out
    vol, warnings = read_volume(path, series=series)
    data = vol.data
    out.update(
        {
            "kind": vol.kind,
            "path": str(path),
            "shape": list(data.shape),
            "spacing": [round(s, 4) for s in vol.spacing],
            "orientation": vol.orientation,
            "slice_axis": vol.slice_axis,
            "dtype": vol.meta.get("dtype"),
            "range": [float(np.min(data)), float(np.max(data))],
            "affine": np.round(vol.affine, 4).tolist(),
        }
    )
    out.update({k: v for k, v in vol.meta.items() if k not in ("dtype",)})
    if noise:
        from c2s_cli.noise.estimate import estimate_noise

        first = data if data.ndim == 3 else data[..., 0]
        try:
            est = estimate_noise(first, coils=coils, slice_axis=vol.slice_axis)
            out["noise"] = est.to_dict()
        except ValueError as exc:
            out["noise"] = {"sigma": None, "method": None, "warnings": [str(exc)]}
    out["warnings"] = warnings
    return out


def _print_table(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for k, v in d.items():
        if k in ("affine", "config") or v in (None, "", [], {}):
            continue
        if k == "noise" and isinstance(v, dict):
            s = v.get("sigma")
            line = f"σ = {s:.4g} ({v.get('method')})" if s else "unavailable"
            if v.get("ratio"):
                line += f", σ_object/σ_background = {v['ratio']:.2f}"
            table.add_row("noise", line)
            for w in v.get("warnings", []):
                table.add_row("", f"⚠ {w}")
            continue
        if k == "series" and isinstance(v, list):
            for i, s in enumerate(v):
                table.add_row("series" if i == 0 else "", f"#{s['number']} {s['description']!r} {s['modality']} ×{s['images']}  {s['uid']}")
            continue
        table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    Console(no_color="NO_COLOR" in os.environ).print(table)


# ------------------------------------------------------------------------------------------------------ denoise


def _shard(items: list[Any], num_parts: int | None, part_id: int | None) -> list[Any]:
    env_n, env_k = os.environ.get("SLURM_ARRAY_TASK_COUNT"), os.environ.get("SLURM_ARRAY_TASK_ID")
    n = num_parts if num_parts is not None else (int(env_n) if env_n else 1)
    k = part_id if part_id is not None else (int(env_k) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0")) if env_k else 0)
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"--part-id {k} must be in [0, --num-parts {n})")
    return items[k::n]


@app.command()
@_guarded
def denoise(
    inputs: Annotated[list[str], typer.Argument(help="NIfTI files, DICOM files or folders; @list.txt; - for stdin.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file or series folder (one input), else a folder.")],
    model: Annotated[str, typer.Option(help="Model name or .safetensors path.", envvar="C2S_MODEL")] = "default",
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in image units (default: estimated).")] = None,
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
    noise_map: Annotated[Optional[Path], typer.Option(help="Also write input − output as NIfTI (one input).")] = None,
    preview: Annotated[Optional[Path], typer.Option(help="Write a before/after/residual PNG (one input).")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="NIfTI mask on the input's grid: voxels outside are returned unchanged.")] = None,
    guide: Annotated[Optional[list[Path]], typer.Option(help="Co-registered other contrast(s) for a multi-contrast model.")] = None,
    adapt: Annotated[int, typer.Option(min=0, help="Fine-tune the model on each input for this many steps first.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose output exists.")] = False,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Continue after a failed input (exit 3).")] = False,
    num_parts: Annotated[Optional[int], typer.Option(help="Split the inputs into N parts (SLURM_ARRAY_TASK_COUNT).")] = None,
    part_id: Annotated[Optional[int], typer.Option(help="Process part K of N (SLURM_ARRAY_TASK_ID).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Write the JSON objects as JSON Lines to this file.")] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Denoise scans with a pre-trained C2S model: one forward pass per slice, headers and geometry kept."""
    log = _start(quiet, verbose)
    if dtype not in ("float32", "input"):
        raise UsageError(f"--dtype must be float32 or input, got {dtype!r}")
    if force and skip_existing:
        raise UsageError("--force and --skip-existing contradict each other")
    from c2s_cli.api import check_tta

    check_tta(tta)  # before any input is read
    plane_list = _planes(planes)
    items = _shard(_expand(inputs, series), num_parts, part_id)
    single = len(items) == 1 and len(inputs) == 1 and inputs[0] not in ("-",) and not inputs[0].startswith("@")
    from c2s_cli.io import is_nifti
    from c2s_cli.io.atomic import check_output

    plan: list[tuple[Path, str | None, Path]] = []
    if single:
        plan.append((items[0][0], items[0][1], output))
    else:
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output}: with several inputs the output must be a folder")
        labels = _series_labels(items)
        for (p, s), label in zip(items, labels):
            dicom_out = not is_nifti(p)
            plan.append((p, s, output / _out_name(p, label, suffix, dicom_out)))
    if dry_run:
        for p, s, o in plan:
            typer.echo(json.dumps({"input": str(p), "series": s, "output": str(o), "model": model, "device": device}))
        return
    for flag, value in (("--noise-map", noise_map), ("--preview", preview), ("--mask", mask), ("--guide", guide)):
        if value and len(plan) != 1:
            raise UsageError(f"{flag} needs exactly one input")
    if not single:
        output.mkdir(parents=True, exist_ok=True)
    from c2s_cli.api import Denoiser

    den = Denoiser(model, device, batch_size=batch_size, threads=threads)
    log.info(f"c2s {__version__}: model {den.name} (sha256 {den.sha256[:12]}…), device {den.device}, {len(plan)} input(s)")
    report_fh = open(report, "a") if report else None
    failures: list[str] = []
    try:
        for p, s, o in plan:
            if o.exists() and skip_existing:
                log.info(f"{p}: skipped, {o} exists")
                continue
            try:
                check_output(o, [p], force=force)
                rec = _denoise_one(den, p, s, o, log, sigma=sigma, coils=coils, no_vst=no_vst, strength=strength,
                                   slice_axis=slice_axis, dtype=dtype, noise_map=noise_map, force=force,
                                   preview=preview, mask=mask, guides=guide or [], adapt=adapt, threads=threads,
                                   tta=tta, planes=plane_list)
            except C2SError as exc:
                if not keep_going:
                    raise
                failures.append(f"{p}: {exc}")
                log.warn(str(exc))
                rec = {"input": str(p), "output": str(o), "error": str(exc)}
            if as_json:
                typer.echo(json.dumps(rec, default=str))
            if report_fh:
                report_fh.write(json.dumps(rec, default=str) + "\n")
                report_fh.flush()
    finally:
        if report_fh:
            report_fh.close()
    if failures:
        log.warn(f"{len(failures)} of {len(plan)} input(s) failed:\n  " + "\n  ".join(failures))
        raise typer.Exit(EXIT_PARTIAL)


def _same_grid(other: Any, vol: Any, path: Path, flag: str) -> None:
    import numpy as np

    if other.data.shape[:3] != vol.data.shape[:3] or not np.allclose(other.affine, vol.affine, atol=1e-3):
        raise InputError(
            f"{flag} {path}: not on the input's voxel grid (shape {other.data.shape[:3]} vs {vol.data.shape[:3]} or a "
            "different affine); resample it first, e.g. with ANTs antsApplyTransforms or FSL flirt -applyxfm"
        )


def _read_mask(path: Path, vol: Any) -> Any:
    from c2s_cli.io import read_volume

    m, _ = read_volume(path)
    _same_grid(m, vol, path, "--mask")
    keep = m.data[..., 0] > 0 if m.data.ndim == 4 else m.data > 0
    return keep if vol.data.ndim == 3 else keep[..., None]


def _read_guide(path: Path, vol: Any) -> Any:
    from c2s_cli.io import read_volume

    g, _ = read_volume(path)
    _same_grid(g, vol, path, "--guide")
    if g.data.ndim != vol.data.ndim:
        raise InputError(f"--guide {path}: {g.data.ndim}D, the input is {vol.data.ndim}D")
    return g.data


def _series_labels(items: list[tuple[Path, str | None]]) -> list[str | None]:
    """Distinguish several series of one folder in output names by their SeriesNumber (or a UID tail)."""
    from c2s_cli.io.dicom import list_series

    labels: list[str | None] = []
    cache: dict[Path, Any] = {}
    for p, s in items:
        if s is None:
            labels.append(None)
            continue
        if p not in cache:
            cache[p] = list_series(p)[0] if p.is_dir() else []
        match = [i for i in cache[p] if i.uid == s or str(i.number) == s]
        labels.append(str(match[0].number) if match and match[0].number is not None else s.split(".")[-1])
    return labels


def _planes(text: str) -> tuple[str, ...]:
    """``--planes`` as a tuple, refused (exit 2) when empty, repeated or unknown."""
    from c2s_cli.api import check_planes

    plane_list = tuple(p.strip() for p in text.split(",") if p.strip())
    check_planes(plane_list)
    return plane_list


def _denoise_one(
    den: Any, path: Path, series: str | None, out: Path, log: _Log, *, sigma: float | None, coils: int | None,
    no_vst: bool, strength: float, slice_axis: int | None, dtype: str, noise_map: Path | None, force: bool,
    preview: Path | None = None, mask: Path | None = None, guides: list[Path] | None = None, adapt: int = 0,
    threads: int | None = None, tta: int = 1, planes: tuple[str, ...] = ("axial",),
) -> dict[str, Any]:
    import numpy as np

    from c2s_cli.api import DenoiseReport
    from c2s_cli.io import is_nifti, read_volume
    from c2s_cli.io.atomic import atomic_path, check_output

    t_start = time.perf_counter()
    t0 = time.perf_counter()
    vol, warnings = read_volume(path, series=series)
    t_read = time.perf_counter() - t0
    for w in warnings:
        log.warn(f"{path}: {w}")
    for extra in [p for p in (noise_map, preview) if p is not None]:
        check_output(extra, [path], force=force)
    keep = _read_mask(mask, vol) if mask is not None else None
    guide_data = [_read_guide(g, vol) for g in guides or []]
    rep = DenoiseReport()
    axis = slice_axis if slice_axis is not None else vol.slice_axis
    if len(planes) > 1:
        through, pixel = vol.spacing[axis], min(s for i, s in enumerate(vol.spacing) if i != axis)
        if through > 1.5 * pixel:
            log.warn(f"{path}: --planes {','.join(planes)} on {through:.3g} mm slices of {pixel:.3g} mm pixels: view "
                     "aggregation measured no gain at 2× and a loss at 3–5× this anisotropy (benchmarks/README.md); "
                     "--planes axial is safer here")
    if adapt:
        if vol.data.ndim != 3:
            raise UsageError("--adapt supports 3D inputs only")
        log.info(f"{path}: adapting {den.name} for {adapt} steps")
        with log.progress() as prog:
            task = prog.add_task("adapt", total=adapt, status="")
            den = den.adapted(vol.data, adapt, sigma=sigma, slice_axis=axis, guides=guide_data or None,
                              on_log=lambda r: prog.update(task, completed=r["step"], status=f"loss {r['loss']:.4f}"))
    with log.progress() as prog:
        task = prog.add_task(f"{path.name}", total=None, status="")

        def on_progress(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        result = den.denoise(vol, sigma, strength=strength, use_vst=False if no_vst else None, coils=coils,
                             slice_axis=slice_axis, guides=guide_data or None, report=rep, on_progress=on_progress,
                             tta=tta, planes=planes)
    if keep is not None:
        result = np.where(keep, result, vol.data).astype(np.float32)
    for est in rep.noise[:1]:
        log.info(f"{path}: σ = {est.sigma:.4g} ({est.method})")
        for w in est.warnings:
            log.warn(f"{path}: {w}")
    t0 = time.perf_counter()
    params = f"model={den.name} sha256={den.sha256[:16]} strength={strength} vst={not no_vst} tta={tta} planes={'+'.join(planes)}"
    derivation = f"Self-supervised denoising (Corruption2Self), c2s {__version__}, {params}, sigma={rep.noise[0].sigma:.5g}"
    out_is_nifti = is_nifti(out)
    if vol.kind == "dicom" and not out_is_nifti:
        from c2s_cli.io.dicom import write_dicom_series

        with atomic_path(out, is_dir=True) as tmp:
            clipped = write_dicom_series(vol, result, tmp, derivation=derivation, software_version=f"c2s {__version__}")
    elif out_is_nifti:
        from c2s_cli.io.nifti import write_nifti, write_nifti_from

        with atomic_path(out) as tmp:
            if vol.kind == "nifti":
                clipped = write_nifti(vol, result, tmp, dtype=dtype, note=f"c2s {__version__} denoised", threads=threads)
            else:
                clipped = write_nifti_from(vol, result, tmp, threads=threads)
    else:
        raise UsageError(f"-o {out}: a NIfTI input needs a .nii or .nii.gz output")
    if preview is not None:
        from c2s_cli.io.preview import write_preview

        with atomic_path(preview) as tmp:
            first = (vol.data, result) if vol.data.ndim == 3 else (vol.data[..., 0], result[..., 0])
            write_preview(*first, tmp, sigma=rep.noise[0].sigma, slice_axis=axis, title=path.name)
    if noise_map is not None:
        from c2s_cli.io.nifti import write_nifti, write_nifti_from

        with atomic_path(noise_map) as tmp:
            resid = (vol.data - result).astype(np.float32)
            if vol.kind == "nifti":
                write_nifti(vol, resid, tmp, note=f"c2s {__version__} residual", threads=threads)
            else:
                write_nifti_from(vol, resid, tmp, threads=threads)
    t_write = time.perf_counter() - t0
    if clipped:
        log.warn(f"{out}: {clipped} voxel(s) clipped to the output's stored range")
    log.info(f"{path} → {out} ({time.perf_counter() - t_start:.1f} s)")
    return {
        "input": str(path),
        "series": series,
        "output": str(out),
        **den.describe(),
        "noise": [e.to_dict() for e in rep.noise],
        "clipped_voxels": clipped,
        "adapt_steps": adapt,
        "tta": tta,
        "planes": list(planes),
        "seconds": {"model_load": round(den.load_seconds, 3), "read": round(t_read, 3), **{k: round(v, 3) for k, v in rep.seconds.items()},
                    "write": round(t_write, 3), "total": round(time.perf_counter() - t_start, 3)},
    }


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
    import dataclasses

    from c2s_cli.config import GDSMConfig, ModelConfig, NoiseConfig, RunConfig, TrainConfig

    log = _start(quiet, verbose)
    if output.suffix != ".safetensors":
        raise UsageError(f"-o {output}: the model file must end in .safetensors")
    plane_list = _planes(planes)
    rd = resume or run_dir or output.with_suffix(".run")
    if resume is not None:
        if not (resume / "config.json").is_file():
            raise UsageError(f"--resume {resume}: no config.json in that folder")
        cfg = RunConfig.from_dict(json.loads((resume / "config.json").read_text()))
        if steps is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    else:
        m, g, t = ModelConfig(), GDSMConfig(), TrainConfig()
        if init is not None:
            from c2s_cli.checkpoint import check_meta, read_header, resolve_model

            ipath, _ = resolve_model(init)
            icfg = check_meta(ipath, read_header(ipath)[0])
            m, g = icfg.model, icfg.gdsm
        n_targets = len(_expand(inputs, series))
        n_guides = len(guide or [])
        if n_guides % max(n_targets, 1):
            raise UsageError(f"--guide given {n_guides} times for {n_targets} input(s): give K guides per input")
        k = n_guides // max(n_targets, 1)
        names = tuple(x.strip() for x in guide_names.split(",")) if guide_names else tuple(f"guide{i + 1}" for i in range(k))
        if len(names) != k:
            raise UsageError(f"--guide-names lists {len(names)} names for {k} guide contrast(s)")
        if init is None:
            m = dataclasses.replace(m, guides=k, guide_names=names)
        elif m.guides != k:
            raise UsageError(f"--init model takes {m.guides} guide contrast(s), {k} given")
        m = dataclasses.replace(
            m,
            **({"context": context} if context is not None else {}),
            **({"channels": tuple(int(c) for c in channels.split(","))} if channels else {}),
        )
        g = dataclasses.replace(
            g,
            **{k: v for k, v in {"tau_max": tau_max, "alpha": alpha, "target_fraction": target_fraction}.items() if v is not None},
        )
        t = dataclasses.replace(
            t,
            seed=seed,
            planes=plane_list,
            add_noise=_parse_range(add_noise, "--add-noise"),
            noisy_copies=noisy_copies,
            guide_dropout=guide_dropout,
            invert=invert,
            bf16=bf16,
            **{k: v for k, v in {"steps": steps, "batch_size": batch_size, "patch_size": patch_size, "lr": lr,
                                 "val_fraction": val_fraction}.items() if v is not None},
        )
        cfg = RunConfig(model=m, gdsm=g, noise=NoiseConfig(vst=not no_vst, coils=coils, sigma=sigma), train=t)
    items = _expand(inputs, series)
    if cfg.train.invert > 0 and not cfg.noise.vst:
        log.warn(f"--invert {cfg.train.invert} with --no-vst: the inversion is exact only for the VST domain's "
                 "symmetric noise; magnitude (Rician) noise is not symmetric")
    if dry_run:
        typer.echo(json.dumps({"inputs": [str(p) for p, _ in items], "run_dir": str(rd), "output": str(output),
                               "config": cfg.to_dict()}, indent=2))
        return
    from c2s_cli.io.atomic import check_output

    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 checks, logs and writes
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and resume is not None:
        raise UsageError("--resume is not supported under torchrun yet; resume on a single process")
    if rank != 0:
        quiet = True
        log = _Log(quiet=True)
    else:
        check_output(output, [p for p, _ in items], force=force)
    if resume is None and rank == 0:
        if rd.exists() and any(rd.iterdir()) and not force:
            raise UsageError(f"run folder {rd} exists; pass --resume {rd} to continue or --force to start over")
        rd.mkdir(parents=True, exist_ok=True)
    import torch

    from c2s_cli.infer import pick_device

    if threads:
        torch.set_num_threads(threads)
    try:
        dev = pick_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    volumes, summary = _load_training(items, cfg, log, guide or [])
    if epochs is not None and resume is None:
        n_slices = sum(v.planes[0].shape[0] for v in volumes)
        per_epoch = max(1, n_slices // cfg.train.batch_size)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=max(1, int(epochs * per_epoch))))
    summary["description"] = description
    init_model = None
    if init is not None:
        from c2s_cli.checkpoint import load_model, resolve_model, sha256

        ipath, expected = resolve_model(init)
        init_model = load_model(ipath, expected_sha256=expected)[0]  # a shipped model is checked against its registry
        summary["init"] = {"model": init, "sha256": expected or sha256(ipath)}  # provenance of a fine-tuned model
    from c2s_cli.train import train as run_training

    log.info(f"training on {len(volumes)} volume(s), {cfg.train.steps} steps, device {dev}, run folder {rd}")
    with log.progress() as prog:
        task = prog.add_task("train", total=cfg.train.steps, status="")

        def on_log(rec: dict[str, Any]) -> None:
            val = f" val {rec['val_loss']:.4f}" if rec.get("val_loss") is not None else ""
            val += f" PSNR {rec['psnr']:.2f} dB" if rec.get("psnr") is not None else ""
            status = f"loss {rec['loss']:.4f}{val} {rec['step'] / max(rec['seconds'], 1e-9):.2f} steps/s"
            prog.update(task, completed=rec["step"], status=status)
            if not prog.console.is_terminal and not quiet:
                log.info(f"step {rec['step']}/{cfg.train.steps} {status}")

        from c2s_cli.io.atomic import atomic_path

        if rank != 0:
            res = run_training(cfg, volumes, None, None, data_summary=summary, init=init_model, resume=False,
                               device=str(dev))
            return
        evaluate = _reference_eval(items[0], reference, cfg, log) if reference is not None else None
        with atomic_path(output) as tmp:
            res = run_training(cfg, volumes, tmp, rd, data_summary=summary, init=init_model, resume=resume is not None,
                               device=str(dev), on_log=on_log, evaluate=evaluate,
                               extra_meta={"git_commit": _git_commit()} if _git_commit() else None)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = f", {world} ranks with identical weights" if world > 1 else ""
    log.info(f"wrote {output} ({res.steps} steps, {res.seconds:.0f} s, final loss {res.loss:.4f}{ranks})")


def _git_commit() -> str | None:
    """The commit of a c2s checkout this runs from, if any (recorded in trained models)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def _reference_eval(item: tuple[Path, str | None], reference: Path, cfg: Any, log: _Log) -> Callable[[Any], float]:
    """PSNR (dB, data range = the reference's 99.5th percentile, inside reference > 0) of the first input denoised
    by the current EMA weights, on up to 8 central slices."""
    import numpy as np

    from c2s_cli.infer import denoise_array
    from c2s_cli.io import read_volume
    from c2s_cli.noise.estimate import estimate_noise

    vol, _ = read_volume(item[0], series=item[1])
    ref, _ = read_volume(reference)
    _same_grid(ref, vol, reference, "--reference")
    ax = vol.slice_axis
    n = vol.data.shape[ax]
    sel = np.arange(max(0, n // 2 - 4), min(n, n // 2 + 4))
    noisy = np.take(vol.data, sel, axis=ax)
    clean = np.take(ref.data, sel, axis=ax)
    sigma = cfg.noise.sigma or estimate_noise(vol.data, coils=cfg.noise.coils, slice_axis=ax).sigma
    peak = float(np.percentile(clean[clean > 0], 99.5))
    mask = clean > 0

    def evaluate(model: Any) -> float:
        out = denoise_array(model, noisy, sigma, use_vst=cfg.noise.vst, coils=cfg.noise.coils, slice_axis=ax)
        return float(10 * np.log10(peak**2 / np.mean((out[mask] - clean[mask]) ** 2)))

    log.info(f"reference {reference}: PSNR of the noisy input {10 * np.log10(peak**2 / np.mean((noisy[mask] - clean[mask]) ** 2)):.2f} dB")
    return evaluate


def _load_training(
    items: list[tuple[Path, str | None]], cfg: Any, log: _Log, guides: list[Path]
) -> tuple[list[Any], dict[str, Any]]:
    import numpy as np

    from c2s_cli.data import Normalizer, make_train_volume
    from c2s_cli.io import read_volume
    from c2s_cli.noise.estimate import estimate_noise

    rng = np.random.default_rng(cfg.train.seed)
    volumes, records = [], []
    k = cfg.model.guides
    if len(guides) != k * len(items):
        raise UsageError(f"the model takes {k} guide contrast(s) per input: give {k * len(items)} --guide, got {len(guides)}")
    for i, (p, s) in enumerate(items):
        vol, warnings = read_volume(p, series=s)
        for w in warnings:
            log.warn(f"{p}: {w}")
        gvols = [_read_guide(g, vol) for g in guides[i * k : (i + 1) * k]]
        frames = [vol.data] if vol.data.ndim == 3 else [vol.data[..., t] for t in range(vol.data.shape[3])]
        for t, data in enumerate(frames):
            copies: list[tuple[Any, float | None]] = [(data, None)]
            if cfg.train.add_noise is not None:
                lo, hi = cfg.train.add_noise
                ref = float(np.percentile(data[data > 0], 99.5)) if np.any(data > 0) else 1.0
                copies = []
                for _ in range(cfg.train.noisy_copies):
                    frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                    sd = frac * ref
                    noisy = np.sqrt((data + sd * rng.standard_normal(data.shape)) ** 2 + (sd * rng.standard_normal(data.shape)) ** 2)
                    copies.append((noisy.astype(np.float32), frac))
            for data_c, frac in copies:
                if cfg.noise.sigma is not None:
                    sigma, method = cfg.noise.sigma, "user"
                else:
                    try:
                        est = estimate_noise(data_c, coils=cfg.noise.coils, slice_axis=vol.slice_axis)
                    except ValueError as exc:
                        raise InputError(f"{p}: cannot estimate the noise ({exc}); pass --sigma") from None
                    sigma, method = est.sigma, est.method
                norm = Normalizer.fit(data_c, sigma, use_vst=cfg.noise.vst, coils=cfg.noise.coils)
                gn = []
                for g in gvols:
                    gt = g if g.ndim == 3 else g[..., t]
                    gs = estimate_noise(gt, slice_axis=vol.slice_axis).sigma
                    gn.append(Normalizer.fit(gt, gs, use_vst=cfg.noise.vst).forward(gt))
                volumes.append(make_train_volume(data_c, norm, slice_axis=vol.slice_axis, planes=cfg.train.planes,
                                                 name=f"{p.name}[{t}]", guides=gn))
                records.append({"input": p.name, "frame": t, "shape": list(data_c.shape), "sigma": round(sigma, 6),
                                "sigma_method": method, "sigma_d": round(norm.sigma_d, 6), "added_noise": frac,
                                "contrast": vol.meta.get("series_description", "")})
                log.debug(f"{p.name}[{t}]: σ = {sigma:.4g} ({method}), σ_d = {norm.sigma_d:.4f}")
    sig = [r["sigma_d"] for r in records]
    return volumes, {"volumes": len(records), "sigma_d_range": [min(sig), max(sig)], "items": records}


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
