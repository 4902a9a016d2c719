"""Spatially varying noise: c2s with a scalar σ, with the σ map it estimates (`--sigma-map auto`) and with the true
map, against BM4D / BM3D given the true RMS σ, on the unseen subject of `unseen.py` (pycortex S1, 256×256×48).

Varying cases: Rician noise whose σ is a smooth centre-high (g-factor-like) map, σ(r) = a + b·exp(−r²/2·55²) with r
the distance in voxels (1 mm) from the head's centre of mass: 3 → 7.5 % (2.5×) and 4 → 6 % (1.5×) of the 99.5th
percentile. Stationary cases: 5, 10, 15 % (the `unseen.py` noise draws), to show whether the map path regresses.

The σ-map error is measured inside the head against the noise actually present, √(σ_added² + σ_ref²), where σ_ref
≈ 1.9 % is the reference scan's own noise (`unseen.py`). PSNR / SSIM as `quality.py`, in the head mask.

Rows of c2s: `--sigma-map none` (one σ, the whole-scan estimate and its heuristics), the default of `c2s denoise`
given no noise flag (`noise.policy.choose`: the map settles a whole-scan estimate in doubt, within the do-no-harm rules),
`--sigma-map auto` (always the estimated map) and the true map.

`--subject unseen-2mm` runs them on the clean reference of `unseen.py --subject unseen-2mm` (the same subject averaged
to 2 mm, its own noise 0.68 %), the map's width halved in voxels (the same in millimetres; session 22).

`--subject mni-heldout` runs the same cases on the MNI152 template's held-out axial slab (z 70–113, 197×233×44):
a clean reference (no own noise), used to decide the default's rules. It is NOT an unseen subject (the template's
other slices are training data), so its rows are validation, not zero-shot quality.

Usage:  python -m c2s_bench.sigma_map --data ../shared/data [--methods bm4d,bm3d] [--threads 2]
        [--subject unseen|unseen-2mm|mni-heldout]
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from scipy import ndimage

from c2s_bench.harness import anchor_rows, head_mask, load_mni_heldout, metrics, parser, run_header
from c2s_bench.unseen import load, load_2mm
from c2s_cli.api import Denoiser
from c2s_cli.noise.estimate import estimate_noise
from c2s_cli.noise.sigma_map import estimate_sigma_map


def rician_map(clean: np.ndarray, sigma: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.hypot(clean + sigma * rng.standard_normal(clean.shape),
                    sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def centre_high(ref: np.ndarray, mask: np.ndarray, lo: float, hi: float, width: float = 55.0) -> np.ndarray:
    """σ(r) = lo + (hi − lo)·exp(−r²/2·width²), r in voxels from the head mask's centre of mass."""
    c = np.array(ndimage.center_of_mass(mask))
    grid = np.meshgrid(*[np.arange(n) for n in ref.shape], indexing="ij")
    r2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
    return (lo + (hi - lo) * np.exp(-r2 / (2 * width**2))).astype(np.float32)


def main() -> None:
    ap = parser(__doc__, "sigma_map")
    ap.add_argument("--methods", default="bm4d,bm3d", help="classical rows of the varying cases")
    ap.add_argument("--subject", choices=("unseen", "unseen-2mm", "mni-heldout"), default="unseen")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    want = set(args.methods.split(","))
    width = 55.0  # the map's width in 1 mm voxels
    if args.subject == "unseen":
        ref, sigma_ref = load(args.data)
    elif args.subject == "unseen-2mm":  # the clean reference: the same subject at 2 mm, the same map in millimetres
        ref, sigma_ref = load_2mm(args.data)
        width = 27.5
    else:
        ref, sigma_ref = load_mni_heldout(args.data), 0.0
    mask = head_mask(ref)
    den = Denoiser(args.model, "cpu", threads=args.threads)
    res: dict[str, object] = {
        **run_header(args.threads),
        "subject": {"unseen": "pycortex S1 T1, central 48 coronal slices (unseen)",
                    "unseen-2mm": "pycortex S1 T1 averaged to 2 mm, central 40 coronal slices (unseen, clean reference)",
                    "mni-heldout": "MNI152 2009a held-out axial slab z 70-113 (validation, not unseen)"}[args.subject],
        "precision": den.precision,
        "reference_sigma_pct": round(100 * sigma_ref, 2), "rows": [], "maps": [],
    }
    rows: list[dict[str, object]] = res["rows"]  # type: ignore[assignment]

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))

    cases = [("varying 3→7.5 %", centre_high(ref, mask, 0.03, 0.075, width), 300),
             ("varying 4→6 %", centre_high(ref, mask, 0.04, 0.06, width), 301)]
    cases += [(f"stationary {round(100 * s)} %", np.full(ref.shape, s, np.float32), 200 + i)
              for i, s in enumerate((0.05, 0.10, 0.15))]
    for name, smap, seed in cases:
        noisy = rician_map(ref, smap, seed)
        rms = float(np.sqrt(np.mean(smap[mask] ** 2)))
        present = np.sqrt(smap**2 + sigma_ref**2)

        def record(method: str, out: np.ndarray, seconds: float, note: str = "") -> None:
            p, s = metrics(np.asarray(out, np.float32), ref, mask)
            rows.append({"case": name, "method": method, "psnr": round(p, 2), "ssim": round(s, 4),
                         "seconds": round(seconds, 1), "note": note})
            print(f"  {name:<18} {method:<34} PSNR {p:6.2f}  SSIM {s:.4f}  {seconds:6.1f} s  {note}", flush=True)
            save()

        record("noisy", noisy, 0.0)
        if name.startswith("varying"):
            anchor_rows(record, noisy, rms, want, "true RMS σ")
        t0 = time.perf_counter()
        record("c2s --sigma-map none (one σ, whole-scan estimate)", den.denoise(noisy, noise="none"),
               time.perf_counter() - t0)
        t0 = time.perf_counter()
        whole = estimate_noise(noisy)
        fitted = den.fit_noise(noisy)
        out = den.denoise(noisy, fitted=fitted)
        record("c2s default (the noise policy)", out, time.perf_counter() - t0, note=f"uses {fitted.uses}")
        t0 = time.perf_counter()
        est = estimate_sigma_map(noisy)
        t_est = time.perf_counter() - t0
        err = np.abs(est.sigma[mask] / present[mask] - 1)
        res["maps"].append({"case": name, "varying": est.varying, "p95_p5_ratio": round(est.ratio, 3),  # type: ignore[union-attr]
                            "blocks": est.blocks, "median_error_pct": round(100 * float(np.median(err)), 2),
                            "p90_error_pct": round(100 * float(np.percentile(err, 90)), 2),
                            "estimate_seconds": round(t_est, 2), "default_uses": fitted.uses,
                            "whole_scan_sigma_pct": round(100 * whole.sigma, 2)})
        t0 = time.perf_counter()
        record("c2s --sigma-map auto (estimated map)", den.denoise(noisy, sigma_map=est.sigma),
               t_est + time.perf_counter() - t0,
               note=f"{'varying' if est.varying else 'stationary'}, map error median {100 * np.median(err):.1f} %")
        t0 = time.perf_counter()
        record("c2s, the true map (bound)", den.denoise(noisy, sigma_map=smap), time.perf_counter() - t0)
    save()
    print(json.dumps(res["maps"], indent=1))


if __name__ == "__main__":
    main()
