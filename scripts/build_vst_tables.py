"""Build the variance-stabilising transform tables shipped in ``c2s_cli/noise/vst_tables.npz``.

The construction follows the published approach of Foi (ISBI 2011) but is computed here from the
moments of the Rice / non-central chi distributions; no third-party tables or code are used.

For unit noise (σ = 1) and N coils (N = 1 is Rician), with z the magnitude and ν the underlying signal:

    p(z | ν) = z^N / ν^(N-1) · exp(-(z² + ν²)/2) · I_{N-1}(z ν)        (non-central χ, 2N dof)

1. Start from f'(t) = 1 / sd(ν(t)), where ν(t) inverts the mean E[z | ν] (t below the ν = 0 mean maps
   to ν = 0).
2. Repeat: compute sd[f(z) | ν] by quadrature, divide f' at t = E[z | ν] by it (fixed-point rescaling).
3. Exact unbiased inverse table: E[f(z) | ν] on the ν grid; the inverse interpolates ν from it.

Run:  python scripts/build_vst_tables.py   (about a minute per coil count on two cores)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.special import ive

Z_MAX = 64.0
NU_MAX = 56.0
COILS = (1, 2, 4, 8)


def _pdf_matrix(z: np.ndarray, nu: np.ndarray, n: int) -> np.ndarray:
    """p(z | ν) for unit σ on the grid, shape (len(nu), len(z)), rows normalised to integrate to 1."""
    zz, vv = np.meshgrid(z, nu)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # exp(-(z-ν)²/2) · ive(N-1, zν) = exp(-(z²+ν²)/2) I_{N-1}(zν)
        log_front = n * np.log(np.maximum(zz, 1e-300)) - (n - 1) * np.log(np.maximum(vv, 1e-300))
        p = np.exp(log_front - 0.5 * (zz - vv) ** 2) * ive(n - 1, zz * vv)
    # ν = 0: central chi with 2N dof, p = z^(2N-1) exp(-z²/2) / (2^(N-1) Γ(N))
    from scipy.special import gammaln

    p0 = np.exp((2 * n - 1) * np.log(np.maximum(z, 1e-300)) - z**2 / 2 - (n - 1) * np.log(2) - gammaln(n))
    p[0] = p0
    p[:, 0] = 0.0
    p = np.nan_to_num(p)
    dz = np.gradient(z)
    p /= (p * dz).sum(axis=1, keepdims=True)
    return p * dz  # quadrature weights folded in


def build(n: int, iterations: int = 25) -> dict[str, np.ndarray]:
    z = np.linspace(0.0, Z_MAX, 6401)
    nu = np.linspace(0.0, NU_MAX, 2801)
    w = _pdf_matrix(z, nu, n)
    mean = w @ z
    sd = np.sqrt(np.maximum(w @ z**2 - mean**2, 1e-12))
    # ν(t): inverse of the mean; t below mean(0) maps to ν = 0
    nu_of_t = np.interp(z, mean, nu, left=0.0, right=None)
    nu_of_t = np.where(z > mean[-1], z - (mean[-1] - nu[-1]), nu_of_t)
    deriv = 1.0 / np.interp(nu_of_t, nu, sd)
    for _ in range(iterations):
        f = np.concatenate([[0.0], np.cumsum(0.5 * (deriv[1:] + deriv[:-1]) * np.diff(z))])
        ef = w @ f
        sdf = np.sqrt(np.maximum(w @ f**2 - ef**2, 1e-12))
        deriv = deriv / np.interp(nu_of_t, nu, sdf)
    f = np.concatenate([[0.0], np.cumsum(0.5 * (deriv[1:] + deriv[:-1]) * np.diff(z))])
    ef = w @ f
    sdf = np.sqrt(np.maximum(w @ f**2 - ef**2, 1e-12))
    # only keep the part of the table whose quadrature is not truncated by Z_MAX
    keep = nu <= NU_MAX - 8.0
    print(f"N={n}: sd[f(z)|ν] in [{sdf[keep].min():.4f}, {sdf[keep].max():.4f}] for ν ≤ {nu[keep][-1]:.0f}")
    # subsample for shipping (the functions are smooth; linear interpolation error is < 1e-4)
    zi = np.unique(np.concatenate([np.linspace(0, 8, 801), np.linspace(8, Z_MAX, 561)]))
    nui = np.unique(np.concatenate([np.linspace(0, 8, 801), np.linspace(8, nu[keep][-1], 401)]))
    return {
        f"z_{n}": zi.astype(np.float64),
        f"f_{n}": np.interp(zi, z, f),
        f"nu_{n}": nui.astype(np.float64),
        f"ef_{n}": np.interp(nui, nu, ef),
        f"sdf_{n}": np.interp(nui, nu, sdf),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "c2s_cli" / "noise" / "vst_tables.npz"
    parser.add_argument("-o", "--output", type=Path, default=default)
    args = parser.parse_args()
    tables: dict[str, np.ndarray] = {"coils": np.array(COILS)}
    for n in COILS:
        tables.update(build(n))
    np.savez_compressed(args.output, **tables)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
