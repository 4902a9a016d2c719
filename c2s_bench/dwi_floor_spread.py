"""Choose the series mode's floor spread (``c2s_cli.series.FLOOR_SPREAD``) on a validation phantom (issue 31).

The DWI phantom of :mod:`c2s_bench.dwi` built from the **training** anatomy (the MNI template at 2 mm, axial slab
z 0–33, outside its held-out band; noise seed 7), never the benchmark's subject: the series mode's default with the
unbiased inverse averaged over spread 0, 0.25, 0.5 and 1 (units of σ), at 5 and 10 % noise; PSNR and tensor-fit
errors as :func:`c2s_bench.dwi.scores`. One JSON line per row.

  python -m c2s_bench.dwi_floor_spread --threads 2
  python -m c2s_bench.dwi_floor_spread --threads 2 --spreads 0.5 --self-similarity off,on   # session 19

``--self-similarity off,on``: each spread also with the self-similarity blend (``Denoiser.denoise_series``'s
``self_similarity``; the validation of whether the series mode takes it).
"""

from __future__ import annotations

import torch

from c2s_bench.dwi import scores, t1_2mm, tensor_maps, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import add_row, parser, run_header
from c2s_cli.api import Denoiser


def main() -> None:
    ap = parser(__doc__, "dwi_floor_spread")
    ap.add_argument("--spreads", default="0,0.25,0.5,1")
    ap.add_argument("--levels", default="0.05,0.10")
    ap.add_argument("--self-similarity", default="off", help="off, on, or off,on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mni = t1_2mm(source_file(args.data, "mni152_2009a_t1_1mm.nii.gz"))
    den = Denoiser(args.model, "cpu", threads=args.threads)
    res: dict[str, object] = {**run_header(args.threads), "phantom": "MNI152 2009a at 2 mm, z 0-33 (training "
                              "anatomy), series_from_t1 seed 7", "rows": []}
    for noise in (float(v) for v in args.levels.split(",")):
        ph = validation_phantom(mni, noise)
        truth = tensor_maps(ph["clean"], ph["bvals"], ph["bvecs"], ph["brain"])
        for spread in (float(v) for v in args.spreads.split(",")):
            for ss in args.self_similarity.split(","):
                out = den.denoise_series(ph["noisy"], bvals=ph["bvals"], bvecs=ph["bvecs"], floor_spread=spread,
                                         self_similarity=ss == "on")
                add_row(res, {"noise": noise, "spread": spread, "self_similarity": ss, **scores(out, ph, truth)},
                        args.json)


if __name__ == "__main__":
    main()
