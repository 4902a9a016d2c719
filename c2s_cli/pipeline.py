"""The one per-input pipeline (``Denoiser.denoise_file``): pre-flight checks, read, adapt, denoise, write, record.

Order matters: everything that can fail without the network runs first (options, output types, output safety,
writability, the DICOM dry run, mask and guide grids), then the outputs are locked, then the compute runs, then the
outputs are written atomically. A failing check therefore costs well under a second and leaves nothing behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli import __version__
from c2s_cli.errors import InputError, UsageError
from c2s_cli.io import check_writable, is_nifti, output_kind, read_volume, write_volume
from c2s_cli.io.atomic import OutputLock, atomic_path, check_distinct, check_output
from c2s_cli.volume import Volume

if TYPE_CHECKING:
    from c2s_cli.api import Denoiser
    from c2s_cli.config import DenoiseOptions
    from c2s_cli.noise.estimate import NoiseEstimate


def same_grid(other: Volume, vol: Volume, path: Path, param: str) -> None:
    """Refuse a co-registered input (mask, guide, σ map, reference) that is not on ``vol``'s voxel grid."""
    if other.data.shape[:3] != vol.data.shape[:3] or not np.allclose(other.affine, vol.affine, atol=1e-3):
        raise InputError(
            f"{param} {path}: not on the input's voxel grid (shape {other.data.shape[:3]} vs {vol.data.shape[:3]} or "
            "a different affine); resample it first, e.g. with ANTs antsApplyTransforms or FSL flirt -applyxfm",
            param=param,
        )


def read_mask(path: Path, vol: Volume) -> NDArray[np.bool_]:
    """The mask (> 0) on ``vol``'s grid, broadcastable to ``vol.data``."""
    m, _ = read_volume(path)
    same_grid(m, vol, path, "mask")
    keep = m.data[..., 0] > 0 if m.data.ndim == 4 else m.data > 0
    return keep if vol.data.ndim == 3 else keep[..., None]


def read_guide(path: Path, vol: Volume) -> NDArray[np.float32]:
    """A guide contrast on ``vol``'s grid, with ``vol``'s dimensionality."""
    g, _ = read_volume(path)
    same_grid(g, vol, path, "guides")
    if g.data.ndim != vol.data.ndim:
        raise InputError(f"guides {path}: {g.data.ndim}D, the input is {vol.data.ndim}D", param="guides")
    return g.data


def read_sigma_map(path: Path, vol: Volume) -> NDArray[np.float32]:
    """A σ map (image units) on ``vol``'s grid: 3-D (shared by every frame) or with ``vol``'s frames."""
    m, _ = read_volume(path)
    same_grid(m, vol, path, "sigma_map")
    if m.data.ndim == 4 and (vol.data.ndim != 4 or m.data.shape[3] != vol.data.shape[3]):
        raise InputError(f"sigma_map {path}: {m.data.shape[3]} volumes for an input with "
                         f"{vol.data.shape[3] if vol.data.ndim == 4 else 1}", param="sigma_map")
    good = m.data[np.isfinite(m.data) & (m.data > 0)]
    if good.size == 0:
        raise InputError(f"sigma_map {path}: no positive value", param="sigma_map")
    return m.data


def series_sigma_map(vol: Volume, warn: Callable[[str], None],
                     report: list[dict[str, object]], *, asked: bool = True) -> NDArray[np.float32]:
    """One σ map (X, Y, Z) of a 4-D series by MP-PCA over its volumes, said in plain words (when not ``asked`` for,
    only a varying map is worth a line; the report has it either way); raises
    :class:`~c2s_cli.noise.sigma_map.SigmaMapError` when the series cannot support it."""
    from c2s_cli.noise.sigma_map import describe, estimate_sigma_map_series, plain_words

    est = estimate_sigma_map_series(vol.data)
    if asked or est.varying:
        warn(plain_words(est))
    report.append(describe(est))
    return est.sigma


