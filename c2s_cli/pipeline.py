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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli._version import __version__
from c2s_cli.complexdata import DEMODULATION_WIDTH
from c2s_cli.errors import InputError, UsageError
from c2s_cli.io import check_writable, is_nifti, output_kind, read_volume, write_volume
from c2s_cli.io.atomic import OutputLock, atomic_path, check_distinct, check_output
from c2s_cli.io.gradients import series_gradient_table
from c2s_cli.volume import Volume, same_grid

if TYPE_CHECKING:
    from c2s_cli.api import Denoiser
    from c2s_cli.config import DenoiseOptions


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


def noise_mode(o: DenoiseOptions) -> str:
    """The noise policy's mode for these options: "auto" (``--sigma-map auto``), "none" (``--sigma-map none``) or
    "default" (:mod:`c2s_cli.noise.policy`)."""
    return "auto" if o.estimate_sigma_map else "default" if o.default_sigma_map else "none"


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
            **({"precision": "bf16"} if getattr(den, "bf16", False) else {}),
            "self_similarity": o.self_similarity}


def check_outputs(src: Path, dst: Path, o: DenoiseOptions, inputs: Sequence[Path]) -> None:
    """Every output is safe to write (:func:`~c2s_cli.io.atomic.check_output`): not an input, and an existing one
    only with ``force`` and only if c2s wrote it. Run before the compute, and again once the outputs are locked (a
    concurrent run may have written them in between)."""
    every_input = [src, *inputs, *([o.mask] if o.mask else []), *o.guides, *([o.sigma_map] if o.sigma_map else []),
                   *([o.phase] if o.phase else []), *([o.imaginary] if o.imaginary else [])]
    outputs = {"output": dst, "residual": o.residual, "preview": o.preview, "save_sigma_map": o.save_sigma_map,
               "save_rank_map": o.save_rank_map}
    for name, p in outputs.items():
        if p is not None:
            check_output(p, every_input, force=o.force, what=name, param=name)


def check_complex(src: Path, dst: Path, o: DenoiseOptions, z: NDArray[np.complex64] | None) -> None:
    """Complex data's own refusals, once the input is known to be complex or not (a complex NIfTI needs no flag)."""
    if z is None:
        if o.complex_out:
            raise UsageError(f"complex_out: {src} is not complex data; give its phase (--phase) or imaginary part "
                             "(--imaginary), or a complex NIfTI", param="complex_out")
        return
    clash = o.complex_conflict()
    if clash:
        raise UsageError(f"{clash}: {src} is complex data (Gaussian noise once the phase is removed); {clash} is not "
                         "available with it", param=clash)
    if o.complex_out and not is_nifti(dst):
        raise UsageError(f"complex_out: {dst}: the complex output is written as NIfTI (.nii or .nii.gz)",
                         param="complex_out")


def preflight(
    den: Denoiser, src: Path, dst: Path, o: DenoiseOptions, inputs: Sequence[Path],
) -> tuple[Volume, list[str], NDArray[np.bool_] | None, list[NDArray[np.float32]], NDArray[np.float32] | None, str,
           NDArray[np.complex64] | None]:
    """Every check that can fail before the compute; returns the volume (for complex data: its magnitude), its
    warnings, the mask, the guides, the σ map, the UID seed and the complex data (None for magnitudes)."""
    from c2s_cli.config import check_options
    from c2s_cli.io.complex import read_complex

    check_options(o)
    den.check_guides(len(o.guides))
    outputs = {"output": dst, "residual": o.residual, "preview": o.preview, "save_sigma_map": o.save_sigma_map,
               "save_rank_map": o.save_rank_map}
    check_distinct(outputs)
    for name, what in (("residual", "the residual map"), ("save_sigma_map", "the σ map"),
                       ("save_rank_map", "the rank map")):
        if outputs[name] is not None and not is_nifti(outputs[name]):  # type: ignore[arg-type]
            raise UsageError(f"{name} {outputs[name]}: {what} is written as NIfTI (.nii or .nii.gz)", param=name)
    if o.preview is not None and o.preview.suffix.lower() != ".png":
        raise UsageError(f"preview {o.preview}: the preview is a PNG (.png)", param="preview")
    check_outputs(src, dst, o, inputs)
    vol, warnings, z = read_complex(src, phase=o.phase, imaginary=o.imaginary, series=o.series)
    check_complex(src, dst, o, z)
    output_kind(vol, dst)
    seed = json.dumps({**pixel_options(den, o), **({"complex": True} if z is not None else {})}, sort_keys=True)
    check_writable(vol, dst, uid_seed=seed)
    for extra in (o.residual, o.save_sigma_map, o.save_rank_map):
        if extra is not None:
            check_writable(vol, extra)
    if o.adapt and vol.data.ndim != 3:
        raise UsageError(f"adapt: {src} is 4D; adaptation supports 3D inputs only", param="adapt")
    keep = read_mask(o.mask, vol) if o.mask is not None else None
    guides = [read_guide(g, vol) for g in o.guides]
    smap = read_sigma_map(o.sigma_map, vol) if o.sigma_map is not None else None
    axis = o.slice_axis if o.slice_axis is not None else vol.slice_axis
    w = anisotropy_warning(vol, axis, o.planes)
    return vol, warnings + ([w] if w else []), keep, guides, smap, seed, z


