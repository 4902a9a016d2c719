"""Achieved GFLOP/s of the shipped network against this machine's convolution ceiling, fp32 and bf16, 1 and N threads.

* Network: the model's forward on a batch of 256² slices (FLOPs counted by torch's FlopCounterMode, one multiply-add =
  2 FLOPs), timed alone (no reading, estimation or VST).
* Ceiling: one large 3×3 convolution (64 → 64 channels, 256², batch 8, channels-last), the best case for oneDNN.
* Threads 1 and N: whether the cores are used (N-thread speed-up over 1 thread).

Each figure is the median of `--repeats` timed runs after a warm-up, all in one run. Records the CPU capability and
whether the CPU has native bf16.

Usage:  python -m c2s_bench.ceiling [--model default] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from c2s_bench.harness import RESULTS, run_header
from c2s_cli.api import Denoiser
from c2s_cli.infer import native_bf16


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", type=Path, default=RESULTS / "ceiling.json")
    args = ap.parse_args()
    from torch.utils.flop_counter import FlopCounterMode

    den = Denoiser(args.model, "cpu", precision="fp32")
    model = den.model.eval().to(memory_format=torch.channels_last)
    c_in = model.cfg.in_channels if hasattr(model.cfg, "in_channels") else 2 * model.cfg.context + 1 + model.cfg.guides
    x = torch.rand(args.batch, c_in, 256, 256).contiguous(memory_format=torch.channels_last)
    sig = torch.full((args.batch,), 0.05)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x, sig)
    net_flops = fc.get_total_flops()
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    xc = torch.rand(args.batch, 64, 256, 256).contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * args.batch * 64 * 64 * 9 * 256 * 256
    res: dict[str, object] = {
        **run_header(args.threads),
        "native_bf16": native_bf16(torch.device("cpu")), "model": args.model,
        "network_gflop_per_slice": net_flops / args.batch / 1e9,
        "rows": [],
    }
    rows: list[dict[str, object]] = res["rows"]  # type: ignore[assignment]
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        for bf16 in (False, True):
            def net() -> None:
                with torch.inference_mode():
                    model(x, sig, autocast_bf16=bf16)

            def ceiling() -> None:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    conv(xc)

            t_net, t_conv = timed(net, args.repeats), timed(ceiling, args.repeats)
            row = {"threads": threads, "precision": "bf16" if bf16 else "fp32",
                   "network_ms_per_slice": round(1000 * t_net / args.batch, 2),
                   "network_gflops": round(net_flops / t_net / 1e9, 1),
                   "conv_ceiling_gflops": round(conv_flops / t_conv / 1e9, 1)}
            row["fraction_of_ceiling"] = round(row["network_gflops"] / row["conv_ceiling_gflops"], 2)  # type: ignore[operator]
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
