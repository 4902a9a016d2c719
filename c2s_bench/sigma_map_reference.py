"""How much of the σ-map rows' score on the unseen subject is its reference's own noise (benchmarks/README.md,
"The default for 3-D volumes").

The reference (pycortex S1, a real scan) has its own noise, which the metric counts as signal. This script estimates
that noise's map on the noise-free reference itself (`estimate_sigma_map`), then, on the cases of `sigma_map.py`
(white 3 / 4 / 5 %, centre-high 4→6 % and 3→7.5 %; seeds 300+), denoises with: one σ (the whole-scan estimate), the
estimated map, the true added map, and the noise really present (the added map combined with the reference's own
noise: flat 1.9 %, or its estimated map). If the "present" rows score like the estimated map and below the true
added map, the gap between them is the reference's, not the estimator's.

Usage:  python -m c2s_bench.sigma_map_reference --data ../shared/data [--threads 2]
"""

from __future__ import annotations

import json

import numpy as np
import torch

from c2s_bench.harness import head_mask, metrics, parser, run_header
from c2s_bench.sigma_map import centre_high, rician_map
from c2s_bench.unseen import load
from c2s_cli.api import Denoiser
from c2s_cli.noise.sigma_map import estimate_sigma_map


def main() -> None:
    args = parser(__doc__, "sigma_map_reference").parse_args()
    torch.set_num_threads(args.threads)
    ref, sigma_ref = load(args.data)
    mask = head_mask(ref)
    own = estimate_sigma_map(ref)
    res: dict[str, object] = {**run_header(args.threads), "reference_sigma_pct": round(100 * sigma_ref, 2),
                              "own_map": {"p95_p5_ratio": round(own.ratio, 2),
                                          "block_pct_p5_p50_p95": [round(100 * float(v), 2) for v in
                                                                   np.percentile(own.block_sigmas, [5, 50, 95])]},
                              "rows": []}
    print(res["own_map"], flush=True)
    den = Denoiser(args.model, "cpu", threads=args.threads)
    cases = [(f"white {p} %", np.full(ref.shape, p / 100, np.float32)) for p in (3, 4, 5)]
    cases += [("varying 4→6 %", centre_high(ref, mask, 0.04, 0.06)), ("varying 3→7.5 %", centre_high(ref, mask, 0.03, 0.075))]
    for i, (name, smap) in enumerate(cases):
        noisy = rician_map(ref, smap, 300 + i)
        est = estimate_sigma_map(noisy)
        outs = {"one σ (whole-scan)": den.denoise(noisy), "estimated map": den.denoise(noisy, sigma_map=est.sigma),
                "true added map": den.denoise(noisy, sigma_map=smap),
                "present: added + flat own": den.denoise(noisy, sigma_map=np.sqrt(smap**2 + sigma_ref**2)),
                "present: added + own map": den.denoise(noisy, sigma_map=np.sqrt(smap**2 + own.sigma**2))}
        for method, out in outs.items():
            p, s = metrics(out, ref, mask)
            res["rows"].append({"case": name, "method": method, "psnr": round(p, 2), "ssim": round(s, 4)})  # type: ignore[union-attr]
            print(f"  {name:<16} {method:<28} PSNR {p:6.2f}  SSIM {s:.4f}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
