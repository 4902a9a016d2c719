"""Should the series (context) mode's self-similarity blend also weigh 3×3×3 patches against 3×3 (session 22's
single-volume default)? A probe on the DWI phantom of the **training** anatomy (:func:`c2s_bench.dwi.validation_phantom`;
never the benchmark's subject): the context mode with ``config.SERIES_SELF_SIMILARITY`` replaced by each variant
``radius:depths`` (depths as digits: 1 = 3×3, 3 = 3×3×3, 13 = SURE's choice), scored by :func:`c2s_bench.dwi.scores`.
One JSON line per row. Session 22.

  python -m c2s_bench.dwi_blend_probe --threads 2 [--cases 0.03:2.5,0.05:1,0.10:1] [--variants 1:1,1:13,1:3]
"""
from __future__ import annotations

import dataclasses
import json
import time

from c2s_bench.dwi import scores, t1_2mm, tensor_maps, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import parser, start_probe
from c2s_cli import config


def main() -> None:
    ap = parser(__doc__, "dwi_blend_probe")
    ap.add_argument("--cases", default="0.03:2.5,0.05:1,0.10:1")
    ap.add_argument("--variants", default="1:1,1:13,1:3", help="radius:depths, comma-separated")
    args = ap.parse_args()
    den, head = start_probe(args)
    head.pop("rows")
    print(json.dumps(head), flush=True)
    mni = t1_2mm(source_file(args.data, "mni152_2009a_t1_1mm.nii.gz"))
    shipped = config.SERIES_SELF_SIMILARITY
    try:
        for case in args.cases.split(","):
            noise, g = (float(v) for v in case.split(":"))
            ph = validation_phantom(mni, noise, g)
            truth = tensor_maps(ph["clean"], ph["bvals"], ph["bvecs"], ph["brain"])
            for spec in args.variants.split(","):
                radius, depths = spec.split(":")
                config.SERIES_SELF_SIMILARITY = dataclasses.replace(
                    shipped, radius=int(radius), depths=tuple(int(c) for c in depths))
                t0 = time.perf_counter()
                out = den.denoise_series(ph["noisy"], bvals=ph["bvals"], bvecs=ph["bvecs"])
                print(json.dumps({"noise": noise, "gfactor": g, "variant": spec, **scores(out, ph, truth),
                                  "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    finally:
        config.SERIES_SELF_SIMILARITY = shipped


if __name__ == "__main__":
    main()