def estimated_sigma_map(vol: Volume, src: Path, warn: Callable[[str], None],
                        report: list[dict[str, object]]) -> NDArray[np.float32]:
    """The σ map of ``vol`` (:mod:`c2s_cli.noise.sigma_map`): for a 4-D series of at least 8 volumes one map by
    MP-PCA over the volumes (used for every frame), otherwise one map per 3-D frame. Says in plain words whether
    the noise varies, and refuses with one line when the scan cannot support the estimate."""
    from c2s_cli.noise.sigma_map import SigmaMapError, describe, estimate_sigma_map, is_series, plain_words

    def refuse(exc: Exception) -> InputError:
        return InputError(f"sigma_map auto: {src}: the scan cannot support a σ-map estimate ({exc}); give sigma, or a "
                          "sigma_map file (e.g. dwidenoise -noise)", param="sigma_map")

    if is_series(vol.data):
        try:
            return series_sigma_map(vol, warn, report)
        except SigmaMapError as exc:
            raise refuse(exc) from None
    frames = [vol.data] if vol.data.ndim == 3 else [vol.data[..., t] for t in range(vol.data.shape[3])]
    maps = []
    for t, frame in enumerate(frames):
        try:
            est = estimate_sigma_map(frame)
        except SigmaMapError as exc:
            raise refuse(exc) from None
        if t == 0:
            warn(plain_words(est))
        report.append(describe(est))
        maps.append(est.sigma)
    return maps[0] if len(maps) == 1 else np.stack(maps, axis=-1)


def default_map(vol: Volume, o: DenoiseOptions) -> str | None:
    """Which default σ map applies (:class:`~c2s_cli.config.DenoiseOptions` ``default_sigma_map`` on, neither
    ``sigma`` nor a ``sigma_map`` given, not ``sigma_map auto``): "series" for a 4-D series of at least 8 volumes
    (one map over its volumes), "volume" for a 3-D volume (the map settles a whole-scan estimate in doubt), None
    otherwise (a short 4-D series: one σ per volume)."""
    from c2s_cli.noise.sigma_map import is_series

    if not o.default_sigma_map or o.sigma is not None or o.sigma_map is not None or o.estimate_sigma_map:
        return None
    return "series" if is_series(vol.data) else "volume" if vol.data.ndim == 3 else None


def volume_noise(
    den: Denoiser, vol: Volume, axis: int, o: DenoiseOptions, warn: Callable[[str], None],
    report: list[dict[str, object]],
) -> tuple[float | None, NDArray[np.float32] | None, NoiseEstimate | None]:
    """The default noise model of a 3-D volume (:func:`~c2s_cli.noise.sigma_map.choose_noise`): (σ or None, map or
    None, the whole-scan estimate to reuse). A map or an object σ that overrules the whole-scan estimate is said in
    one line; the report records the map's verdict whenever one was estimated."""
    from c2s_cli.noise.estimate import estimate_noise
    from c2s_cli.noise.sigma_map import choose_noise, describe

    _, coils = den.noise_model(o.vst, o.coils)
    try:
        whole = estimate_noise(vol.data, coils=coils, slice_axis=axis)
    except ValueError:
        return None, None, None  # the domain fit raises the one-line error that names sigma
    choice = choose_noise(np.moveaxis(vol.data, axis, 2), whole)
    if choice.estimate is not None:
        report.append({**describe(choice.estimate), "used": choice.uses})
    elif choice.why_not is not None:
        report.append({"varying": None, "used": choice.uses, "says": f"no σ-map estimate: {choice.why_not}"})
    if choice.says:
        warn(choice.says)
    smap = None if choice.sigma_map is None else np.moveaxis(choice.sigma_map, 2, axis)
    return choice.sigma, smap, whole if choice.sigma is None and smap is None else None


def anisotropy_warning(vol: Volume, axis: int, planes: tuple[str, ...]) -> str | None:
    """View aggregation on thick slices measured no gain at 2× and a loss at 3–5× (benchmarks/README.md)."""
    if len(planes) < 2:
        return None
    through, pixel = vol.spacing[axis], min(s for i, s in enumerate(vol.spacing) if i != axis)
    if through > 1.5 * pixel:
        return (f"planes {','.join(planes)} on {through:.3g} mm slices of {pixel:.3g} mm pixels: view aggregation "
                "measured no gain at 2× and a loss at 3–5× this anisotropy (benchmarks/README.md); axial alone is "
                "safer here")
    return None


