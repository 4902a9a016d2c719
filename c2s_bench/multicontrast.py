"""Multi-contrast C2S benchmark: T2-weighted target guided by a T1-weighted contrast of the same phantom.

Data: the MR Shepp–Logan phantom of the `phantominator` package (M0, T1, T2 maps, 128×128×24), contrasts simulated
as T1w = M0·(1 − exp(−TR/T1)) (TR = 0.6 s) and T2w = M0·exp(−TE/T2) (TE = 0.08 s), each scaled to a 99.5th
percentile of 1. Noise: Rician, σ = 10 % on the target, 3 % on the guide (fixed seeds).
Methods at equal budget (self-supervised on the noisy target alone; the guide is never re-corrupted):
single-contrast c2s, guided c2s; BM3D with the true σ as the floor. Metric: PSNR / SSIM in the phantom mask.

Usage: python -m c2s_bench.multicontrast --steps 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from c2s_bench.harness import RESULTS, bm3d_slices, metrics, rician
from c2s_bench.quality import bench_cfg
from c2s_cli.checkpoint import load_model
from c2s_cli.data import make_train_volume
from c2s_cli.infer import denoise_frame
from c2s_cli.loop import train
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.estimate import estimate_noise


def contrasts() -> tuple[np.ndarray, np.ndarray]:
    from phantominator import shepp_logan

    m0, t1, t2 = shepp_logan((128, 128, 24), MR=True, zlims=(-0.25, 0.25))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1w = np.nan_to_num(m0 * (1 - np.exp(-0.6 / t1)))
        t2w = np.nan_to_num(m0 * np.exp(-0.08 / t2))
    out = []
    for c in (t2w, t1w):
        out.append((c / np.percentile(c[c > 0], 99.5)).astype(np.float32))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", type=Path, default=RESULTS / "multicontrast.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    target_clean, guide_clean = contrasts()
    target = rician(target_clean, 0.10, seed=11)
    guide = rician(guide_clean, 0.03, seed=12)
    mask = target_clean > 0
    rows = []

    def record(name: str, out: np.ndarray, secs: float) -> None:
        p, s = metrics(out, target_clean, mask)
        rows.append({"method": name, "psnr": round(p, 2), "ssim": round(s, 4), "seconds": round(secs, 1)})
        print(rows[-1], flush=True)

    record("noisy", target, 0.0)
    t0 = time.perf_counter()
    record("BM3D (true σ)", bm3d_slices(target, 0.10), time.perf_counter() - t0)
    est_t, est_g = estimate_noise(target).sigma, estimate_noise(guide).sigma
    for guided in (False, True):
        cfg = bench_cfg(args.steps)
        cfg = replace(cfg, model=replace(cfg.model, guides=int(guided), guide_names=("T1w",) if guided else ()))
        norm = NoiseDomain.fit(target, est_t, use_vst=True)
        gdom = NoiseDomain.fit(guide, est_g, use_vst=True)
        gn = [gdom.forward(guide)] if guided else None
        tv = make_train_volume(target, norm, slice_axis=2, planes=cfg.train.planes, name="t2w", guides=gn)
        run = Path("/tmp/c2s_multicontrast") / ("guided" if guided else "single")
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        train(cfg, [tv], run / "m.safetensors", run, data_summary={})
        model, _, _ = load_model(run / "m.safetensors")
        out = denoise_frame(model, target, norm, guides=[(guide, gdom)] if guided else None)
        record(f"c2s {'guided by T1w' if guided else 'single-contrast'} ({args.steps} steps)", out, time.perf_counter() - t0)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
