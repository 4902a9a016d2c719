"""fp32 against bf16 autocast for c2s inference, side by side in one run: time per 256² slice and PSNR / SSIM.

Input: the unseen-subject slab of `unseen.py` (pycortex S1 T1, 256×256×48) with Rician noise at 5 % and 10 %.
Each precision denoises the same noisy slab `--repeats` times in alternation (so load swings hit both); the table
keeps the median time. Also the largest output difference between batch sizes 1 and 16 under each precision (the
output must not depend on the batch size). Records the CPU capability and whether the CPU has native bf16.

Usage:  python -m c2s_bench.precision --data ../shared/data [--repeats 3] [--model default] [--threads 2]
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from c2s_bench.harness import head_mask, metrics, parser, rician, run_header
from c2s_bench.unseen import load
from c2s_cli.api import Denoiser
from c2s_cli.infer import native_bf16


def main() -> None:
    ap = parser(__doc__, "precision")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref, _ = load(args.data)
    mask = head_mask(ref)
    dens = {p: Denoiser(args.model, "cpu", threads=args.threads, precision=p) for p in ("fp32", "bf16")}
    res: dict[str, object] = {
        **run_header(args.threads),
        "native_bf16": native_bf16(torch.device("cpu")), "model": args.model, "rows": [],
    }
    rows: list[dict[str, object]] = res["rows"]  # type: ignore[assignment]
    for i, level in enumerate((0.05, 0.10)):
        noisy = rician(ref, level, seed=200 + i)  # the same noisy slabs as unseen.py
        times: dict[str, list[float]] = {p: [] for p in dens}
        outs: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for p, den in dens.items():
                t0 = time.perf_counter()
                outs[p] = den.denoise(noisy)
                times[p].append(time.perf_counter() - t0)
        for p, den in dens.items():
            psnr, ssim = metrics(outs[p], ref, mask)
            den.batch_size = 1
            one = den.denoise(noisy[:, :, :8])
            den.batch_size = 16
            many = den.denoise(noisy[:, :, :8])
            den.batch_size = None
            row = {"level": level, "precision": p, "psnr": round(psnr, 3), "ssim": round(ssim, 4),
                   "median_s": round(float(np.median(times[p])), 2), "all_s": [round(t, 2) for t in times[p]],
                   "ms_per_slice": round(1000 * float(np.median(times[p])) / noisy.shape[2], 1),
                   "batch_1_vs_16_max_abs": float(np.max(np.abs(one - many)))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
