"""Does projecting the context mode's output onto the series' local low-rank subspace lower the FA error where the
tissue is isotropic (grey matter), with g-factor-like noise? A probe on the DWI phantom of the **training** anatomy
(:func:`c2s_bench.dwi.validation_phantom`; never the benchmark's subject), issue 31, session 21.

In each 8³ block (four offset grids averaged, as ``series.local_predictions``), the eigenvectors of the noisy
series' noise-corrected Gram matrix above ``margin`` × the Marchenko–Pastur spread (the subspace the context mode's
prediction uses; the frames and a constant row) span U; the output's block, in stabilised units (``expected`` ×
scale, as ``series.match_variance``), is replaced by out + w·(UUᵀ·out − out), then inverted. One JSON line per row,
scored by :func:`c2s_bench.dwi.scores`.

  python -m c2s_bench.dwi_project_probe --threads 2 [--cases 0.03:2.5,0.05:1] [--margins 1,0.5] [--weights 0.5,1]
      [--orders after,before]
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from c2s_bench.dwi import scores, t1_2mm, tensor_maps, validation_phantom
from c2s_bench.fetch_data import source_file
from c2s_bench.harness import parser, run_header
from c2s_cli import series
from c2s_cli.api import Denoiser


def project(out: np.ndarray, ctx: series.SeriesContext, margin: float, weight: float, block: int = 8) -> np.ndarray:
    """The output (X, Y, Z, T) moved by ``weight`` towards its projection on the noisy series' local subspace."""
    t_n = out.shape[-1]
    doms = ctx.domains
    stab = np.stack([ctx.stabilised(t) for t in range(t_n)], 0)
    zh = np.stack([d.expected(out[..., t]) * np.float32(d.scale) for t, d in enumerate(doms)], 0).astype(np.float32)
    noise_var = np.array([(d.sigma_d * d.scale) ** 2 for d in doms])
    total = np.zeros_like(zh)
    count = np.zeros(zh.shape[1:], np.float32)
    for k in range(series.PREDICTION_GRIDS):
        o = k * block // series.PREDICTION_GRIDS
        pad = [(0, 0)] + [(o, 0)] * 3
        bn = series._Blocks(np.pad(stab, pad), np.pad(ctx.valid, pad[1:]), noise_var, block, margin)
        bo = series._Blocks(np.pad(zh, pad), np.pad(ctx.valid, pad[1:]), noise_var, block, margin)
        at = torch.from_numpy(bn.a)
        gram = at @ at.mT - torch.from_numpy(bn.n_valid)[:, None, None] * torch.diag(torch.from_numpy(bn.nvar))[None]
        vals, vecs = torch.linalg.eigh(gram)
        u = vecs * (vals > torch.from_numpy(bn.thr))[:, None, :]
        proj = ((u @ u.mT) @ torch.from_numpy(bo.a))[:, :t_n].float().numpy()
        p = bn.join(proj)[:, o:, o:, o:]
        full = np.ones(zh.shape[1:], np.float32) if k == 0 else bn.join(np.ascontiguousarray(np.broadcast_to(
            (bn.n_valid >= block**3 / 2).astype(np.float32)[:, None, None], (len(bn.n_valid), 1, block**3))))[0, o:, o:, o:]
        total += p * full
        count += full
    proj_all = total / np.maximum(count, 1e-6)
    res = out.copy()
    for t, d in enumerate(doms):
        z = zh[t] + weight * (proj_all[t] - zh[t])
        res[..., t] = np.where(ctx.valid, d.inverse((z / np.float32(d.scale)).astype(np.float32)), out[..., t])
    return res


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
    cap: dict[str, series.SeriesContext] = {}
    orig = series.denoise_series

    def keep(model, ctx, **kw):  # type: ignore[no-untyped-def]
        cap["ctx"] = ctx
        return orig(model, ctx, **kw)

    series.denoise_series = keep
    for case in args.cases.split(","):
        noise, g = (float(v) for v in case.split(":"))
        ph = validation_phantom(mni, noise, g)
        truth = tensor_maps(ph["clean"], ph["bvals"], ph["bvecs"], ph["brain"])
        t0 = time.perf_counter()
        out = den.denoise_series(ph["noisy"], bvals=ph["bvals"], bvecs=ph["bvecs"], match_variance=False)
        raw = out.copy()
        ctx = cap["ctx"]
        groups = series.shell_groups(ph["bvals"])
        series.match_variance(out, ctx, groups)  # the default's last step (api.Denoiser.denoise_series)
        print(json.dumps({"noise": noise, "gfactor": g, "row": "context mode (default)", **scores(out, ph, truth),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        for order in args.orders.split(","):
            for m in (float(v) for v in args.margins.split(",")):
                for w in (float(v) for v in args.weights.split(",")):
                    t0 = time.perf_counter()
                    if order == "after":
                        res = project(out, ctx, m, w)
                    else:
                        res = series.match_variance(project(raw, ctx, m, w), ctx, groups)
                    print(json.dumps({"noise": noise, "gfactor": g, "row": f"projected {order} match_variance, "
                                      f"margin {m:g}, weight {w:g}", **scores(res, ph, truth),
                                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
