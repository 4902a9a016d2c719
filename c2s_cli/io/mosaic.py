"""Siemens mosaic DICOM: one file holds a whole 3-D volume tiled in a grid (EPI, DWI, fMRI, ASL up to XA software).

Detection: ImageType contains MOSAIC and the Siemens CSA image header gives NumberOfImagesInMosaic (parsed with
nibabel's ``nicom.csareader``). Geometry as dcm2niix and nibabel's ``dicomwrappers`` compute it: tiles of
Rows/M × Columns/M (M = ceil(√n)), slice k in tile row k // M, column k % M; the position of slice 0 is the
mosaic's ImagePositionPatient moved by half the difference between the mosaic and the tile sizes along the row and
column directions; slices follow the CSA SliceNormalVector (or row × column) at SpacingBetweenSlices (or
SliceThickness). A series of mosaic files is a 4-D series, one volume per file in acquisition order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError


@dataclass(frozen=True)
class Mosaic:
    """How a mosaic file tiles its volume."""

    n: int  # slices
    grid: int  # M: tiles per mosaic row and column
    rows: int  # tile rows
    cols: int  # tile columns
    normal: tuple[float, float, float]  # slice normal (LPS)


def mosaic_of(ds: Any) -> Mosaic | None:
    """The tiling of a mosaic dataset (headers suffice), or None when ``ds`` is not a mosaic."""
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if "MOSAIC" not in image_type:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel's nicom warns on import that its readers are experimental
        from nibabel.nicom import csareader

        try:
            csa = csareader.get_csa_header(ds, "image")
            n = csareader.get_n_mosaic(csa) if csa else None
            normal = csareader.get_slice_normal(csa) if csa else None
        except Exception:  # noqa: BLE001 - a damaged CSA header: not usable as a mosaic
            n, normal = None, None
    if not n:
        raise InputError(f"{getattr(ds, 'filename', 'a file')}: ImageType says MOSAIC but the Siemens CSA header "
                         "gives no NumberOfImagesInMosaic; c2s cannot tell how the volume is tiled")
    try:
        n = int(n)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= int(ds.Rows) * int(ds.Columns):  # a damaged CSA value (negative, zero, absurd)
        raise InputError(f"{getattr(ds, 'filename', 'a file')}: the Siemens CSA header gives an impossible "
                         "NumberOfImagesInMosaic; c2s cannot tell how the volume is tiled")
    grid = int(math.ceil(math.sqrt(n)))
    rows, cols = int(ds.Rows) // grid, int(ds.Columns) // grid
    if rows * grid != int(ds.Rows) or cols * grid != int(ds.Columns):
        raise InputError(f"{getattr(ds, 'filename', 'a file')}: a {ds.Rows}×{ds.Columns} mosaic does not split into "
                         f"{grid}×{grid} tiles of {n} slices")
    iop = np.asarray(ds.ImageOrientationPatient, float)
    nv = np.asarray(normal, float) if normal is not None else np.cross(iop[:3], iop[3:])
    nv = nv / (np.linalg.norm(nv) or 1.0)
    return Mosaic(n, grid, rows, cols, (float(nv[0]), float(nv[1]), float(nv[2])))


def unpack(image: NDArray[Any], m: Mosaic) -> NDArray[np.float32]:
    """(Rows, Columns) mosaic → (tile columns, tile rows, n) volume (c2s's axis order: i = column, j = row)."""
    out = np.empty((m.cols, m.rows, m.n), np.float32)
    for k in range(m.n):
        r0, c0 = (k // m.grid) * m.rows, (k % m.grid) * m.cols
        out[:, :, k] = image[r0 : r0 + m.rows, c0 : c0 + m.cols].T
    return out


def pack(volume: NDArray[np.floating], m: Mosaic) -> NDArray[np.float32]:
    """The inverse of :func:`unpack`: a (tile columns, tile rows, n) volume → (Rows, Columns) mosaic, unused tiles 0."""
    out = np.zeros((m.rows * m.grid, m.cols * m.grid), np.float32)
    for k in range(m.n):
        r0, c0 = (k // m.grid) * m.rows, (k % m.grid) * m.cols
        out[r0 : r0 + m.rows, c0 : c0 + m.cols] = volume[:, :, k].T
    return out


def mosaic_affine(ds: Any, m: Mosaic) -> NDArray[np.float64]:
    """Voxel (i = tile column, j = tile row, k = slice) → RAS+ mm of one mosaic file (dcm2niix's geometry)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing (between rows), column spacing
    ipp = np.asarray(ds.ImagePositionPatient, float)
    # the mosaic's IPP is the corner of the whole tiled image: move to the centre-aligned corner of one tile
    origin = ipp + row_dir * dc * (int(ds.Columns) - m.cols) / 2 + col_dir * dr * (int(ds.Rows) - m.rows) / 2
    spacing = float(ds.get("SpacingBetweenSlices", 0) or 0) or float(ds.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = np.asarray(m.normal) * spacing
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def order_volumes(members: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], str]:
    """Mosaic files of one series in acquisition order, and what ordered them."""
    def num(ds: Any, tag: str) -> float:
        v = ds.get(tag)
        return float(v) if v not in (None, "") else float("nan")

    for tag in ("AcquisitionNumber", "InstanceNumber"):
        keys = [num(ds, tag) for _, ds in members]
        if all(np.isfinite(keys)) and len(set(keys)) == len(keys):
            return [members[i] for i in np.argsort(keys, kind="stable")], tag
    names = ", ".join(p.name for p, _ in members[:4])
    raise InputError(f"{names}: {len(members)} mosaic volumes of one series share their AcquisitionNumber and "
                     "InstanceNumber; c2s cannot order them (remove duplicates, or give one file)")
