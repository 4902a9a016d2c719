"""Does a lower eigenvalue threshold keep an fMRI activation in the series mode's prediction channel? A probe on the
fMRI phantom of :mod:`c2s_bench.fmri` built from the **training** anatomy (validation; as
:mod:`c2s_bench.fmri_context_probe`), and with ``--subject unseen`` on the scored phantom (the unseen subject).

For each margin m of the local low-rank model's threshold (m × the Marchenko–Pastur spread of pure noise;
``series.local_predictions(margin=…)``, 1.0 in the product), the GLM's scores of the prediction from the other
volumes alone (image units) and, with ``--context``, of the whole context mode (the default's training on the series
and blend) with that prediction channel. Session 21.

  python -m c2s_bench.fmri_margin_probe [--margins 1.0,0.5,0.25] [--context] [--subject validation|unseen]
"""
from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch

import c2s_bench.fmri as F
from c2s_bench.dwi import t1_2mm, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import SHARED_DATA, keep_series_context
from c2s_cli import series
from c2s_cli.api import Denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--margins", default="1.0,0.5,0.25")
    ap.add_argument("--context", action="store_true", help="also the context mode with each margin")
    ap.add_argument("--subject", choices=("validation", "unseen"), default="validation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.subject == "validation":
        mni = t1_2mm(source_file(SHARED_DATA, "mni152_2009a_t1_1mm.nii.gz"))
        F.series_from_t1 = lambda t, noise=0.0: validation_phantom(mni, 0.0)
    ph = F.phantom(SHARED_DATA)
    rows: list[dict[str, object]] = []

    def row(name: str, out: np.ndarray, seconds: float = 0.0) -> None:
        rows.append({"row": name, **F.scores(out, ph), "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)

    print(json.dumps({"subject": args.subject, "active_voxels": int(ph["active"].sum())}), flush=True)
    row("noisy", ph["noisy"])
    den = Denoiser("default", "cpu", threads=args.threads)
    original = series.local_predictions
    with keep_series_context() as cap:
        try:
            for m in (float(v) for v in args.margins.split(",")):
                series.local_predictions = functools.partial(original, margin=m)
                t0 = time.perf_counter()
                out = den.denoise_series(ph["noisy"]) if args.context else None
                dt = time.perf_counter() - t0
                if out is None:
                    den.denoise_series(ph["noisy"], steps=0, self_similarity=False)
                ctx = cap["ctx"]
                p = np.stack([d.inverse(ctx.predict(t) / np.float32(d.scale))  # type: ignore[attr-defined]
                              for t, d in enumerate(ctx.domains)], -1)  # type: ignore[attr-defined]
                row(f"prediction alone, margin {m:g}", p)
                if out is not None:
                    row(f"context mode, margin {m:g}", out, dt)
        finally:
            series.local_predictions = original
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python -m c2s_bench.fmri_margin_probe " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if v not in (None, False)),
                "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
