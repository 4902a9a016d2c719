"""Noise-level estimation for MRI magnitude volumes (arrays in, numbers out).

Two estimators and their cross-check:

* **object** (always available): wavelet MAD of the finest in-plane diagonal (HH) Haar sub-band restricted to an
  eroded object mask without strong gradients, then the Koay–Basser correction iterated to a fixed point
  (Coupé et al., Med Image Anal 2010;14:483). Exact zeros and saturated voxels are excluded.
* **background** (only where a real, unmasked background exists): the mode of the local mean (Aja-Fernández et al.,
  MRI 2009) refined by the second moment of the voxels around that mode (PIESNO-like selection of noise-only
  voxels, Koay et al. JMR 2009). Reported as unavailable when the background is masked or absent.

Diagnostics: r = σ_object / σ_background and the lag-1 autocorrelation of the background flag white stationary
noise (r ≈ 1), correlated noise (interpolation), non-central χ (sum of squares over N > 1 coils) and spatially
varying noise (r > 1.1).

All σ values are the std of the noise in each real channel, in image units; they are scale-equivariant.
Axis convention: ``data`` is (X, Y, Z) with Z the slice axis (pass ``slice_axis`` otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.special import gammaln, hyp1f1

_MAD_TO_STD = 1.0 / 0.6744897501960817
OBJECT_HIGHER = 1.1  # σ_object / σ_background above this: the object reads higher (varying noise or texture)


@dataclass(frozen=True)
class NoiseEstimate:
    """Result of :func:`estimate_noise`. All σ in image units (std per real channel)."""

    sigma: float
    method: str  # "background", "object" or "user"
    coils: int = 1
    sigma_object: float | None = None
    sigma_background: float | None = None
    ratio: float | None = None  # σ_object / σ_background
    background_acf: float | None = None  # lag-1 autocorrelation of background magnitudes
    per_slice: tuple[float, ...] = ()
    slice_spread: float | None = None  # max/min of the per-slice object estimates
    slices_vary: bool = False  # the per-slice estimates differ beyond their sampling error
    background_status: str = "not computed"
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["per_slice"] = [round(v, 6) for v in self.per_slice]
        d["warnings"] = list(self.warnings)
        return d


def chi_mean(theta: NDArray[np.float64] | float, coils: int = 1) -> NDArray[np.float64]:
    """E[z]/σ of the non-central χ distribution with 2N degrees of freedom at SNR θ = ν/σ (N = 1: Rice)."""
    n = coils
    front = np.sqrt(2.0) * np.exp(gammaln(n + 0.5) - gammaln(n))
    return np.asarray(front * hyp1f1(-0.5, n, -0.5 * np.asarray(theta, dtype=np.float64) ** 2))


def koay_xi(theta: NDArray[np.float64] | float, coils: int = 1) -> NDArray[np.float64]:
    """Koay–Basser correction factor ξ(θ) = Var[z]/σ² = 2N + θ² − (E[z]/σ)² (JMR 2006;179:317)."""
    t = np.asarray(theta, dtype=np.float64)
    return 2 * coils + t**2 - chi_mean(t, coils) ** 2


@lru_cache(maxsize=16)
def _tables(coils: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """θ grid, E[z]/σ and ξ(θ) on it (computed once per coil count)."""
    grid = np.linspace(0.0, 60.0, 6001)
    return grid, chi_mean(grid, coils), koay_xi(grid, coils)


def _theta_from_mean(ratio: NDArray[np.float64], coils: int) -> NDArray[np.float64]:
    """Invert E[z]/σ = ratio for θ ≥ 0 (ratios below the ν = 0 mean give θ = 0)."""
    grid, means, _ = _tables(coils)
    return np.interp(ratio, means, grid, left=0.0, right=None) + np.where(ratio > means[-1], ratio - means[-1], 0.0)


def _xi_fast(theta: NDArray[np.float64], coils: int) -> NDArray[np.float64]:
    """ξ(θ) by table lookup (ξ → 1 for large θ)."""
    grid, _, xi = _tables(coils)
    return np.interp(theta, grid, xi, right=1.0)


def saturation_level(data: NDArray[np.floating]) -> float | None:
    """The value voxels are clipped at, if any: the maximum, when it occurs in more than max(10, 1e-4 · size) voxels."""
    flat = np.ravel(np.asarray(data), order="K")  # a view for C- or F-contiguous arrays
    step = 1 << 20  # contiguous chunks bound the temporaries
    top: float | None = None
    for i in range(0, flat.size, step):
        c = flat[i : i + step]
        fin = np.isfinite(c)
        if not fin.any():
            continue
        m = float(c.max() if fin.all() else c[fin].max())
        top = m if top is None else max(top, m)
    if top is None:
        return None
    count = sum(int(np.count_nonzero(flat[i : i + step] == top)) for i in range(0, flat.size, step))
    if top != 0 and count > max(10, 1e-4 * flat.size):
        return top
    return None


_UNSET = object()


def valid_mask(data: NDArray[np.floating], saturation: float | None | object = _UNSET) -> NDArray[np.bool_]:
    """Voxels that carry noisy signal: finite, not exactly zero, not saturated.

    ``saturation``: the clipping level from :func:`saturation_level` of the whole volume (computed from ``data``
    when not given; pass it when ``data`` is only a part of the volume).
    """
    sat = saturation_level(data) if saturation is _UNSET else saturation
    mask = np.isfinite(data) & (data != 0)
    if sat is not None:
        mask &= data != sat
    return mask


def object_mask(data: NDArray[np.floating], valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Rough object (head) mask: Otsu threshold of the in-plane smoothed image (zeros included), within valid voxels."""
    smooth = ndimage.gaussian_filter(np.where(valid, data, 0).astype(np.float32), sigma=(1.5, 1.5, 0))
    values = smooth[np.isfinite(smooth)]
    if values.size == 0:
        return np.zeros(data.shape, dtype=bool)
    hist, edges = np.histogram(values, bins=256)
    centers = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    threshold = centers[int(np.argmax(between))]
    return (smooth > threshold) & valid


