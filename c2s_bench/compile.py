"""Is torch.compile worth it for `c2s denoise` on this CPU? Compile time of the default model against the
per-slice gain (cold inductor cache; 256² slices, batch 1, fp32 channels-last, the CPU default). Writes results/compile.json.

Usage: python -m c2s_bench.compile [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from c2s_bench.harness import RESULTS
from c2s_cli.api import Denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=RESULTS / "compile.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = Denoiser("default", "cpu").model.eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, model.cfg.in_channels, 256, 256).contiguous(memory_format=torch.channels_last)
    s = torch.full((1,), 0.05)

    def rate(f, n: int = 20) -> float:  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            f(x, s)
            t0 = time.perf_counter()
            for _ in range(n):
                f(x, s)
        return n / (time.perf_counter() - t0)

    eager = rate(model)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="c2s_inductor_")  # a cold compile, as a user gets
    t0 = time.perf_counter()
    compiled = torch.compile(model)
    with torch.inference_mode():
        compiled(x, s)
    compile_s = time.perf_counter() - t0
    fast = rate(compiled)
    saved_per_slice = 1 / eager - 1 / fast
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]),
           "eager_slices_per_s": eager, "compiled_slices_per_s": fast, "compile_seconds": compile_s,
           "slices_to_pay_back": compile_s / saved_per_slice if saved_per_slice > 0 else None}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
