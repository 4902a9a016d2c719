"""σ maps of 4-D series (issue 19, item 2): MP-PCA over the volumes against the 3-D estimator of one frame, and what
each map buys in denoising, with BM4D (true RMS σ) as the anchor row.

Series: 16 volumes built from the unseen subject of `unseen.py` (pycortex S1, 256×256×48 coronal slab) as a DWI-like
low-rank series: two b0-like volumes (the scan) and 14 "diffusion-weighted" ones, each a different mix of the scan
(attenuated 0.35–0.75×), its inverted contrast inside the head and a smoothed copy — three spatial components, as
MP-PCA assumes. Two cases: every volume gets Rician noise with the same centre-high map σ(r) = a + b·exp(−r²/2·55²),
3 → 7.5 % of the scan's 99.5th percentile (as `sigma_map.py`), or stationary noise of 5 % (does the series map cost
anything when the noise is white?). A simulation: the volumes are not independent acquisitions.

Map error: median |σ̂/σ − 1| inside the head against the added noise σ_added, the noise of each noisy frame
relative to its clean frame (the target). The scan's own noise (σ_ref ≈ 1.9 %) is the same in every volume of this
simulated series, so it is part of the low-rank signal and MP-PCA over the volumes rightly does not count it; the
3-D estimator of one frame cannot tell it from the added noise. The error against √(σ_added² + σ_ref²) is printed
too.
Quality: frames 0 (b0-like) and 5 (attenuated) denoised with one σ, with each frame's 3-D estimated map, with the
series map and with the true map; PSNR / SSIM in the head mask against the clean frame (quality.py's definitions).
BM4D (true RMS σ) on the varying case's frames; on the stationary case frame 0 is `unseen.py`'s 5 % case (another
draw of the same noise), whose BM4D row is 29.65 / 0.924.

Usage:  python -m c2s_bench.sigma_map_series --data ../shared/data [--methods bm4d] [--threads 2]
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from scipy import ndimage

from c2s_bench.harness import head_mask, metrics, parser, run_header
from c2s_bench.sigma_map import centre_high, rician_map
from c2s_bench.unseen import load
from c2s_cli.api import Denoiser
from c2s_cli.noise.sigma_map import estimate_sigma_map, estimate_sigma_map_series

VOLUMES = 16
FRAMES = (0, 5)


def series(ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 16) clean DWI-like series (module doc)."""
    rng = np.random.default_rng(11)
    top = float(np.percentile(ref[mask], 99.5))
    inverted = np.where(mask, top - ref, 0).astype(np.float32)
    smooth = ndimage.gaussian_filter(ref, 2.0)
    vols = [ref, ref]
    for _ in range(VOLUMES - 2):
        a, b, c = rng.uniform(0.35, 0.75), rng.uniform(0.0, 0.25), rng.uniform(-0.15, 0.15)
        vols.append(np.maximum(a * ref + b * inverted + c * smooth, 0))
    return np.stack(vols, -1).astype(np.float32)


def main() -> None:
    ap = parser(__doc__, "sigma_map_series")
    ap.add_argument("--methods", default="bm4d", help="classical rows (bm4d, or none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref, sigma_ref = load(args.data)
    mask = head_mask(ref)
    clean = series(ref, mask)
    den = Denoiser(args.model, "cpu", threads=args.threads)
    res: dict[str, object] = {**run_header(args.threads), "precision": den.precision, "volumes": VOLUMES,
                              "frames": list(FRAMES), "maps": [], "rows": []}

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))

    cases = [("varying 3→7.5 %", centre_high(ref, mask, 0.03, 0.075), 400),
             ("stationary 5 %", np.full(ref.shape, 0.05, np.float32), 500)]
    for case, smap, seed in cases:
        noisy = np.stack([rician_map(clean[..., t], smap, seed + t) for t in range(VOLUMES)], -1)
        present = np.sqrt(smap**2 + sigma_ref**2)

        def map_row(name: str, sigma: np.ndarray, seconds: float, varying: bool) -> None:
            err = np.abs(sigma[mask] / smap[mask] - 1)
            err_present = np.abs(sigma[mask] / present[mask] - 1)
            row = {"case": case, "estimator": name, "varying": varying,
                   "median_error_pct": round(100 * float(np.median(err)), 2),
                   "p90_error_pct": round(100 * float(np.percentile(err, 90)), 2),
                   "median_error_vs_present_pct": round(100 * float(np.median(err_present)), 2),
                   "seconds": round(seconds, 2)}
            res["maps"].append(row)  # type: ignore[union-attr]
            print(f"  {case:<16} map  {name:<38} median error {row['median_error_pct']:5.2f} % "
                  f"(p90 {row['p90_error_pct']:5.2f} %; {row['median_error_vs_present_pct']:5.2f} % against "
                  f"σ_added ⊕ σ_ref)  {seconds:5.2f} s  {'varying' if varying else 'stationary'}", flush=True)
            save()

        t0 = time.perf_counter()
        est = estimate_sigma_map_series(noisy)
        map_row(f"series: MP-PCA over {VOLUMES} volumes", est.sigma, time.perf_counter() - t0, est.varying)
        per_frame = {}
        for t in FRAMES:
            t0 = time.perf_counter()
            e3 = estimate_sigma_map(noisy[..., t])
            per_frame[t] = e3.sigma
            map_row(f"frame {t}: 3-D estimator (patches)", e3.sigma, time.perf_counter() - t0, e3.varying)

        rms = float(np.sqrt(np.mean(smap[mask] ** 2)))
        for t in FRAMES:
            truth, y = clean[..., t], noisy[..., t]

            def record(method: str, out: np.ndarray, seconds: float) -> None:
                p, s = metrics(np.asarray(out, np.float32), truth, mask)
                res["rows"].append({"case": case, "frame": t, "method": method, "psnr": round(p, 2),  # type: ignore[union-attr]
                                    "ssim": round(s, 4), "seconds": round(seconds, 1)})
                print(f"  {case:<16} frame {t}  {method:<40} PSNR {p:6.2f}  SSIM {s:.4f}  {seconds:6.1f} s",
                      flush=True)
                save()

            record("noisy", y, 0.0)
            if "bm4d" in args.methods.split(",") and case.startswith("varying"):  # 6-9 min per frame here
                import bm4d

                t0 = time.perf_counter()
                record("BM4D (true RMS σ)", bm4d.bm4d(y, sigma_psd=rms), time.perf_counter() - t0)
            for method, m in (("c2s, one σ (estimated)", None), ("c2s, frame's 3-D map", per_frame[t]),
                              ("c2s, series map (MP-PCA over volumes)", est.sigma),
                              ("c2s, the true map (bound)", smap)):
                t0 = time.perf_counter()
                record(method, den.denoise(y, sigma_map=m), time.perf_counter() - t0)
    save()


if __name__ == "__main__":
    main()