def _haar_hh(data: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """In-plane Haar HH (diagonal) and LL/2 (block mean) coefficients of 2×2 blocks, per slice.

    Returns arrays of shape (X//2, Y//2, Z). For white noise of std σ, HH has std σ.
    """
    x = data[: data.shape[0] // 2 * 2, : data.shape[1] // 2 * 2].astype(np.float32, copy=False)
    a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    return (a - b - c + d) / 2.0, (a + b + c + d) / 4.0


def _block_all(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    m = mask[: mask.shape[0] // 2 * 2, : mask.shape[1] // 2 * 2]
    return m[0::2, 0::2] & m[0::2, 1::2] & m[1::2, 0::2] & m[1::2, 1::2]


def _object_sigma(hh: NDArray[np.float64], signal: NDArray[np.float64], coils: int) -> float:
    """MAD of HH coefficients with the Koay fixed point over the local SNR of each block."""
    sigma_m = float(np.median(np.abs(hh)) * _MAD_TO_STD)
    if sigma_m <= 0:
        return 0.0
    sigma = sigma_m
    for _ in range(30):
        theta = _theta_from_mean(signal / sigma, coils)
        # the magnitude noise std is sqrt(ξ)·σ; the pooled MAD mixes blocks of different SNR
        new = sigma_m / np.sqrt(np.mean(_xi_fast(theta, coils)))
        if abs(new - sigma) < 1e-6 * sigma:
            sigma = new
            break
        sigma = new
    return float(sigma)


def _background(data: NDArray[np.floating], obj: NDArray[np.bool_], coils: int) -> tuple[float | None, float | None, str]:
    """Background σ, lag-1 autocorrelation and a status string."""
    outside = ~ndimage.binary_dilation(obj, structure=np.ones((7, 7, 1), bool))
    n_out = int(np.count_nonzero(outside))
    zeros_out = int(np.count_nonzero(outside & (data == 0)))
    if n_out < 1000:
        return None, None, "unavailable: no background outside the object"
    cand = outside & np.isfinite(data) & (data != 0)
    core = ndimage.binary_erosion(cand, structure=np.ones((5, 5, 1), bool))
    if np.count_nonzero(core) < max(1000, 0.005 * data.size):
        # zeros where the scanner or a tool masked the air: what is left of the background is too little
        masked = zeros_out > 0.3 * n_out
        return None, None, "unavailable: " + ("background masked to zero" if masked else "too little background")
    x = np.where(cand, data, 0).astype(np.float64)
    local_mean = ndimage.uniform_filter(x, size=(5, 5, 1))
    values = local_mean[core]
    top = np.quantile(values, 0.9) * 2
    hist, edges = np.histogram(values, bins=400, range=(0, top))
    hist = ndimage.gaussian_filter1d(hist.astype(np.float64), 2)
    k = int(np.argmax(hist))
    if k == 0:
        return None, None, "unavailable: background histogram peaks at zero"
    y0, y1, y2 = hist[k - 1], hist[k], hist[min(k + 1, hist.size - 1)]
    denom = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    mode = edges[0] + (k + 0.5 + shift) * (edges[1] - edges[0])
    c0 = float(chi_mean(0.0, coils))
    sigma0 = mode / c0
    # refine: second moment of the noise-only voxels around the mode (E[z²] = 2Nσ² at ν = 0)
    sd_mean = sigma0 * np.sqrt(koay_xi(0.0, coils) / 25.0)
    sel = core & (np.abs(local_mean - mode) < 3 * sd_mean)
    if np.count_nonzero(sel) < 500:
        return None, None, "unavailable: too few noise-only voxels"
    local_m2 = ndimage.uniform_filter(x**2, size=(5, 5, 1))
    sigma = float(np.sqrt(np.mean(local_m2[sel]) / (2 * coils)))
    # lag-1 autocorrelation along both in-plane axes, over noise-only neighbours
    z = np.where(sel, x - np.mean(x[sel]), 0.0)
    acfs = []
    for axis in (0, 1):
        a = np.take(z, range(z.shape[axis] - 1), axis=axis)
        b = np.take(z, range(1, z.shape[axis]), axis=axis)
        both = np.take(sel, range(z.shape[axis] - 1), axis=axis) & np.take(sel, range(1, z.shape[axis]), axis=axis)
        if np.count_nonzero(both) > 100:
            acfs.append(float(np.sum(a[both] * b[both]) / np.sqrt(np.sum(a[both] ** 2) * np.sum(b[both] ** 2))))
    acf = float(np.mean(acfs)) if acfs else None
    return sigma, acf, "available (partly zeroed)" if zeros_out > 0.3 * n_out else "available"


def estimate_noise(
    data: NDArray[np.floating],
    *,
    coils: int = 1,
    slice_axis: int = 2,
    per_slice: bool = True,
    max_voxels: int = 1_000_000,
) -> NoiseEstimate:
    """Estimate the noise std of a magnitude volume.

    Args:
        data: (X, Y, Z) or (X, Y) magnitude image, any non-negative units (float or integer).
        coils: effective coil count N of the non-central χ model (1 = Rician: single coil, adaptive combine, SENSE).
        slice_axis: the through-plane axis; wavelet coefficients are taken in the other two axes.
        per_slice: also return per-slice object estimates and their spread.
        max_voxels: estimate on evenly spaced slices holding at most about this many voxels (at least 8 slices;
            bounds memory and time on big volumes).
    Returns:
        A :class:`NoiseEstimate`; ``sigma`` is the background estimate when it is available and not below the object
        estimate (white noise; when the object estimate is higher the lower one is kept, with a warning), otherwise
        the object estimate.
    Raises:
        ValueError: when the volume has too few valid voxels to estimate anything.
    """
    x = np.asarray(data)
    if x.ndim == 2:
        x = x[:, :, None]
        slice_axis = 2
    if x.ndim != 3:
        raise ValueError(f"expected a 2D or 3D array, got shape {x.shape}")
    x = np.moveaxis(x, slice_axis, 2)
    max_slices = max(8, max_voxels // (x.shape[0] * x.shape[1]))
    if x.shape[2] > max_slices:
        x = x[:, :, np.linspace(0, x.shape[2] - 1, max_slices).round().astype(int)]
    x = x.astype(np.float32, copy=False)
    valid = valid_mask(x)
    if np.count_nonzero(valid) < 64:
        raise ValueError("too few non-zero voxels to estimate the noise")
    obj = object_mask(x, valid)
    eroded = ndimage.binary_erosion(obj, structure=np.ones((5, 5, 1), bool))
    if np.count_nonzero(eroded) < 256:
        eroded = obj
    smooth = ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0))
    grad = np.hypot(ndimage.sobel(smooth, axis=0), ndimage.sobel(smooth, axis=1))
    if np.any(eroded):
        eroded &= grad <= np.median(grad[eroded])
    hh, _ = _haar_hh(x)
    blocks = _block_all(eroded)
    local_signal = _haar_hh(smooth)[1]
    if np.count_nonzero(blocks) < 50:
        blocks = _block_all(valid)
    if np.count_nonzero(blocks) < 50:
        raise ValueError("too few valid voxels in the object to estimate the noise")
    sigma_obj = _object_sigma(hh[blocks], local_signal[blocks], coils)

    slices: list[float] = []
    counts: list[int] = []
    if per_slice and x.shape[2] > 1:
        for k in range(x.shape[2]):
            b = blocks[:, :, k]
            if np.count_nonzero(b) >= 200:
                slices.append(_object_sigma(hh[:, :, k][b], local_signal[:, :, k][b], coils))
                counts.append(int(np.count_nonzero(b)))
    spread = float(max(slices) / min(slices)) if len(slices) >= 2 and min(slices) > 0 else None
    # per-slice variation beyond what the estimator's own sampling error explains (MAD: SE ≈ 1.67/√n)
    varying = False
    if len(slices) >= 3:
        cv = float(np.std(slices) / np.mean(slices))
        varying = cv > max(0.1, 2.5 * 1.67 / np.sqrt(np.median(counts)))

    sigma_bg, acf, status = _background(x, obj, coils)
    warnings: list[str] = []
    ratio = sigma_obj / sigma_bg if sigma_bg else None
    method, sigma = "object", sigma_obj
    if ratio is not None:
        if acf is not None and acf > 0.15:
            warnings.append(
                f"background noise is spatially correlated (lag-1 autocorrelation {acf:.2f}; interpolation or "
                "k-space filtering): the estimates are less reliable"
            )
            method, sigma = "background", sigma_bg
        elif ratio < 0.8 and status != "available":
            # what is left of a zeroed background is the scanner's or a tool's processing, not plain coil noise
            warnings.append(
                f"the background, partly zeroed, reads {1 / ratio:.2f}× the object's noise (artefacts or processing "
                "there): σ from the object")
        elif ratio < 0.8:
            warnings.append(
                f"σ_object/σ_background = {ratio:.2f} with white background noise: the background looks non-central χ "
                "(sum of squares over several coils); pass --noise-coils N"
            )
        else:
            if ratio > OBJECT_HIGHER:
                # Fine texture inside the object (low resolution, diffusion b0) inflates the wavelet estimate as much
                # as spatially varying noise (parallel imaging) does, and a ratio cannot tell them apart. The
                # background estimate is the conservative choice: it may leave noise, it does not smooth anatomy away.
                warnings.append(
                    f"σ_object/σ_background = {ratio:.2f}: fine texture or noise stronger inside the object (parallel "
                    "imaging?); the whole-scan σ is the lower, background estimate (c2s denoise lets a σ map decide "
                    "unless --sigma-map none; --sigma sets σ)"
                )
            method, sigma = "background", float(sigma_bg)  # type: ignore[arg-type]
    else:
        warnings.append(f"no background estimate ({status.removeprefix('unavailable: ')}); σ from the object only")
    if varying and spread is not None:
        warnings.append(f"per-slice noise estimates differ by a factor {spread:.2f}: noise may vary across slices")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"the estimate is {sigma} (too little usable signal)")
    return NoiseEstimate(
        sigma=float(sigma),
        method=method,
        coils=coils,
        sigma_object=float(sigma_obj),
        sigma_background=sigma_bg,
        ratio=ratio,
        background_acf=acf,
        per_slice=tuple(slices),
        slice_spread=spread,
        slices_vary=bool(varying and spread is not None),
        background_status=status,
        warnings=tuple(warnings),
    )
