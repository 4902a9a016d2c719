"""Diffusion gradient tables beside a NIfTI series: FSL ``.bval`` / ``.bvec`` text files (as dcm2niix and BIDS write
them). The series mode uses them to find each volume's nearest volumes in q-space; distances do not depend on the
frame the vectors are given in, so no reorientation is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError


def sidecars(path: Path) -> tuple[Path, Path]:
    """``X.bval`` and ``X.bvec`` for ``X.nii`` / ``X.nii.gz``."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".bval"), path.with_name(stem + ".bvec")


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
    if g.shape != (n, 3) or not np.all(np.isfinite(g)):
        raise InputError(f"{bvecs}: 3 × {n} finite direction components needed, got {g.shape[0]} × {g.shape[1]}",
                         param="bvecs")
    return b, g
