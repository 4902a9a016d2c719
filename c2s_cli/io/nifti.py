"""NIfTI-1/2 reading and writing with nibabel, keeping the header (never reoriented or resampled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError
from c2s_cli.volume import Volume

MAX_VOXELS = 2_000_000_000  # refuse absurd headers before allocating


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _slice_axis(img: object, zooms: tuple[float, ...]) -> int:
    """The acquisition's through-plane axis: dim_info's slice dim, else the thickest spatial axis, else 2."""
    _, _, slice_dim = img.header.get_dim_info()  # type: ignore[attr-defined]
    if slice_dim is not None and slice_dim < 3:
        return int(slice_dim)
    z = np.asarray(zooms[:3], dtype=float)
    if z.max() > 1.2 * np.median(z):
        return int(np.argmax(z))
    return 2


def _check_declared_size(path: Path, img: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse, from the header alone, a size the file cannot hold or this machine cannot take (a 73-byte file
    must not make c2s allocate gigabytes)."""
    n = int(np.prod(shape, dtype=np.float64))
    if any(s <= 0 for s in shape) or n > MAX_VOXELS:
        raise InputError(f"{path}: header declares an implausible size {shape}")
    declared = n * dtype.itemsize
    stored = path.stat().st_size
    gz = str(path).lower().endswith(".gz")
    limit = stored * 1100 if gz else stored - int(img.header["vox_offset"])  # deflate expands at most ~1032×
    if declared > limit:
        raise InputError(f"{path}: header declares {shape} {dtype} ({declared / 2**20:.0f} MiB) but the file holds "
                         f"{'at most ' if gz else ''}{max(limit, 0) / 2**20:.1f} MiB: damaged or truncated")
    budget = _memory_budget()
    if budget is not None and n * 4 * 2 > budget:
        raise InputError(f"{path}: {shape} needs {n * 8 / 2**30:.1f} GiB as float32 input and output, more than this "
                         f"machine's {budget / 2**30:.1f} GiB of memory")


def _memory_budget() -> int | None:
    """Physical memory in bytes (None where unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _gunzip_verified(path: Path) -> bytes:
    """The whole decompressed stream, its CRC-32 and length checked (every member, to the end of the file)."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: damaged gzip stream ({type(exc).__name__}: {str(exc)[:80]}); the file is corrupt "
                         "or truncated, re-export or re-copy it") from None


