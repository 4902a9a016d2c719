"""Zero-shot scores of one or more model files on the quality benchmark's simulated cases (σ estimated by c2s).

Used to compare candidate shipped weights (e.g. trained with T = 1 and T = 2) on the cases they never saw.
Same cases, seeds, masks and metrics as quality.py.

Usage: python -m c2s_bench.zeroshot --data ../shared/data [--tta 1,8] [--planes 1,3] MODEL [MODEL ...]
(--planes 3: the mean over the axial, coronal and sagittal slicings, as `c2s denoise --planes axial,coronal,sagittal`)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from c2s_bench.harness import RESULTS, head_mask, metrics, rician
from c2s_bench.quality import load_cases
from c2s_cli.api import Denoiser
from c2s_cli.config import PLANES

CASES = (("mni", 0.05, 100), ("mni", 0.10, 101), ("b0", 0.05, 102), ("b0", 0.10, 103))  # as quality.py numbers them


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--tta", default="1", help="comma list of --tta settings to score, e.g. 1,8")
    ap.add_argument("--planes", default="1", help="comma list of plane counts to score: 1 (axial) and/or 3 (all)")
    ap.add_argument("--json", type=Path, default=RESULTS / "zeroshot.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    clean = load_cases(args.data)
    rows = []
    for model in args.models:
        den = Denoiser(model, "cpu")
        for name, level, seed in CASES:
            noisy = rician(clean[name], level, seed)
            for n_planes in (int(n) for n in args.planes.split(",")):
                for tta in (int(t) for t in args.tta.split(",")):
                    t0 = time.perf_counter()
                    out = den.denoise(noisy, tta=tta, planes=PLANES[:n_planes])
                    p, s = metrics(out, clean[name], head_mask(clean[name]))
                    rows.append({"model": model, "sha256": den.sha256, "case": f"{name} {level:.0%}", "tta": tta,
                                 "planes": n_planes, "psnr": round(p, 2), "ssim": round(s, 4),
                                 "seconds": round(time.perf_counter() - t0, 2)})
                    print(rows[-1], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]),
                                     "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
