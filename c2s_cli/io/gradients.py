"""Diffusion gradient tables: FSL ``.bval`` / ``.bvec`` text files beside a NIfTI series (as dcm2niix and BIDS write
them), or a DICOM series' own diffusion attributes (standard, Siemens, GE, Philips). The series mode uses them to
find each volume's nearest volumes in q-space; distances do not depend on the frame the vectors are given in, so no
reorientation is needed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError


def sidecars(path: Path) -> tuple[Path, Path]:
    """``X.bval`` and ``X.bvec`` for ``X.nii`` / ``X.nii.gz``."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".bval"), path.with_name(stem + ".bvec")


B0_THRESHOLD = 50.0  # s/mm²: at or below, a b = 0 volume (as c2s_cli.series, dipy's b0_threshold, MRtrix's bzero)


def read_gradient_table(bvals: Path, bvecs: Path, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(bvals (n,) in s/mm², bvecs (n, 3)) from FSL text files; bvecs may be 3 rows × n or n rows × 3.

    Raises:
        InputError: a file unreadable, non-finite, negative b-values, or not one entry per volume.
    """
    out = []
    for p, param in ((bvals, "bvals"), (bvecs, "bvecs")):
        try:
            out.append(np.loadtxt(p, ndmin=2, dtype=np.float64))
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: not a readable {param[:-1]} file ({type(exc).__name__})", param=param) from None
    b, g = out
    b = b.reshape(-1)
    if b.size != n or not np.all(np.isfinite(b)) or np.any(b < 0):
        raise InputError(f"{bvals}: {b.size} finite non-negative b-values needed, one per volume ({n})", param="bvals")
    if g.shape == (3, n):
        g = g.T
    if g.shape != (n, 3):
        raise InputError(f"{bvecs}: 3 × {n} direction components needed, got {g.shape[0]} × {g.shape[1]}",
                         param="bvecs")
    # a b = 0 volume has no direction: some tools write NaN there (dipy's small_64D); it is the zero vector
    g = np.where((b <= B0_THRESHOLD)[:, None] & ~np.isfinite(g), 0.0, g)
    bad = np.nonzero(~np.all(np.isfinite(g), axis=1))[0]
    if bad.size:
        raise InputError(f"{bvecs}: no finite direction for volume {int(bad[0])} (b = {b[bad[0]]:g})", param="bvecs")
    return b, g


def _private(ds: Any, group: int, creator: str, element: int) -> Any:
    """The value of a private element (``group``, creator's block, ``element``), or None."""
    try:
        return ds.private_block(group, creator)[element].value
    except (KeyError, ValueError):
        return None


def _siemens_csa(ds: Any) -> tuple[Any, Any]:
    """b-value and direction from a Siemens CSA image header (mosaics of older software carry them only there)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel's "readers are experimental" notice
        from nibabel.nicom import csareader

        try:
            csa = csareader.get_csa_header(ds, "image")
        except Exception:  # noqa: BLE001 - a damaged or absent CSA header: no gradient information from it
            return None, None
        if not csa:
            return None, None
        return csareader.get_b_value(csa), csareader.get_g_vector(csa)


# Where each vendor writes one image's b-value (s/mm²) and gradient direction: (name, function of the header). The
# directions are in the vendor's frame (patient LPS for the standard and Siemens tags, the scanner or image frame for
# GE and Philips); one series uses one frame, and the series mode only needs distances between its volumes.
_SOURCES: tuple[tuple[str, Callable[[Any], tuple[Any, Any]]], ...] = (
    ("DICOM DiffusionBValue / DiffusionGradientOrientation",
     lambda ds: (ds[0x0018, 0x9087].value if (0x0018, 0x9087) in ds else None,
                 ds[0x0018, 0x9089].value if (0x0018, 0x9089) in ds else None)),
    ("Siemens (0019,100C) / (0019,100E)",
     lambda ds: (_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0C), _private(ds, 0x0019, "SIEMENS MR HEADER", 0x0E))),
    ("Siemens CSA header", _siemens_csa),
    ("GE (0043,1039) / (0019,10BB-BD)",
     lambda ds: (_ge_bvalue(_private(ds, 0x0043, "GEMS_PARM_01", 0x39)),
                 _vector([_private(ds, 0x0019, "GEMS_ACQU_01", e) for e in (0xBB, 0xBC, 0xBD)]))),
    ("Philips (2001,1003) / (2005,10B0-B2)",
     lambda ds: (_private(ds, 0x2001, "Philips Imaging DD 001", 0x03),
                 _vector([_private(ds, 0x2005, "Philips MR Imaging DD 001", e) for e in (0xB0, 0xB1, 0xB2)]))),
)


def _ge_bvalue(value: Any) -> Any:
    """GE's slop_int_6: the b-value is its first element, offset by a multiple of 10⁹ on some software."""
    return None if value is None else float(np.atleast_1d(np.asarray(value, np.float64))[0]) % 1e9


def _vector(parts: list[Any]) -> Any:
    return None if any(p is None for p in parts) else [float(p) for p in parts]


def dicom_gradient_table(members: Sequence[tuple[Path, Any]], n_volumes: int
                         ) -> tuple[NDArray[np.float64], NDArray[np.float64], str] | None:
    """(bvals (T,) in s/mm², bvecs (T, 3), where they came from) of a 4-D DICOM series from its headers, or None when
    some volume has no b-value in any known place (not a diffusion series).

    ``members``: the series' (file, header) pairs volume by volume (``Volume.source`` of a DICOM series: Z per volume
    for classic and enhanced series, one per mosaic file); each volume's first header is read, in the order of
    :data:`_SOURCES` (the standard attributes, Siemens, Siemens CSA, GE, Philips); a volume with a b-value and no direction (b = 0, or a trace image)
    gets the zero vector.

    Raises:
        InputError: a b-value or direction that is not finite numbers, or a negative b-value.
    """
    per = len(members) // n_volumes if n_volumes else 0
    if per == 0 or per * n_volumes != len(members):
        return None
    bvals, bvecs, used = np.empty(n_volumes), np.zeros((n_volumes, 3)), set()
    for t in range(n_volumes):
        path, ds = members[t * per]
        for name, get in _SOURCES:
            try:
                b, g = get(ds)
            except (KeyError, ValueError, TypeError, AttributeError):
                continue
            if b is not None and str(b).strip() != "":
                break
        else:
            return None
        try:
            bvals[t] = float(b)
            if g is not None and len(g) == 3:
                bvecs[t] = [float(v) for v in g]
        except (TypeError, ValueError):
            raise InputError(f"{path}: its diffusion b-value or direction ({name}) is not numbers",
                             param="bvals") from None
        used.add(name)
    if not (np.all(np.isfinite(bvals)) and np.all(np.isfinite(bvecs)) and np.all(bvals >= 0)):
        raise InputError(f"{members[0][0].parent}: diffusion b-values must be finite and non-negative, directions "
                         "finite", param="bvals")
    return bvals, bvecs, " + ".join(sorted(used))


def series_gradient_table(vol: Any, src: Path) -> tuple[NDArray[np.float64], NDArray[np.float64], str] | None:
    """The diffusion gradient table of a 4-D series (a :class:`c2s_cli.volume.Volume` read from ``src``) and where it
    came from: a NIfTI's ``.bval`` / ``.bvec`` beside it (both or none), a DICOM series' own diffusion attributes, or
    None (not a diffusion series).

    Raises:
        InputError: one of the two sidecars without the other (naming the missing one), or a damaged table.
    """
    if vol.kind == "dicom":
        return dicom_gradient_table(vol.source, vol.data.shape[3])
    if vol.kind != "nifti":
        return None
    bval, bvec = sidecars(src)
    if bval.is_file() != bvec.is_file():
        missing = bvec if bval.is_file() else bval
        raise InputError(f"{missing}: missing (the series has {'a .bval' if bval.is_file() else 'a .bvec'} file; "
                         f"give both or neither)", param="bvals")
    if not bval.is_file():
        return None
    return (*read_gradient_table(bval, bvec, vol.data.shape[3]), ".bval / .bvec")