def read_nifti(path: Path, *, keep_complex: bool = False) -> Volume:
    """Read a .nii / .nii.gz (NIfTI-1 or -2, 3D or 4D) as float32 with scl_slope/inter applied.

    ``keep_complex``: a complex NIfTI is read as complex64 (``data`` is then complex: for
    :func:`c2s_cli.io.complex.read_complex` only); without it a complex file is refused.

    A ``.nii.gz`` is decompressed whole and its gzip CRC-32 and length are verified: a damaged stream is refused,
    never read as data. The declared size is checked against the file and the memory before anything is read.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI-1/2 image ({type(img).__name__})")
    shape = img.shape
    if len(shape) < 3 or len(shape) > 4:
        raise InputError(f"{path}: expected a 3D or 4D image, got shape {shape}")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    dtype = img.get_data_dtype()
    cplx = np.issubdtype(dtype, np.complexfloating)
    if (cplx and not keep_complex) or dtype.names is not None:
        raise InputError(f"{path}: data type {dtype} is not supported (complex or RGB); give a magnitude image")
    _check_declared_size(path, img, shape, dtype)
    try:
        # the file-backed image stays the Volume's source (header only); the verified bytes are dropped once read
        whole = type(img).from_bytes(_gunzip_verified(path)) if str(path).lower().endswith(".gz") else img
        data = np.asarray(whole.dataobj, dtype=np.complex64 if cplx else np.float32).reshape(shape)
        del whole
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: voxel data unreadable or truncated ({type(exc).__name__})") from None
    try:
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = img.header.get_zooms()
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("singular or non-finite affine")
        nib.aff2axcodes(affine)
        for form in (img.get_qform(), img.get_sform()):  # both are written back: both must be sane
            if not np.all(np.isfinite(form)):
                raise ValueError("non-finite qform/sform")
        probe = nib.Nifti1Header()
        probe.set_qform(img.get_qform(), 1)
        slice_axis = _slice_axis(img, zooms)
    except Exception as exc:
        raise InputError(f"{path}: invalid geometry in the header ({type(exc).__name__}: {str(exc)[:100]})") from None
    meta = {
        "dtype": str(dtype),
        "format": type(img).__name__.replace("Image", ""),
        "descrip": img.header["descrip"].item().decode("latin-1", "replace").strip() if "descrip" in img.header else "",
        "sform_code": int(img.header["sform_code"]),
        "qform_code": int(img.header["qform_code"]),
    }
    return Volume(data, affine, img, "nifti", str(path), slice_axis, meta)


def _save(img: Any, path: Path, threads: int | None) -> None:
    """``nib.save``, but a ``.nii.gz`` is compressed on ``threads`` threads (one standard gzip member, level 1 as
    nibabel writes it; see :mod:`c2s_cli.io.pgzip`)."""
    import nibabel as nib

    if str(path).lower().endswith(".gz"):
        from c2s_cli.io.pgzip import ParallelGzipWriter

        with ParallelGzipWriter(path, level=1, threads=threads) as fh:
            img.to_stream(fh)  # header, then the data slice by slice: compressed as it arrives, memory bounded
    else:
        nib.save(img, str(path))


def write_nifti(
    vol: Volume, data: NDArray[np.float32], path: Path, *, dtype: str = "float32", note: str = "c2s",
    threads: int | None = None,
) -> int:
    """Write ``data`` with ``vol``'s header (affine, s/qform and codes, pixdim, units, dim_info, extensions).
    ``data`` has ``vol``'s shape, or is a 3-D map (X, Y, Z) of a 4-D input (written 3-D).

    Args:
        dtype: "float32" (default) or "input": the input's on-disk type; unscaled integers are rounded and clipped,
            scaled integers (scl_slope ≠ 1 or scl_inter ≠ 0) get a new slope / intercept spanning the output range at
            the type's full resolution (never quantised to the input's raw steps).
        note: prefix written into ``descrip`` (80 bytes).
        threads: gzip threads for a ``.nii.gz`` (None: the cores available).
    Returns:
        the number of voxels clipped to the output type's range (0 for float32). Complex ``data`` is written as
        complex64 (``dtype`` "float32").
    """
    src = vol.source
    header = src.header.copy()
    clipped = 0
    out_data: NDArray[np.generic]
    rescale = False
    if dtype == "input":
        dt = np.dtype(vol.meta["dtype"])
        # nibabel moves the file's scl_slope / scl_inter into the array proxy on load
        slope, inter = float(getattr(src.dataobj, "slope", 1.0)), float(getattr(src.dataobj, "inter", 0.0))
        if np.issubdtype(dt, np.integer) and (slope != 1.0 or inter != 0.0):
            # scaled integers (quantitative maps, scl_slope 0.001…): nibabel picks a slope / intercept that spans the
            # denoised range at the type's full resolution; rounding to the input's raw units would destroy the data
            rescale = True
            out_data = np.asarray(data, dtype=np.float32)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            rounded = np.rint(data)
            clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
            out_data = np.clip(rounded, info.min, info.max).astype(dt)
        else:
            out_data = data.astype(dt)
        header.set_data_dtype(dt)
    else:
        kind = np.complex64 if np.iscomplexobj(data) else np.float32  # complex: --complex-out
        out_data = np.asarray(data, dtype=kind)
        header.set_data_dtype(kind)
    if not (out_data.ndim == 3 and len(src.shape) == 4):  # a 3-D map of a 4-D input keeps its own shape
        out_data = out_data.reshape(src.shape)
    img = type(src)(out_data, src.affine, header)
    img.set_sform(src.get_sform(), int(src.header["sform_code"]))
    img.set_qform(src.get_qform(), int(src.header["qform_code"]))
    img.header.set_slope_inter(*((np.nan, np.nan) if rescale else (1.0, 0.0)))
    img.header["cal_min"] = 0
    img.header["cal_max"] = 0
    old = vol.meta.get("descrip", "")
    img.header["descrip"] = (f"{note}; {old}" if old else note).encode("latin-1", "replace")[:79]
    _save(img, path, threads)
    return clipped


def write_nifti_from(
    vol: Volume, data: NDArray[np.float32], path: Path, *, threads: int | None = None, note: str = "c2s denoised",
) -> int:
    """Write a non-NIfTI volume (e.g. a DICOM series) as float32 NIfTI-1, sform = qform = scanner (code 1)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, np.complex64 if np.iscomplexobj(data) else np.float32), vol.affine)
    img.set_sform(vol.affine, 1)
    img.set_qform(vol.affine, 1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = note.encode("latin-1", "replace")[:79]
    _save(img, path, threads)
    return 0
