"""A before / after / residual PNG montage of representative slices (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def write_preview(
    noisy: NDArray[np.floating], denoised: NDArray[np.floating], path: Path, *, sigma: float, slice_axis: int = 2,
    title: str = "",
) -> tuple[int, int]:
    """Rows: 3 slices (25 %, 50 %, 75 % along ``slice_axis``); columns: input, output, residual (±3σ).

    Returns the image size (width, height) in pixels.
    """
    from PIL import Image, ImageDraw

    a = np.moveaxis(np.asarray(noisy, np.float32), slice_axis, 0)
    b = np.moveaxis(np.asarray(denoised, np.float32), slice_axis, 0)
    top = float(np.percentile(a[a > 0], 99.5)) if np.any(a > 0) else 1.0
    rows = []
    n = a.shape[0]
    for k in sorted({int(n * f) for f in (0.25, 0.5, 0.75)} & set(range(n))) or [0]:
        cells = [np.clip(a[k] / top, 0, 1), np.clip(b[k] / top, 0, 1),
                 np.clip(0.5 + (a[k] - b[k]) / (6 * sigma), 0, 1) if sigma > 0 else np.zeros_like(a[k])]
        rows.append(np.concatenate([np.rot90(c) for c in cells], axis=1))
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
