"""What ``c2s info`` reports, as plain dicts: a scan (with its noise domain), a model file, the model list.

No weights are loaded and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from c2s_cli.errors import InputError


def model_info(path: Path) -> dict[str, Any]:
    """A checkpoint's format, versions, parameter count, config and training summary (header only)."""
    from c2s_cli.checkpoint import check_meta, read_header, sha256

    if not path.exists():
        raise InputError(f"{path}: no such model file")
    meta, tensors = read_header(path)
    cfg = check_meta(path, meta)
    params = sum(int(np.prod([int(s) for s in t["shape"]], dtype=np.int64)) for t in tensors.values())
    return {
        "kind": "model",
        "path": str(path),
        "sha256": sha256(path),
        "format_version": meta.get("format_version"),
        "c2s_version": meta.get("c2s_version"),
        "parameters": params,
        "config": cfg.to_dict(),
        "guides": list(cfg.model.guide_names) if cfg.model.guides else [],
        "training": json.loads(meta.get("training", "{}")),
    }


def models_info() -> list[dict[str, Any]]:
    """Every available model: name, path, SHA-256, whether it matches its registry, what it was trained on."""
    from c2s_cli.checkpoint import list_models, read_header, sha256

    rows = []
    for name, path, expected in list_models():
        meta, _ = read_header(path)
        actual = sha256(path)
        training = json.loads(meta.get("training", "{}"))
        rows.append({
            "name": name,
            "path": str(path),
            "sha256": actual,
            "verified": expected == actual if expected else None,
            "trained_on": training.get("description", training.get("sources", "")),
        })
    return rows


def scan_info(path: Path, *, series: str | None = None, noise: bool = True, coils: int = 1) -> dict[str, Any]:
    """Shape, spacing, orientation, range, header facts and (``noise``) the noise domain of the first 3-D frame; a
    folder with several DICOM series lists them instead."""
    from c2s_cli.io import looks_like_dicom, read_volume
    from c2s_cli.io.dicom import list_series

    out: dict[str, Any] = {}
    if path.is_dir() or (path.is_file() and looks_like_dicom(path) and not path.name.lower().endswith((".nii", ".nii.gz"))):
        infos, warnings = list_series(path)
        out["series"] = [{"uid": i.uid, "number": i.number, "description": i.description, "modality": i.modality,
                          "images": i.count} for i in infos]
        if len(infos) > 1 and series is None:
            out.update({"kind": "dicom-folder", "path": str(path), "warnings": warnings})
            return out
    from c2s_cli.io.complex import read_complex

    vol, warnings, z = read_complex(path, series=series, check_parts=False)  # a complex NIfTI: its magnitude, and z
    data = vol.data
    out.update({
        "kind": vol.kind,
        "path": str(path),
        "shape": list(data.shape),
        "spacing": [round(s, 4) for s in vol.spacing],
        "orientation": vol.orientation,
        "slice_axis": vol.slice_axis,
        "dtype": vol.meta.get("dtype"),
        "range": [float(np.min(data)), float(np.max(data))],
        "affine": np.round(vol.affine, 4).tolist(),
    })
    out.update({k: v for k, v in vol.meta.items() if k not in ("dtype",)})
    part = vol.meta.get("complex_component") or ""
    if noise and part in ("phase", "real", "imaginary"):
        from c2s_cli.io.complex import PART_HOW

        why = f"the DICOM header says this is the {part} image of complex data, not a magnitude: {PART_HOW[part]}"
        out["noise"] = {"sigma": None, "method": None, "c2s_denoise_uses": "refuses", "reason": why, "warnings": [why]}
    elif noise and z is not None:
        out["noise"] = complex_noise_info(z, vol.slice_axis)
    elif noise:
        from c2s_cli.errors import C2SError
        from c2s_cli.noise.policy import NoiseSpec, fit, map_for_info

        try:  # what `c2s denoise` does with no noise flag: the one noise policy, on the first frame (or the series)
            nf = fit(data, NoiseSpec(coils=coils, slice_axis=vol.slice_axis), name=str(path), frames=1)
        except C2SError as exc:
            out["noise"] = {"sigma": None, "method": None, "c2s_denoise_uses": "refuses", "reason": str(exc),
                            "warnings": [str(exc)], "sigma_map": {"varying": None, "says": str(exc),
                                                                  "c2s_denoise_uses": "refuses", "flag": "--sigma"}}
        else:
            dom = nf.domains[0]
            out["noise"] = {**dom.summary(), "c2s_denoise_uses": nf.uses, "reason": nf.reason,
                            "warnings": nf.warnings}
            out["noise"]["sigma_map"] = map_for_info(data, nf, vol.slice_axis)
    if data.ndim == 4:
        out["series"] = series_info(vol, path)
    out["warnings"] = warnings
    return out


def complex_noise_info(z: Any, slice_axis: int) -> dict[str, Any]:
    """What ``c2s denoise`` does with the noise of complex data: σ per voxel measured on the imaginary part once the
    low-pass phase is removed (:mod:`c2s_cli.complexdata`), of the first 3-D frame."""
    from c2s_cli.complexdata import demodulate, imaginary_sigma_map
    from c2s_cli.noise.policy import IMAGINARY_MAP

    first = z if z.ndim == 3 else z[..., 0]
    _, imag, _ = demodulate(first, slice_axis=slice_axis)
    try:
        smap = imaginary_sigma_map(imag, slice_axis=slice_axis)
    except ValueError as exc:
        return {"sigma": None, "method": None, "c2s_denoise_uses": "refuses", "reason": str(exc), "warnings": [str(exc)]}
    p5, p50, p95 = (float(v) for v in np.percentile(smap, [5, 50, 95]))
    return {"sigma": p50, "method": IMAGINARY_MAP, "c2s_denoise_uses": IMAGINARY_MAP,
            "reason": (f"complex data: a σ map (median {p50:.4g}, 5–95 % {p5:.4g}–{p95:.4g}) measured on the imaginary "
                       "part once the slowly varying phase is removed; the real part is denoised (Gaussian noise, no "
                       "VST)"), "warnings": []}


def series_info(vol: Any, path: Path) -> dict[str, Any]:
    """What ``c2s denoise`` does with this 4-D series by default: its series mode, and for a diffusion series where
    the gradient table comes from and its shells (b-value: volumes)."""
    from c2s_cli.config import DenoiseOptions
    from c2s_cli.io.gradients import series_gradient_table

    try:
        table = series_gradient_table(vol, path)
    except InputError as exc:
        return {"volumes": int(vol.data.shape[3]), "c2s_denoise_uses": "refuses", "reason": str(exc)}
    out: dict[str, Any] = {"volumes": int(vol.data.shape[3]),
                           "c2s_denoise_uses": DenoiseOptions().series_mode_for(table is not None)}
    if table is not None:
        from c2s_cli.series import shells

        sh = shells(table[0])
        out["gradient_table"] = table[2]
        out["shells"] = {str(int(round(float(np.median(table[0][sh == k]))))): int((sh == k).sum())
                         for k in range(int(sh.max()) + 1) if (sh == k).any()}
    return out

