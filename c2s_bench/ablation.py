"""GDSM hyper-parameter ablation (T, α, the γ-compensation β, σ_tg, 2.5D context) on a validation volume.

Each configuration trains c2s self-supervised on one noisy volume for the same budget and is scored against the
clean reference (PSNR / SSIM in a head mask, as in quality.py). The validation volume is the MNI template's slab
z = 110…133 (not the slab quality.py scores) with Rician noise σ = 7.5 % of its 99.5th percentile.

The ablation runs at U-Net widths 24-48-96-128 (the default when it was run) unless a variant says otherwise;
variants 13–16 compare widths and the pixel-unshuffle option at T = 1 (the default widths became 16-32-64-128 after
them, for speed).

Usage: python -m c2s_bench.ablation --data ../shared/data --steps 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from c2s_bench.harness import RESULTS, head_mask, metrics, rician
from c2s_bench.quality import bench_cfg
from c2s_cli.checkpoint import load_model
from c2s_cli.data import make_train_volume
from c2s_cli.infer import denoise_array
from c2s_cli.loop import train
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.estimate import estimate_noise

VARIANTS = {
    "default (T=2, α=−1, β=1, ρ=0, context 1)": {},
    "T = 1": {"tau_max": 1.0},
    "T = 4": {"tau_max": 4.0},
    "α = 0": {"alpha": 0.0},
    "β = 0 (paper's weight only)": {"gamma_power": 0.0},
    "ρ = σ_tg/σ_d = 0.3 (detail refinement)": {"target_fraction": 0.3},
    "ρ = 0.5": {"target_fraction": 0.5},
    "context 0 (2D)": {"context": 0},
    "no VST": {"vst": False},
    "T = 0.5": {"tau_max": 0.5},
    "T = 1, β = 0": {"tau_max": 1.0, "gamma_power": 0.0},
    "T = 1, β = 0, ρ = 0.3": {"tau_max": 1.0, "gamma_power": 0.0, "target_fraction": 0.3},
    "T = 1, ρ = 0.3": {"tau_max": 1.0, "target_fraction": 0.3},
    "T = 1, U-Net 24-48-96-128 at full resolution (9.9 GFLOP/256² slice)": {"tau_max": 1.0,
                                                                            "channels": (24, 48, 96, 128)},
    "T = 1, pixel-unshuffle 2, U-Net 32-64-96-128 (3.8 GFLOP)": {"tau_max": 1.0, "unshuffle": 2,
                                                                 "channels": (32, 64, 96, 128)},
    "T = 1, pixel-unshuffle 2, U-Net 32-64-128 (3.3 GFLOP)": {"tau_max": 1.0, "unshuffle": 2, "channels": (32, 64, 128)},
    "T = 1, U-Net 16-32-64-128 at full resolution (4.6 GFLOP)": {"tau_max": 1.0, "channels": (16, 32, 64, 128)},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--only", default="", help="comma-separated variant indices to run")
    ap.add_argument("--json", type=Path, default=RESULTS / "ablation.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    mni = np.asarray(nib.load(str(args.data / "nifti" / "mni152_2009a_t1_1mm.nii.gz")).dataobj, dtype=np.float64)
    clean = mni[:, :, 110:134]
    clean = (clean / np.percentile(clean[clean > 0], 99.5)).astype(np.float32)
    noisy = rician(clean, 0.075, seed=7)
    mask = head_mask(clean)
    est = estimate_noise(noisy).sigma
    rows = [{"variant": "noisy", "psnr": round(metrics(noisy, clean, mask)[0], 2),
             "ssim": round(metrics(noisy, clean, mask)[1], 4)}]
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(VARIANTS))
    for i, (name, change) in enumerate(VARIANTS.items()):
        if i not in chosen:
            continue
        cfg = bench_cfg(args.steps)
        cfg = replace(cfg, model=replace(cfg.model, channels=(24, 48, 96, 128)))
        g = {k: v for k, v in change.items() if k in ("tau_max", "alpha", "gamma_power", "target_fraction")}
        cfg = replace(cfg, gdsm=replace(cfg.gdsm, **g))
        m = {k: v for k, v in change.items() if k in ("context", "unshuffle", "channels")}
        cfg = replace(cfg, model=replace(cfg.model, **m))
        use_vst = change.get("vst", True)
        norm = NoiseDomain.fit(noisy, est, use_vst=bool(use_vst))
        tv = make_train_volume(noisy, norm, slice_axis=2, planes=cfg.train.planes, name="val")
        run = Path("/tmp/c2s_ablation") / f"v{i}"
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        train(cfg, [tv], run / "m.safetensors", run, data_summary={})
        secs = time.perf_counter() - t0
        model, _, _ = load_model(run / "m.safetensors")
        out = denoise_array(model, noisy, est, use_vst=bool(use_vst))
        p, s = metrics(out, clean, mask)
        rows.append({"variant": name, "psnr": round(p, 2), "ssim": round(s, 4), "train_s": round(secs, 1)})
        print(rows[-1], flush=True)
    if args.only and args.json.exists():  # a partial run adds to (or replaces rows of) the previous table
        old = json.loads(args.json.read_text())
        names = {r["variant"] for r in rows}
        rows = [r for r in old["rows"] if r["variant"] not in names] + rows
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]),
           "steps": args.steps, "sigma_true": 0.075, "sigma_estimated": round(est, 4), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
