"""Variance-stabilising transform for Rician / non-central χ magnitude data and its exact unbiased inverse.

Tables are built by ``scripts/build_vst_tables.py`` from the Rice / nc-χ moments (Foi, ISBI 2011, approach;
no third-party tables). For unit noise:

* forward ``f(z)``: Var[f(z) | ν] ≈ 1 for every ν ≥ 0 (within ±3 %), so a Gaussian denoiser with σ = 1 applies;
* exact unbiased inverse ``EUI(E)``: the ν with E[f(z) | ν] = E. Applied to a denoiser's estimate of
  E[f(z) | ν] it returns an estimate of ν without the Rician bias (not ``f⁻¹``, which keeps the bias).

Both scale with σ: ``f_σ(z) = f_1(z/σ)`` (in units of σ) and ``ν = σ·EUI(E)``. σ may be a scalar or an array
broadcastable to the data (per-slice or smooth maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class _Table:
    z: NDArray[np.float64]
    f: NDArray[np.float64]
    nu: NDArray[np.float64]
    ef: NDArray[np.float64]


@lru_cache(maxsize=None)
def _table(coils: int) -> _Table:
    with resources.files("c2s_cli.noise").joinpath("vst_tables.npz").open("rb") as fh:
        data = np.load(fh)
        available = tuple(int(c) for c in data["coils"])
        if coils not in available:
            raise ValueError(f"no VST table for {coils} coils; available: {', '.join(map(str, available))}")
        return _Table(data[f"z_{coils}"], data[f"f_{coils}"], data[f"nu_{coils}"], data[f"ef_{coils}"])


def available_coils() -> tuple[int, ...]:
    """Coil counts N for which tables ship (N = 1 is Rician)."""
    with resources.files("c2s_cli.noise").joinpath("vst_tables.npz").open("rb") as fh:
        return tuple(int(c) for c in np.load(fh)["coils"])


@dataclass(frozen=True)
class _Uniform:
    """A table mapping resampled on a uniform grid (step 1/4096 in units of σ) for O(1) float32 lookups."""

    x0: float
    inv_h: float
    ys: NDArray[np.float32]
    slopes: NDArray[np.float32]

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Linear interpolation inside the table, clamped below it, slope-1 extension above it (Gaussian limit)."""
        n = self.ys.size - 1
        shape = np.shape(x)
        u = np.atleast_1d((np.asarray(x, np.float32) - np.float32(self.x0)) * np.float32(self.inv_h))
        nan = np.isnan(u)
        has_nan = bool(nan.any())
        if has_nan:  # NaN stays NaN (never an index)
            u[nan] = 0
        above = u - np.float32(n)
        np.clip(u, 0, n, out=u)
        i = np.minimum(u.astype(np.int32), n - 1)
        u -= i
        out = self.ys[i] + u * self.slopes[i]
        np.maximum(above, 0, out=above)
        out += above / np.float32(self.inv_h)
        if has_nan:
            out[nan] = np.nan
        return out.reshape(shape)


@lru_cache(maxsize=None)
def _uniform(coils: int, which: str) -> _Uniform:
    t = _table(coils)
    xs, ys = {"forward": (t.z, t.f), "inverse": (t.ef, t.nu), "expected": (t.nu, t.ef)}[which]
    n = int(np.ceil((xs[-1] - xs[0]) * 4096))
    grid = xs[0] + np.arange(n + 1) / 4096.0
    yg = np.interp(grid, xs, ys) + np.maximum(grid - xs[-1], 0.0)
    return _Uniform(float(xs[0]), 4096.0, yg.astype(np.float32), np.append(np.diff(yg), 0.0).astype(np.float32))


GH_NODES = 9  # Gauss–Hermite nodes of the averaged inverse (``inverse``'s ``spread``)


