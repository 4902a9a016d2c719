"""Does projecting the context mode's output onto the series' local low-rank subspace lower the FA error where the
tissue is isotropic (grey matter), with g-factor-like noise? A probe on the DWI phantom of the **training** anatomy
(:func:`c2s_bench.dwi.validation_phantom`; never the benchmark's subject), issue 31, session 21.

The projection is the product's :func:`c2s_cli.series.project_subspace` (w and ``margin`` varied): per 8³ block
(four offset grids averaged) the output, in stabilised units, moved by w towards its projection on the noisy series'
local low-rank subspace, then inverted. One JSON line per row, scored by :func:`c2s_bench.dwi.scores`. (The
session-21 results, ``benchmarks/results/dwi_project_probe_validation*.jsonl``, were made with this probe's own float64
copy of that function, written before it; the product's float32 products equal it to 8e-6 σ.)

  python -m c2s_bench.dwi_project_probe --threads 2 [--cases 0.03:2.5,0.05:1] [--margins 1,0.5] [--weights 0.5,1]
      [--orders after,before]
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from c2s_bench.dwi import scores, t1_2mm, tensor_maps, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import keep_series_context, parser, run_header
from c2s_cli import series
from c2s_cli.api import Denoiser


def main() -> None:
    ap = parser(__doc__, "dwi_project_probe")
    ap.add_argument("--cases", default="0.03:2.5,0.05:1")
    ap.add_argument("--margins", default="1,0.5")
    ap.add_argument("--weights", default="0.5,1")
    ap.add_argument("--orders", default="after", help="after,before: the projection after series.match_variance "
                                                       "(as the v1 probe) or before it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mni = t1_2mm(source_file(args.data, "mni152_2009a_t1_1mm.nii.gz"))
    den = Denoiser(args.model, "cpu", threads=args.threads)
    print(json.dumps(run_header(args.threads)), flush=True)
    with keep_series_context() as cap:
        for case in args.cases.split(","):
            run_case(den, mni, case, args, cap)


def run_case(den: Denoiser, mni: np.ndarray, case: str, args: argparse.Namespace, cap: dict[str, Any]) -> None:
    """One case "noise:gfactor": the context mode without the projection (the session-20 default), then each variant."""
    noise, g = (float(v) for v in case.split(":"))
    ph = validation_phantom(mni, noise, g)
    truth = tensor_maps(ph["clean"], ph["bvals"], ph["bvecs"], ph["brain"])
    t0 = time.perf_counter()
    raw = den.denoise_series(ph["noisy"], bvals=ph["bvals"], bvecs=ph["bvecs"], match_variance=False,
                             subspace_weight=0)
    ctx = cap["ctx"]
    groups = series.shell_groups(ph["bvals"])
    out = series.match_variance(raw.copy(), ctx, groups)  # the context mode's last step (api.Denoiser.denoise_series)
    print(json.dumps({"noise": noise, "gfactor": g, "row": "context mode (default)", **scores(out, ph, truth),
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    for order in args.orders.split(","):
        for m in (float(v) for v in args.margins.split(",")):
            for w in (float(v) for v in args.weights.split(",")):
                t0 = time.perf_counter()
                if order == "after":
                    res = series.project_subspace(out.copy(), ctx, w, margin=m)
                else:
                    res = series.match_variance(series.project_subspace(raw.copy(), ctx, w, margin=m), ctx, groups)
                print(json.dumps({"noise": noise, "gfactor": g, "row": f"projected {order} match_variance, "
                                  f"margin {m:g}, weight {w:g}", **scores(res, ph, truth),
                                  "seconds": round(time.perf_counter() - t0, 1)}), flush=True)

if __name__ == "__main__":
    main()
