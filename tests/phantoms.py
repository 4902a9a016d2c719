"""Synthetic head phantoms with known noise (test helpers; no files, fixed seeds)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def head_phantom(shape: tuple[int, int, int] = (96, 96, 24), seed: int = 0) -> np.ndarray:
    """Clean (X, Y, Z) magnitude phantom: air 0, scalp 0.9, CSF 0.25, GM 0.6, WM 1.0, smooth bias field, texture.

    About half the field of view is air.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y, z = np.meshgrid(
        np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), np.linspace(-1, 1, nz), indexing="ij"
    )
    r = np.sqrt((x / 0.75) ** 2 + (y / 0.85) ** 2 + (z / 1.3) ** 2)
    img = np.zeros(shape, np.float32)
    img[r < 1.0] = 0.9
    img[r < 0.92] = 0.25
    img[r < 0.86] = 0.6
    wm = np.sqrt((x / 0.55) ** 2 + (y / 0.65) ** 2 + (z / 1.1) ** 2) < 0.8
    img[wm] = 1.0
    ventricles = (np.abs(x) < 0.08) & (np.abs(y) < 0.3) & (np.abs(z) < 0.5)
    img[ventricles] = 0.25
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    texture /= texture.std() + 1e-12
    img = np.where(img > 0, img * (1 + 0.04 * texture), 0)
    bias = 1 + 0.15 * x - 0.1 * y + 0.05 * z
    return (img * bias).astype(np.float32)


def rician(clean: np.ndarray, sigma: float, seed: int = 1, coils: int = 1) -> np.ndarray:
    """Magnitude of ``coils`` complex channels with i.i.d. N(0, σ²) noise (sum of squares for coils > 1).

    The signal is put in the first channel, so the result is non-central χ with 2N degrees of freedom.
    """
    from c2s_cli.noise.synth import rician as synth

    return synth(clean, sigma, np.random.default_rng(seed), coils)


def zero_filled_rician(clean: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    """Rician data interpolated ×2 in-plane by zero-filling k-space (spatially correlated noise), same shape."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = clean.shape
    small = clean[::2, ::2] + sigma * (rng.standard_normal(clean[::2, ::2].shape) + 1j * rng.standard_normal(clean[::2, ::2].shape))
    k = np.fft.fftshift(np.fft.fft2(small, axes=(0, 1)), axes=(0, 1))
    big = np.zeros((nx, ny, nz), complex)
    sx, sy = small.shape[0], small.shape[1]
    big[(nx - sx) // 2 : (nx - sx) // 2 + sx, (ny - sy) // 2 : (ny - sy) // 2 + sy] = k
    img = np.fft.ifft2(np.fft.ifftshift(big, axes=(0, 1)), axes=(0, 1)) * (nx * ny) / (sx * sy)
    # keep the per-pixel noise std equal to σ per channel (the interpolation divides it by 2)
    return (np.abs(img) * 1.0).astype(np.float32)


def smooth_phantom(shape: tuple[int, int, int] = (160, 160, 24), seed: int = 0) -> np.ndarray:
    """Nested ellipsoids (scalp 0.9, GM 0.6, WM 1.0) × a smooth 5 % texture × a bias field, peak ~1000."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt((x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.5) ** 2)
    img = np.where(r < 1, 0.9, 0.0)
    img[r < 0.9] = 0.6
    img[np.sqrt((x / 0.55) ** 2 + (y / 0.65) ** 2 + (z / 1.2) ** 2) < 0.8] = 1.0
    t = ndimage.gaussian_filter(rng.standard_normal(shape), 6.0)
    return (img * (1 + 0.05 * t / t.std()) * (1 + 0.15 * x - 0.1 * y) * 1000).astype(np.float32)


def inplane_centre_high(shape: tuple[int, int, int]) -> np.ndarray:
    """σ = 30 at the edges rising to 75 at the in-plane centre (a Gaussian bump of 40 voxels), the same in every slice."""
    c = np.array(shape) / 2
    xx, yy, _ = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (30 + 45 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * 40.0**2))).astype(np.float32)
