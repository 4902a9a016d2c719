"""A before / after / residual PNG montage of representative slices (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def as_ras(data: NDArray[np.floating], affine: NDArray[np.floating] | None, slice_axis: int,
           ) -> tuple[NDArray[np.floating], int, tuple[float, float, float]]:
    """``data`` turned to the closest RAS+ orientation (axes flipped and permuted by the affine, as nilearn and
    fMRIPrep reports display images; no resampling), the slice axis in that order, and the voxel sizes (mm)."""
    if affine is None:
        return data, slice_axis, (1.0, 1.0, 1.0)
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(np.asarray(affine, np.float64))
    zooms = np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(axis=0))
    sizes = [1.0, 1.0, 1.0]
    for i, (ax, _) in enumerate(ornt):
        sizes[int(ax)] = float(zooms[i]) or 1.0
    return apply_orientation(data, ornt), int(ornt[slice_axis, 0]), (sizes[0], sizes[1], sizes[2])


def _display(cell: NDArray[np.floating], px: tuple[float, float], min_size: int) -> NDArray[np.floating]:
    """A slice [i, j] in RAS order as displayed: j (anterior or superior) up, i to the right (neurological), pixels
    stretched to their physical aspect and enlarged by an integer factor to at least ``min_size`` pixels."""
    from PIL import Image

    img = np.rot90(cell)
    h, w = img.shape
    sx, sy = px
    base = min(sx, sy)
    k = max(1, int(np.ceil(min_size / max(1, min(w * sx / base, h * sy / base)))))
    size = (max(1, round(w * sx / base * k)), max(1, round(h * sy / base * k)))
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize(size, Image.NEAREST))


def write_preview(
    noisy: NDArray[np.floating], denoised: NDArray[np.floating], path: Path, *, sigma: float, slice_axis: int = 2,
    title: str = "", affine: NDArray[np.floating] | None = None, min_size: int = 192,
) -> tuple[int, int]:
    """Rows: 3 slices (25 %, 50 %, 75 % along ``slice_axis``); columns: input, output, residual (±3σ).

    With ``affine`` the volume is shown in RAS orientation whatever its storage order (LIA, LPS …): anterior or
    superior up, the subject's right on the right of each panel; pixels keep their physical aspect, and panels
    smaller than ``min_size`` pixels are enlarged by an integer factor (nearest neighbour).

    Returns the image size (width, height) in pixels.
    """
    from PIL import Image, ImageDraw

    a0, axis, mm = as_ras(np.asarray(noisy, np.float32), affine, slice_axis)
    b0, _, _ = as_ras(np.asarray(denoised, np.float32), affine, slice_axis)
    a, b = np.moveaxis(a0, axis, 0), np.moveaxis(b0, axis, 0)
    px = tuple(m for i, m in enumerate(mm) if i != axis)
    top = float(np.percentile(a[a > 0], 99.5)) if np.any(a > 0) else 1.0
    rows = []
    n = a.shape[0]
    for k in sorted({int(n * f) for f in (0.25, 0.5, 0.75)} & set(range(n))) or [0]:
        cells = [np.clip(a[k] / top, 0, 1), np.clip(b[k] / top, 0, 1),
                 np.clip(0.5 + (a[k] - b[k]) / (6 * sigma), 0, 1) if sigma > 0 else np.zeros_like(a[k])]
        rows.append(np.concatenate([_display(c, (px[0], px[1]), min_size) for c in cells], axis=1))
    img = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
    header = 14
    canvas = Image.new("L", (img.shape[1], img.shape[0] + header), 0)
    canvas.paste(Image.fromarray(img), (0, header))
    ImageDraw.Draw(canvas).text((2, 1), f"{title}  input | c2s | residual (+-3 sigma), sigma = {sigma:.4g}", fill=255)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "c2s")  # marks the file as c2s's own (see c2s_cli.io.atomic.is_c2s_output)
    canvas.save(path, format="PNG", pnginfo=info)
    return canvas.size