def pixel_options(den: Denoiser, o: DenoiseOptions) -> dict[str, Any]:
    """The options that change the output's pixels (they and the model's SHA-256 seed the derived UIDs)."""
    return {"sigma": o.sigma, "coils": o.coils, "vst": o.vst, "strength": o.strength, "tta": o.tta,
            "planes": list(o.planes), "slice_axis": o.slice_axis, "adapt": o.adapt, "adapt_lr": o.adapt_lr,
            "mask": bool(o.mask), "guides": len(o.guides), "sigma_map": bool(o.sigma_map), "model_sha256": den.sha256,
            **({"sigma_map_auto": True} if o.estimate_sigma_map else {}),
            **({"default_sigma_map": False} if not o.default_sigma_map else {}),
            **({"precision": "bf16"} if getattr(den, "bf16", False) else {})}


def preflight(
    den: Denoiser, src: Path, dst: Path, o: DenoiseOptions, inputs: Sequence[Path],
) -> tuple[Volume, list[str], NDArray[np.bool_] | None, list[NDArray[np.float32]], NDArray[np.float32] | None, str]:
    """Every check that can fail before the compute; returns the volume, its warnings, the mask, the guides, the σ
    map and the UID seed."""
    from c2s_cli.api import check_options

    check_options(o)
    den.check_guides(len(o.guides))
    outputs = {"output": dst, "residual": o.residual, "preview": o.preview, "save_sigma_map": o.save_sigma_map}
    check_distinct(outputs)
    for name, what in (("residual", "the residual map"), ("save_sigma_map", "the σ map")):
        if outputs[name] is not None and not is_nifti(outputs[name]):  # type: ignore[arg-type]
            raise UsageError(f"{name} {outputs[name]}: {what} is written as NIfTI (.nii or .nii.gz)", param=name)
    if o.preview is not None and o.preview.suffix.lower() != ".png":
        raise UsageError(f"preview {o.preview}: the preview is a PNG (.png)", param="preview")
    every_input = [src, *inputs, *([o.mask] if o.mask else []), *o.guides, *([o.sigma_map] if o.sigma_map else [])]
    for name, p in outputs.items():
        if p is not None:
            check_output(p, every_input, force=o.force, what=name, param=name)
    vol, warnings = read_volume(src, series=o.series)
    output_kind(vol, dst)
    seed = json.dumps(pixel_options(den, o), sort_keys=True)
    check_writable(vol, dst, uid_seed=seed)
    for extra in (o.residual, o.save_sigma_map):
        if extra is not None:
            check_writable(vol, extra)
    if o.adapt and vol.data.ndim != 3:
        raise UsageError(f"adapt: {src} is 4D; adaptation supports 3D inputs only", param="adapt")
    keep = read_mask(o.mask, vol) if o.mask is not None else None
    guides = [read_guide(g, vol) for g in o.guides]
    smap = read_sigma_map(o.sigma_map, vol) if o.sigma_map is not None else None
    axis = o.slice_axis if o.slice_axis is not None else vol.slice_axis
    w = anisotropy_warning(vol, axis, o.planes)
    return vol, warnings + ([w] if w else []), keep, guides, smap, seed