@dataclass
class Demodulated:
    """Complex input made ready for the network (:mod:`c2s_cli.complexdata`): the real part (image units), the
    low-pass phase removed from it, and the σ it is denoised with (one value, or a map and where it came from)."""

    real: NDArray[np.float32]
    phase: NDArray[np.float32]
    sigma: float | None
    sigma_map: NDArray[np.float32] | None
    map_source: str
    source: str
    shift: np.float32 = np.float32(0.0)  # the constant the real part is denoised above (image units)

    def record(self, o: DenoiseOptions) -> dict[str, Any]:
        return {"input": self.source, "demodulation": f"low-pass phase, Gaussian {DEMODULATION_WIDTH:g} voxels in "
                "each slice", "noise": "Gaussian (no VST)", "shift": float(self.shift),
                "output": "complex" if o.complex_out else "magnitude"}


def demodulated(z: NDArray[np.complex64], axis: int, o: DenoiseOptions, smap: NDArray[np.float32] | None, *,
                trained: bool) -> Demodulated:
    """Demodulate ``z`` and choose σ: the user's σ or map, else the imaginary part's map (``--sigma-map none``: its
    one robust σ). ``trained``: the network is trained on this scan first (the series context mode), so the real
    part needs no shift (:data:`c2s_cli.complexdata.SHIFT`)."""
    from c2s_cli.complexdata import SHIFT, demodulate, imaginary_sigma, imaginary_sigma_map
    from c2s_cli.noise.policy import IMAGINARY_MAP

    real, imag, phase = demodulate(z, slice_axis=axis)
    source = "phase" if o.phase else "imaginary" if o.imaginary else "complex NIfTI"
    try:
        if o.sigma is not None or smap is not None:
            out = Demodulated(real, phase, o.sigma, smap, "map (user)", source)
        elif not o.default_sigma_map:
            out = Demodulated(real, phase, imaginary_sigma(imag, slice_axis=axis), None, "", source)
        else:
            out = Demodulated(real, phase, None, imaginary_sigma_map(imag, slice_axis=axis), IMAGINARY_MAP, source)
    except ValueError as exc:
        raise InputError(f"{o.phase or o.imaginary or 'input'}: {exc}", param="sigma") from None
    if not trained:
        level = out.sigma if out.sigma is not None else float(np.median(out.sigma_map))  # type: ignore[arg-type]
        out.shift = np.float32(SHIFT * level)
    return out


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
    from c2s_cli.records import DenoiseReport

    t_start = time.perf_counter()
    vol, warnings, keep, guides, smap, seed, z = preflight(den, src, dst, o, inputs)
    series = vol.data.ndim == 4
    table = series_gradient_table(vol, src) if series and o.series_mode != "volumes" else None  # before compute
    mode = o.series_mode_for(table is not None) if series else None
    context = mode == "context"
    if not context:
        den.check_volume_by_volume()  # before any compute
    if o.save_rank_map is not None and not context:
        raise UsageError(f"save_rank_map: {src} is denoised {'volume by volume' if series else 'as one volume'}; the "
                         "rank map is the series context mode's (a 4-D diffusion series, --series-mode context)",
                         param="save_rank_map")
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
    cplx = demodulated(z, axis, o, smap, trained=context) if z is not None else None
    if cplx is not None:  # the real part, Gaussian noise: no VST; σ from the imaginary part unless given
        work = vol.with_data(cplx.real + cplx.shift)
        fitted = den.fit_noise(work, cplx.sigma, sigma_map=cplx.sigma_map, noise="none", use_vst=False,
                               slice_axis=axis, on_warning=warn, map_source=cplx.map_source)
    else:
        work = vol
        fitted = den.fit_noise(vol, o.sigma, sigma_map=smap, noise=noise_mode(o), use_vst=o.vst, coils=o.coils,
                               slice_axis=axis, on_warning=warn)
    if fitted.estimates:
        seconds["sigma_map"] = fitted.seconds
    with ExitStack() as locks:
        for p in (dst, o.residual, o.preview, o.save_sigma_map, o.save_rank_map):
            if p is not None:
                locks.enter_context(OutputLock(p))
        check_outputs(src, dst, o, inputs)  # again under the locks: a run started just before may have finished
        worker = den
        if o.adapt:
            t0 = time.perf_counter()
            cb = (lambda r: on_progress("adapt", r["step"], o.adapt)) if on_progress else None
            worker = den.adapted(vol.data, o.adapt, use_vst=o.vst, coils=o.coils, slice_axis=axis,
                                 guides=guides or None, lr=o.adapt_lr, on_log=cb, domain=fitted.domains[0])
            seconds["adapt"] = time.perf_counter() - t0
        rep = DenoiseReport()
        if o.series_mode == "context" and not context:
            warn(f"{src}: one volume: series_mode context needs a 4-D series; denoised as a volume")
        if context:
            result = worker.denoise_series(
                work, bvals=table[0] if table else None, bvecs=table[1] if table else None, steps=o.series_steps,
                strength=o.strength, slice_axis=axis, fitted=fitted, report=rep, rank_map=o.save_rank_map is not None,
                self_similarity=o.self_similarity,
                on_log=(lambda r: on_progress("train", r["step"], r["total_steps"])) if on_progress
                else None,
                on_volume=(lambda d, n: on_progress("denoise", d, n)) if on_progress else None)
        else:
            result = worker.denoise(
                work, strength=o.strength, use_vst=False if cplx is not None else o.vst, coils=o.coils, slice_axis=axis, guides=guides or None,
                report=rep, tta=o.tta, planes=o.planes, fitted=fitted, self_similarity=o.self_similarity,
                on_progress=(lambda d, n: on_progress("denoise", d, n)) if on_progress else None,
            )
        seconds.update(rep.seconds)
        written: NDArray[np.generic] = result
        if cplx is not None:
            from c2s_cli.complexdata import magnitude, remodulate

            real = result - cplx.shift
            result = magnitude(real)  # what the residual, the preview and the record compare with |z|
            written = remodulate(real, cplx.phase) if o.complex_out else result
        if keep is not None:
            result = np.where(keep, result, vol.data).astype(np.float32)
            written = np.where(keep, written, z if o.complex_out and z is not None else vol.data)
        t0 = time.perf_counter()
        vst_on = False if cplx is not None else den.noise_model(o.vst, o.coils)[0]
        params = (f"model={den.name} sha256={den.sha256[:16]} strength={o.strength} vst={vst_on} tta={o.tta} "
                  f"planes={'+'.join(o.planes)}")
        derivation = (f"Self-supervised denoising (Corruption2Self), c2s {__version__}, {params}, "
                      f"sigma={rep.domains[0].sigma:.5g}")
        clipped = write_volume(vol, written, dst, dtype=o.dtype, note=f"c2s {__version__} denoised",
                               derivation=derivation, software_version=f"c2s {__version__}", uid_seed=seed,
                               threads=o.threads)
        if o.preview is not None:
            from c2s_cli.io.preview import write_preview

            with atomic_path(o.preview) as tmp:
                first = (vol.data, result) if vol.data.ndim == 3 else (vol.data[..., 0], result[..., 0])
                write_preview(*first, tmp, sigma=rep.domains[0].sigma, slice_axis=axis, title=src.name,
                              affine=vol.affine)
        if o.residual is not None:
            resid = (vol.data - result).astype(np.float32)
            write_volume(vol, resid, o.residual, note=f"c2s {__version__} residual", threads=o.threads)
        if o.save_sigma_map is not None:
            frames = [d.sigma_volume(vol.data.shape[:3]) for d in rep.domains]
            used = frames[0] if vol.data.ndim == 3 else np.stack(frames, axis=-1)
            write_volume(vol, used, o.save_sigma_map, note=f"c2s {__version__} sigma map", threads=o.threads)
        if o.save_rank_map is not None and rep.rank_map is not None:
            write_volume(vol, rep.rank_map.astype(np.float32), o.save_rank_map,
                         note=f"c2s {__version__} rank map (8^3 blocks)", threads=o.threads)
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
        "noise": rep.noise,
        "noise_reason": fitted.reason,
        **({"sigma_map_estimate": fitted.estimates} if fitted.estimates else {}),
        "warnings": warnings,
        "clipped_voxels": clipped,
        "adapt_steps": o.adapt,
        "series_mode": mode,
        **({"complex": cplx.record(o)} if cplx is not None else {}),
        **({"series_context": {"neighbours_in": f"q-space ({table[2]})" if table else "time",
                               "training_steps": rep.series_steps,
                               "floor_spread": rep.series_floor_spread,
                               "prediction_weight": rep.series_prediction_weight,
                               "subspace_weight": rep.series_subspace_weight,
                               "start_model": rep.series_start}}
           if context else {}),
        "tta": o.tta,
        "planes": list(o.planes),
        "self_similarity": [b.summary() for b in rep.blends] if rep.blends else None,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
