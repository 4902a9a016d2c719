"""The self-similarity blend (issue 32): SURE's per-scan weight of a non-local-means estimate, f = D + a·(NL − D).

Validation (the choice of NL's search radius and strength h): two clean references that are not the test subject —
the MNI template's held-out slab (``load_mni_heldout``) and Colin27 at 2 mm (``load_colin_2mm``, Debian
``mricron-data``) — with Rician noise at 3, 5, 10 and 15 % (seeds 200–203), σ estimated, PSNR / SSIM in the head
mask against the network's output alone. The rule, fixed before the test subject was scored with the chosen
variant: the largest mean PSNR gain over the 5 % and 10 % cases of both references among the variants whose mean SSIM
gain there is ≥ 0.

  python -m c2s_bench.selfsim --threads 2 [--colin PATH] [--variants 2:0.8,2:1.0,2:1.2,3:0.8,3:1.0,3:1.2]
      (radius:h[:depths[:max_weight]]; session 22 added the patch depths and the weight's cap)
      [--subjects mni-heldout,colin-2mm] [--levels 0.05,0.10,0.03,0.15]

``--subjects unseen-2mm`` scores the test subject (the clean 2 mm reference of ``unseen.py``); the quality table with
BM4D as the anchor row comes from ``unseen.py --subject unseen-2mm``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

import c2s_cli.api as api
from c2s_bench.harness import COLIN, add_row, head_mask, load_colin_2mm, load_mni_heldout, metrics, parser, rician, run_header
from c2s_bench.unseen import load_2mm
from c2s_cli.api import Denoiser
from c2s_cli.records import DenoiseReport


def main() -> None:
    ap = parser(__doc__, "selfsim_validation")
    ap.add_argument("--colin", type=Path, default=COLIN)
    ap.add_argument("--variants", default="2:0.8,2:1.0,2:1.2,3:0.8,3:1.0,3:1.2",
                    help="radius:h[:depths[:max_weight]] (depths 1: 3×3 patches, 3: 3×3×3, 13: SURE chooses), "
                         "comma-separated")
    ap.add_argument("--subjects", default="mni-heldout,colin-2mm")
    ap.add_argument("--levels", default="0.05,0.10,0.03,0.15")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    den = Denoiser(args.model, "cpu", threads=args.threads)
    res: dict[str, object] = {**run_header(args.threads), "model": den.name, "rows": []}
    default = api.SELF_SIMILARITY
    for subject in args.subjects.split(","):
        ref = {"mni-heldout": lambda: load_mni_heldout(args.data), "colin-2mm": lambda: load_colin_2mm(args.colin),
               "unseen-2mm": lambda: load_2mm(args.data)[0]}[subject]()
        mask = head_mask(ref)
        for i, level in enumerate(float(v) for v in args.levels.split(",")):
            noisy = rician(ref, level, seed=200 + i)
            t0 = time.perf_counter()
            p0, s0 = metrics(den.denoise(noisy, self_similarity=False), ref, mask)
            add_row(res, {"subject": subject, "level": level, "variant": "off", "psnr": round(p0, 3),
                          "ssim": round(s0, 4), "seconds": round(time.perf_counter() - t0, 2)}, args.json)
            for spec in args.variants.split(","):
                radius, h, *more = spec.split(":")  # radius:h[:depths[:max_weight]]
                # depths as digits: 1 (3×3 patches), 3 (3×3×3), 13 (SURE chooses per scan)
                extra = dict(zip(("depths", "max_weight"), (tuple(int(c) for c in more[0]), float(more[1]))
                                 if len(more) > 1 else (tuple(int(c) for c in more[0]),) if more else ()))
                api.SELF_SIMILARITY = dataclasses.replace(default, radius=int(radius), h=float(h), **extra)
                rep = DenoiseReport()
                t0 = time.perf_counter()
                p, s = metrics(den.denoise(noisy, report=rep), ref, mask)
                add_row(res, {"subject": subject, "level": level, "variant": spec, "psnr": round(p, 3),
                              "ssim": round(s, 4), "gain_db": round(p - p0, 3), "ssim_gain": round(s - s0, 4),
                              "weight": round(rep.blends[0].weight, 3), "seconds": round(time.perf_counter() - t0, 2)},
                        args.json)
            api.SELF_SIMILARITY = default


if __name__ == "__main__":
    main()
