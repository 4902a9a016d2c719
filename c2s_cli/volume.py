"""The volume type every part of c2s exchanges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError


@dataclass
class Volume:
    """A scan in memory.

    Attributes:
        data: float32 array, shape (X, Y, Z) or (X, Y, Z, T), in the input's intensity units (after DICOM
            RescaleSlope/Intercept or NIfTI scl_slope/inter). Axis order is the file's voxel order: for NIfTI the
            (i, j, k[, t]) of the header; for DICOM i = column, j = row, k = slice sorted along the slice normal.
        affine: 4×4 voxel (i, j, k) → world RAS+ millimetres, as nibabel.
        source: opaque origin for writers: a nibabel image for NIfTI, the list of pydicom datasets in slice order
            (headers only, no pixel data) for DICOM.
        kind: "nifti" or "dicom".
        path: where it was read from.
        slice_axis: the through-plane (acquisition) axis, used as the default axis for 2D slice processing.
        meta: free-form facts for ``c2s info`` (dtype on disk, series description, ...).
    """

    data: NDArray[np.float32]
    affine: NDArray[np.float64]
    source: Any
    kind: str
    path: str
    slice_axis: int = 2
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (i, j, k), from the affine's column norms."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def orientation(self) -> str:
        """Three-letter RAS orientation code of the voxel axes (e.g. 'RAS', 'LPS')."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def with_data(self, data: NDArray[np.float32]) -> Volume:
        """The same scan with other voxel values (same shape)."""
        assert data.shape == self.data.shape, (data.shape, self.data.shape)
        return Volume(data, self.affine, self.source, self.kind, self.path, self.slice_axis, dict(self.meta))

    def __repr__(self) -> str:
        return (
            f"Volume(kind={self.kind!r}, shape={self.data.shape}, spacing={tuple(round(s, 3) for s in self.spacing)}, "
            f"orientation={self.orientation!r}, path={self.path!r})"
        )


def same_grid(other: Volume, vol: Volume, path: Path, param: str) -> None:
    """Refuse a co-registered input (mask, guide, σ map, reference, phase) that is not on ``vol``'s voxel grid."""
    if other.data.shape[:3] != vol.data.shape[:3] or not np.allclose(other.affine, vol.affine, atol=1e-3):
        raise InputError(
            f"{param} {path}: not on the input's voxel grid (shape {other.data.shape[:3]} vs {vol.data.shape[:3]} or "
            "a different affine); resample it first, e.g. with ANTs antsApplyTransforms or FSL flirt -applyxfm",
            param=param,
        )
