"""How much of the margin over BM3D on the b0 cases is the noise draw? The b0 cases of quality.py re-drawn with other
noise seeds; BM3D (true σ) and c2s zero-shot configurations (σ estimated) on each draw; PSNR / SSIM as quality.py.

Usage: python -m c2s_bench.margin_seeds --data ../shared/data [--seeds 102,200,201,202,203] [--levels 0.05,0.10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from c2s_bench.harness import RESULTS, bm3d_slices, head_mask, metrics, rician
from c2s_bench.quality import load_cases
from c2s_cli.api import Denoiser
from c2s_cli.config import PLANES

CONFIGS = (("default", 1, 1), ("default", 1, 3), ("wide", 1, 1), ("wide", 1, 3), ("wide", 8, 3))  # model, tta, planes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", default="102,200,201,202,203")
    ap.add_argument("--levels", default="0.05,0.10")
    ap.add_argument("--json", type=Path, default=RESULTS / "margin_seeds.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    clean = load_cases(args.data)["b0"]
    mask = head_mask(clean)
    dens = {m: Denoiser(m, "cpu") for m in {c[0] for c in CONFIGS}}
    rows = []
    for level in (float(v) for v in args.levels.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            noisy = rician(clean, level, seed)
            bp, bs = metrics(bm3d_slices(noisy, level), clean, mask)
            row = {"level": level, "seed": seed, "bm3d": [round(bp, 3), round(bs, 4)]}
            for model, tta, n_planes in CONFIGS:
                p, s = metrics(dens[model].denoise(noisy, tta=tta, planes=PLANES[:n_planes]), clean, mask)
                row[f"{model} tta{tta} planes{n_planes}"] = [round(p, 3), round(s, 4), round(p - bp, 3), round(s - bs, 4)]
            rows.append(row)
            print(row, flush=True)
    summary = {}
    for level in sorted({r["level"] for r in rows}):
        sub = [r for r in rows if r["level"] == level]
        for key in sub[0]:
            if key.startswith(("default", "wide")):
                d = np.array([r[key][2] for r in sub])
                ds = np.array([r[key][3] for r in sub])
                summary[f"b0 {level:.0%} {key}"] = {"dpsnr_mean": round(float(d.mean()), 3), "dpsnr_min": round(float(d.min()), 3),
                                                   "dpsnr_max": round(float(d.max()), 3), "dssim_min": round(float(ds.min()), 4)}
    print(json.dumps(summary, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]),
                                     "weights": {m: d.sha256 for m, d in dens.items()}, "rows": rows,
                                     "summary_vs_bm3d": summary}, indent=1))


if __name__ == "__main__":
    main()