@lru_cache(maxsize=16)
def _averaged_inverse(coils: int, spread: float) -> _Uniform:
    """The exact unbiased inverse averaged over a Gaussian of std ``spread`` around its argument,
    g(e) = Σ_k w_k·max(EUI(e + spread·u_k), 0) (9-point Gauss–Hermite), tabulated once on the inverse's uniform grid
    (step 1/4096), widened by the largest node's shift on both sides: below the table every node clamps (g is
    constant), above it every node is on the slope-1 extension (g(e) = e + const), which the lookup's extensions
    reproduce. One lookup per voxel instead of nine (the series mode inverts every volume; this was 3.2 of its 25 s
    on the DWI phantom); it differs from the nine lookups by the linear interpolation of g between grid points:
    ≤ 1e-5 σ, ≤ 3e-3 σ where a node reaches the square-root kink of the inverse at the Rician floor (tested)."""
    base = _uniform(coils, "inverse")
    nodes, weights = np.polynomial.hermite_e.hermegauss(GH_NODES)
    weights = weights / weights.sum()
    shift = spread * float(np.abs(nodes).max())
    x_lo = base.x0 - shift
    x_hi = base.x0 + (base.ys.size - 1) / base.inv_h + shift
    n = int(np.ceil((x_hi - x_lo) * base.inv_h))
    grid = x_lo + np.arange(n + 1, dtype=np.float64) / base.inv_h
    g = np.zeros(n + 1, np.float64)
    for u, w in zip(nodes, weights):
        g += w * np.maximum(base((grid + spread * u).astype(np.float32)).astype(np.float64), 0.0)
    return _Uniform(float(x_lo), base.inv_h, g.astype(np.float32), np.append(np.diff(g), 0.0).astype(np.float32))


def forward(z: ArrayLike, sigma: ArrayLike, coils: int = 1) -> NDArray[np.float32]:
    """Stabilise magnitude data: returns f(z/σ), whose noise std is ≈ 1 everywhere.

    Args:
        z: magnitude data (any shape), image units, ≥ 0 (negatives are treated as 0).
        sigma: noise std per real channel, image units; scalar or broadcastable to ``z``; > 0.
        coils: effective coil count N of the nc-χ model (1 = Rician).
    Returns:
        float32 array, same shape as ``z``, in units of the noise std.
    """
    x = np.maximum(np.asarray(z, dtype=np.float32), 0) / np.asarray(sigma, dtype=np.float32)
    return _uniform(coils, "forward")(x)


def inverse(e: ArrayLike, sigma: ArrayLike, coils: int = 1, spread: float = 0.0) -> NDArray[np.float32]:
    """Exact unbiased inverse: the signal ν (image units) whose stabilised mean E[f(z) | ν] equals ``e``.

    Args:
        e: an estimate of E[f(z) | ν] (e.g. a denoised stabilised image), units of σ.
        sigma: the σ used by :func:`forward` (scalar or broadcastable).
        coils: the N used by :func:`forward`.
        spread: > 0: the inverse averaged over a Gaussian of this std (units of σ) around ``e`` — the estimate's own
            uncertainty — by 9-point Gauss–Hermite quadrature, ν = σ·E_u[EUI(e + spread·u)] (tabulated once per
            ``spread``: :func:`_averaged_inverse`). Where the inverse is
            linear (well above the Rician floor) it is the plain inverse; at the floor, an estimate below
            E[f | ν = 0] gives a small positive ν instead of exactly 0 (a signal that cannot be told from 0 is not
            known to be 0 either: a tensor fit reads exact zeros as infinite diffusivity in one direction).
    Returns:
        float32 array of ν in image units (≥ 0; with ``spread`` 0, values below E[f | ν = 0] map to 0).
    """
    e = np.asarray(e, dtype=np.float32)
    if spread < 0 or not np.isfinite(spread):
        raise ValueError(f"spread must be a finite number ≥ 0, got {spread}")
    table = _averaged_inverse(coils, float(spread)) if spread > 0 else _uniform(coils, "inverse")
    nu = table(e)  # the lookup returns a new array
    np.maximum(nu, 0, out=nu)
    return nu * np.asarray(sigma, dtype=np.float32)


def expected(nu: ArrayLike, sigma: ArrayLike, coils: int = 1) -> NDArray[np.float32]:
    """E[f(z) | ν] in units of σ: what an ideal denoiser returns in the stabilised domain (inverse of :func:`inverse`)."""
    x = np.maximum(np.asarray(nu, dtype=np.float32), 0) / np.asarray(sigma, dtype=np.float32)
    return _uniform(coils, "expected")(x)


def rice_mean(nu: ArrayLike, sigma: ArrayLike = 1.0) -> NDArray[np.float64]:
    """E[z | ν] of the Rice distribution, ``σ·sqrt(π/2)·L_{1/2}(-ν²/2σ²)`` (exact, via scaled Bessel functions)."""
    from scipy.special import ive

    s = np.asarray(sigma, dtype=np.float64)
    x = np.asarray(nu, dtype=np.float64) ** 2 / (4 * s**2)
    lag = (1 + 2 * x) * ive(0, x) + 2 * x * ive(1, x)
    return s * np.sqrt(np.pi / 2) * lag