def run_file(
    den: Denoiser,
    src: Path,
    dst: Path,
    o: DenoiseOptions,
    *,
    inputs: Sequence[Path] = (),
    on_progress: Callable[[str, int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """See :meth:`c2s_cli.api.Denoiser.denoise_file`."""
    from c2s_cli.api import DenoiseReport

    t_start = time.perf_counter()
    vol, warnings, keep, guides, smap, seed = preflight(den, src, dst, o, inputs)
    t_read = time.perf_counter() - t_start

    def warn(msg: str) -> None:
        warnings.append(msg)
        if on_warning:
            on_warning(msg)

    for w in list(warnings):
        if on_warning:
            on_warning(w)
    axis = o.slice_axis if o.slice_axis is not None else vol.slice_axis
    seconds: dict[str, float] = {"model_load": den.load_seconds, "read": t_read}
    map_report: list[dict[str, object]] = []
    if o.estimate_sigma_map:
        t0 = time.perf_counter()
        smap = estimated_sigma_map(vol, src, warn, map_report)
        seconds["sigma_map"] = time.perf_counter() - t0
    sigma, whole = o.sigma, None
    kind = default_map(vol, o)
    if kind == "volume":
        t0 = time.perf_counter()
        sigma, smap, whole = volume_noise(den, vol, axis, o, warn, map_report)
        seconds["sigma_map"] = time.perf_counter() - t0
    elif kind == "series":
        t0 = time.perf_counter()
        from c2s_cli.noise.sigma_map import SigmaMapError

        try:
            smap = series_sigma_map(vol, warn, map_report, asked=False)
        except SigmaMapError as exc:  # not asked for: the scalar path, said in one line
            warn(f"no σ map over the volumes ({exc}); one σ per volume")
        seconds["sigma_map"] = time.perf_counter() - t0
    # where σ came from when c2s chose it from a map estimate (the domain only knows "a map" or "a σ was given")
    source = ("map (estimated)" if smap is not None and o.sigma_map is None else
              "object (σ-map blocks)" if sigma is not None and o.sigma is None else None)
    with ExitStack() as locks:
        for p in (dst, o.residual, o.preview, o.save_sigma_map):
            if p is not None:
                locks.enter_context(OutputLock(p))
        worker = den
        if o.adapt:
            t0 = time.perf_counter()
            cb = (lambda r: on_progress("adapt", r["step"], o.adapt)) if on_progress else None
            worker = den.adapted(vol.data, o.adapt, sigma=sigma, use_vst=o.vst, coils=o.coils, slice_axis=axis,
                                 guides=guides or None, lr=o.adapt_lr, on_log=cb, sigma_map=smap)
            seconds["adapt"] = time.perf_counter() - t0
        rep = DenoiseReport()
        result = worker.denoise(
            vol, sigma, strength=o.strength, use_vst=o.vst, coils=o.coils, slice_axis=axis, guides=guides or None,
            report=rep, tta=o.tta, planes=o.planes, sigma_map=smap, estimate=whole,
            on_progress=(lambda d, n: on_progress("denoise", d, n)) if on_progress else None,
        )
        seconds.update(rep.seconds)
        if keep is not None:
            result = np.where(keep, result, vol.data).astype(np.float32)
        for w in rep.domains[0].estimate.warnings if rep.domains[0].estimate else ():
            warn(w)
        t0 = time.perf_counter()
        vst_on, _ = den.noise_model(o.vst, o.coils)
        params = (f"model={den.name} sha256={den.sha256[:16]} strength={o.strength} vst={vst_on} tta={o.tta} "
                  f"planes={'+'.join(o.planes)}")
        derivation = (f"Self-supervised denoising (Corruption2Self), c2s {__version__}, {params}, "
                      f"sigma={rep.domains[0].sigma:.5g}")
        clipped = write_volume(vol, result, dst, dtype=o.dtype, note=f"c2s {__version__} denoised",
                               derivation=derivation, software_version=f"c2s {__version__}", uid_seed=seed,
                               threads=o.threads)
        if o.preview is not None:
            from c2s_cli.io.preview import write_preview

            with atomic_path(o.preview) as tmp:
                first = (vol.data, result) if vol.data.ndim == 3 else (vol.data[..., 0], result[..., 0])
                write_preview(*first, tmp, sigma=rep.domains[0].sigma, slice_axis=axis, title=src.name)
        if o.residual is not None:
            resid = (vol.data - result).astype(np.float32)
            write_volume(vol, resid, o.residual, note=f"c2s {__version__} residual", threads=o.threads)
        if o.save_sigma_map is not None:
            frames = [d.sigma_volume(vol.data.shape[:3]) for d in rep.domains]
            used = frames[0] if vol.data.ndim == 3 else np.stack(frames, axis=-1)
            write_volume(vol, used, o.save_sigma_map, note=f"c2s {__version__} sigma map", threads=o.threads)
        seconds["write"] = time.perf_counter() - t0
    if clipped:
        warn(f"{dst}: {clipped} voxel(s) clipped to the output's stored range")
    seconds["total"] = time.perf_counter() - t_start
    return {
        "input": str(src),
        "series": o.series,
        "output": str(dst),
        "status": "ok",
        **den.describe(),
        "noise": [{**d, "method": source} for d in rep.noise] if source else rep.noise,
        **({"sigma_map_estimate": map_report} if map_report else {}),
        "warnings": warnings,
        "clipped_voxels": clipped,
        "adapt_steps": o.adapt,
        "tta": o.tta,
        "planes": list(o.planes),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
