"""Validation of the series mode's prediction weight (``c2s_cli.series.PREDICTION_WEIGHT``, issue 31).

The context mode's estimate moved towards each volume's prediction from the other volumes P (the first context
channel: the local low-rank model's leave-one-out prediction), f ← f + w·(P − f) in network units before the
inverse. Scored on the DWI phantom of the **training** anatomy (:func:`c2s_bench.dwi.validation_phantom`: the MNI
template at 2 mm, slab z 0–33, noise seed 7; never the benchmark's subject) at 5 % and 10 % Rician noise and with
g-factor-like noise (3 % → 7.5 %), with :func:`c2s_bench.dwi.scores`. One JSON line per row.

The rule, written before the rows were read (session 20): the w of the lowest mean FA RMSE in the brain over the
three cases, among those whose DW PSNR is ≥ w = 0's and whose FA RMSE in white matter is ≤ w = 0's + 0.001 in every
case; a tie goes to the smaller w. Result (`results/dwi_prediction_weight_validation.jsonl`): FA brain flat
(0.0981 at w 0 and 0.1), so w stays 0.

  python -m c2s_bench.dwi_prediction_weight --threads 2 --weights 0,0.1,0.15,0.2
"""

from __future__ import annotations

import json
import time

import torch

from c2s_bench.dwi import scores, t1_2mm, tensor_maps, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import parser, run_header
from c2s_cli.api import Denoiser

CASES = ((0.05, 1.0), (0.10, 1.0), (0.03, 2.5))  # (noise, g-factor peak)


def main() -> None:
    ap = parser(__doc__, "dwi_prediction_weight")
    ap.add_argument("--weights", default="0,0.1,0.15,0.2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mni = t1_2mm(source_file(args.data, "mni152_2009a_t1_1mm.nii.gz"))
    den = Denoiser(args.model, "cpu", threads=args.threads)
    print(json.dumps(run_header(args.threads)), flush=True)
    for noise, g in CASES:
        ph = validation_phantom(mni, noise, g)
        truth = tensor_maps(ph["clean"], ph["bvals"], ph["bvecs"], ph["brain"])
        for w in (float(v) for v in args.weights.split(",")):
            t0 = time.perf_counter()
            out = den.denoise_series(ph["noisy"], bvals=ph["bvals"], bvecs=ph["bvecs"], prediction_weight=w)
            print(json.dumps({"noise": noise, "gfactor": g, "prediction_weight": w, **scores(out, ph, truth),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
