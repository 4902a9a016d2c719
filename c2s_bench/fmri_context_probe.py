"""Where does the fMRI context mode lose the activation? A diagnostic on the fMRI phantom of
:mod:`c2s_bench.fmri` built from the **training** anatomy (the MNI template at 2 mm, slab z 0-33, seed 7) instead of
the unseen subject: the GLM's scores of the noisy series, the context mode (default, without the self-similarity blend,
without training on the series) and of the prediction from the other volumes alone (the first context channel,
inverted to image units). Session 20; figures in ``benchmarks/notes/2026-12-03-session-20-a-faster-series-mode.md``.

  python -m c2s_bench.fmri_context_probe
"""
from __future__ import annotations

import json

import numpy as np
import torch

import c2s_bench.fmri as F
from c2s_bench.dwi import t1_2mm, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import SHARED_DATA, keep_series_context
from c2s_cli.api import Denoiser
from c2s_cli.records import DenoiseReport


def main() -> None:
    torch.set_num_threads(2)
    mni = t1_2mm(source_file(SHARED_DATA, "mni152_2009a_t1_1mm.nii.gz"))
    F.series_from_t1 = lambda t, noise=0.0: validation_phantom(mni, 0.0)
    ph = F.phantom(SHARED_DATA)
    print("active voxels", int(ph["active"].sum()), flush=True)
    den = Denoiser("default", "cpu", threads=2)
    def row(name, out):
        print(json.dumps({"row": name, **F.scores(out, ph)}), flush=True)
    row("noisy", ph["noisy"])
    rep = DenoiseReport()
    with keep_series_context() as cap:  # the series context the run built
        out = den.denoise_series(ph["noisy"], report=rep)
    row("context default", out)
    print("blend fits", [b.summary() for b in rep.blends], flush=True)
    ctx = cap["ctx"]
    P = np.stack([d.inverse(ctx.predict(t) / np.float32(d.scale)) for t, d in enumerate(ctx.domains)], -1)
    row("prediction P alone", P)
    out2 = den.denoise_series(ph["noisy"], self_similarity=False)
    row("context no blend", out2)
    out3 = den.denoise_series(ph["noisy"], steps=0, self_similarity=False)
    row("context 0 steps no blend", out3)


if __name__ == "__main__":
    main()
