"""4-D functional series: temporal SNR and a known activation, c2s against MP-PCA (issue 31).

**The phantom.** The b = 0 image of the DWI phantom of ``c2s_bench.dwi`` (the unseen subject pycortex S1 at 2 mm, a
T2-like contrast, 90×106×36) as the baseline, ``--volumes`` time points with a slow drift (0.5 % linear) and a block
design (10 off, 10 on) that raises the signal by ``--effect`` (2 %) in an activated region: grey matter inside a
sphere of radius 12 mm (6 voxels) in one hemisphere. Rician noise at ``--noise`` (3 %) of the baseline's 99.5th
percentile in the brain, independent per time point.

**Scores** in the brain: PSNR of the series against the clean series; temporal SNR (mean over time / standard
deviation over time of the linearly detrended series, the median over brain voxels; the clean series' own tSNR is
infinite outside the activated region, so higher is better up to the point where the activation is removed); the
activation: a GLM (block regressor, constant, linear drift) per voxel, the mean t-statistic in the activated region,
the mean estimated signal change there against the true ``--effect`` (a denoiser that smooths in time lowers it),
and the fraction of voxels outside the region with t > 3.1 (false positives; spatial smoothing spreads the activation).

Usage: python -m c2s_bench.fmri [--threads 2] [--methods noisy,dwidenoise,c2s-volumes,c2s-series]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from c2s_bench.dwi import dwidenoise, series_from_t1, t1_2mm
from c2s_bench.harness import parser, run_header, run_rows


def phantom(data: Any, volumes: int = 60, noise: float = 0.03, effect: float = 0.02, seed: int = 7) -> dict[str, Any]:
    """The clean and noisy series (X, Y, Z, T), the brain, the activated region and the design (see the docstring)."""
    from scipy import ndimage

    base = series_from_t1(t1_2mm(data / "nifti" / "pycortex_s1_t1_1mm.nii.gz"), noise=0.0)
    s0, brain = base["clean"][..., 0], base["brain"]
    design = ((np.arange(volumes) // 10) % 2).astype(np.float64)
    drift = 0.005 * np.linspace(-1, 1, volumes)
    # the activated region: grey matter (b0 between the white matter's and the CSF's) in a sphere in one hemisphere
    centre = np.array([s0.shape[0] * 0.3, s0.shape[1] * 0.6, s0.shape[2] * 0.5])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in s0.shape], indexing="ij"), -1)
    sphere = np.linalg.norm(grid - centre, axis=-1) <= 6
    smooth = ndimage.gaussian_filter(s0, 0.5)
    top = float(np.percentile(s0[brain], 99.5))
    grey = brain & (smooth > 550) & (smooth < 750)  # b0 = 1000·(1 − 0.75·T1): grey matter ≈ 650
    active = sphere & grey
    gain = 1 + drift[None, None, None, :] + effect * design[None, None, None, :] * active[..., None]
    clean = (s0[..., None] * gain).astype(np.float32)
    sigma = noise * top
    rng = np.random.default_rng(seed)
    noisy = np.sqrt((clean + sigma * rng.standard_normal(clean.shape)) ** 2
                    + (sigma * rng.standard_normal(clean.shape)) ** 2).astype(np.float32)
    return {"clean": clean, "noisy": noisy, "brain": brain, "active": active, "design": design, "sigma": sigma,
            "effect": effect, "affine": base["affine"]}


def scores(out: np.ndarray, ph: dict[str, Any]) -> dict[str, float]:
    brain, active, design = ph["brain"], ph["active"], ph["design"]
    clean = ph["clean"]
    peak = float(np.percentile(clean[..., 0][brain], 99.5))
    d = (out[brain] - clean[brain]).astype(np.float64)
    psnr = 10 * np.log10(peak**2 / np.mean(d**2))
    t = np.arange(out.shape[3], dtype=np.float64)
    x = np.stack([design, np.ones_like(t), (t - t.mean()) / t.std()], 1)  # (T, 3)
    y = out[brain].astype(np.float64).T  # (T, V)
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ beta
    dof = len(t) - x.shape[1]
    s2 = (resid**2).sum(0) / dof
    c = np.linalg.inv(x.T @ x)[0, 0]
    tstat = beta[0] / np.sqrt(s2 * c + 1e-30)
    change = beta[0] / np.maximum(beta[1], 1e-9)
    trend = x[:, 1:]  # constant and drift
    detr = y - trend @ np.linalg.lstsq(trend, y, rcond=None)[0]
    tsnr = y.mean(0) / np.maximum(detr.std(0), 1e-9)
    act = active[brain]
    return {"psnr": round(float(psnr), 3), "tsnr_median": round(float(np.median(tsnr[~act])), 2),
            "t_active_mean": round(float(tstat[act].mean()), 2),
            "change_active": round(float(change[act].mean()), 5),
            "false_positive_fraction": round(float(np.mean(tstat[~act] > 3.1)), 5)}


def run_method(name: str, ph: dict[str, Any], args: Any) -> tuple[np.ndarray, str]:
    noisy = ph["noisy"]
    if name == "noisy":
        return noisy, ""
    if name == "dwidenoise":
        out, _ = dwidenoise(noisy, ph["affine"], args.threads)
        return out, "MP-PCA, 5³ window"
    from c2s_cli.api import Denoiser

    den = Denoiser(args.model, "cpu", threads=args.threads)
    if name == "c2s-volumes":
        return den.denoise(noisy), ""
    if name == "c2s-series":
        return den.denoise_series(noisy, steps=args.series_steps), f"{args.series_steps if args.series_steps is not None else 'default'} steps, neighbours in time"
    raise SystemExit(f"unknown method {name}")


def main() -> None:
    ap = parser(__doc__, "fmri")
    ap.add_argument("--methods", default="noisy,dwidenoise,c2s-volumes,c2s-series")
    ap.add_argument("--volumes", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--effect", type=float, default=0.02)
    ap.add_argument("--series-steps", type=int, default=None, help="default: the start model's (200 or 400)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ph = phantom(args.data, args.volumes, args.noise, args.effect)
    res: dict[str, Any] = {**run_header(args.threads), "shape": list(ph["noisy"].shape), "sigma": ph["sigma"],
                           "effect": args.effect, "active_voxels": int(ph["active"].sum()), "rows": []}
    print(f"phantom {ph['noisy'].shape}, σ {ph['sigma']:.2f}, {res['active_voxels']} active voxels", flush=True)
    run_rows(res, args.methods, lambda name: run_method(name, ph, args), lambda out: scores(out, ph), args.json)


if __name__ == "__main__":
    main()
