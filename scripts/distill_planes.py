"""Self-distillation of multi-plane aggregation into the one-pass network (issue 20, "pseudo-3-D" lever).

The shipped model averaged over three slicing planes (``--planes axial,coronal,sagittal``) beats the same model in
one pass by ~0.35 dB on the unseen subject, at 3× the time. This script fine-tunes the one-pass model towards that
average on the *noisy training volumes*: no clean image enters, the teacher is the model's own 3-plane (× TTA) output
of each noisy 1 mm volume, in the network's units, at that volume's estimated σ_d. Each step adds

    L = L_GDSM(batch of all training volumes, as in stage 2)  +  λ · ‖D(y, σ_d) − T(y)‖² / σ_d²   (distil batch)

where the distillation batch is drawn from the volumes whose name matches ``--distill-match`` (default: the 1 mm MNI
parts; the thick-sliced volumes have no useful other planes), with the same crop, 90° rotations, flips, slice-order
reversal and intensity gain applied to the input stack and to the teacher (T scales with the gain, like the data).

The best the student can reach is E[T | 5-slice stack]; it gains where the GDSM-trained network is short of its
optimum at the operating point σ_t = σ_d (the loss there is a low-variance regression instead of a noisy one).

Usage:
  python scripts/distill_planes.py /tmp/c2s_weights/noisy ../shared/data/dicom/ge_pd_brain_series \
      --init default -o /tmp/c2s_weights/distill.safetensors [--steps 3000] [--lam 1.0] [--teacher-tta 2]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from c2s_cli.batch import expand
from c2s_cli.checkpoint import read_header, resolve_model, save_model
from c2s_cli.config import PLANES
from c2s_cli.data import PatchSampler, TrainVolume, plane_axes
from c2s_cli.errors import C2SError
from c2s_cli.infer import denoise_frame
from c2s_cli.io.atomic import atomic_path, check_output
from c2s_cli.losses import GDSMLoss
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.train import ema_update, lr_at, optimizer_step
from c2s_cli.training import init_config, load_training_set, resolve_init


def teacher(model: torch.nn.Module, v: TrainVolume, tta: int, bf16: bool) -> list[np.ndarray]:
    """The model's multi-plane (× TTA) estimate of volume ``v`` in network units, in each of ``v``'s plane layouts."""
    axes = plane_axes(v.slice_axis)
    x = np.moveaxis(v.planes[0], 0, axes[v.plane_names[0]])  # back to the (X, Y, Z) array
    out = denoise_frame(model, x, NoiseDomain.identity(v.sigma_d), axes=(0, 1, 2), passthrough=False, tta=tta,
                        bf16=bf16)
    return [np.ascontiguousarray(np.moveaxis(out, axes[p], 0)) for p in v.plane_names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--init", default="default")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lam", type=float, default=1.0, help="weight of the distillation term (0: GDSM only, a control)")
    ap.add_argument("--teacher-tta", type=int, default=2)
    ap.add_argument("--distill-match", default="mni152")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-cache", type=Path,
                    help="an .npz to keep the teachers in (reused when it exists and was made by the same model/TTA)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output (one c2s wrote)")
    args = ap.parse_args()
    init_path = resolve_model(args.init)[0]
    try:  # c2s train's pre-flight: not an input, not a file c2s did not write, nothing existing without --force
        check_output(args.output, [*map(Path, args.inputs), init_path], force=args.force)
    except C2SError as exc:
        sys.exit(str(exc))
    torch.set_num_threads(args.threads)
    cfg = init_config(args.init)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps, lr=args.lr, seed=args.seed))
    t = cfg.train
    items = [(it.path, it.series) for it in expand(args.inputs, None)]
    volumes, summary = load_training_set(items, cfg)
    init_model, init_info = resolve_init(args.init)
    t0 = time.perf_counter()
    picked = [i for i, r in enumerate(summary["items"]) if args.distill_match in r["input"]]
    if not picked:
        sys.exit(f"--distill-match {args.distill_match!r}: no training volume matches")
    dvols = [volumes[i] for i in picked]
    cache = args.teacher_cache
    made_by = f"{init_info['sha256']} tta {args.teacher_tta} volumes {[summary['items'][i]['input'] for i in picked]}"
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if str(z["made_by"]) != made_by:
                sys.exit(f"--teacher-cache {cache}: made by another model, TTA or volume list ({z['made_by']})")
            dtargets = [[z[f"{j}_{p}"] for p in range(len(v.planes))] for j, v in enumerate(dvols)]
    else:
        dtargets = [teacher(init_model.eval(), v, args.teacher_tta, bf16=False) for v in dvols]
        if cache is not None:
            np.savez(cache, made_by=np.array(made_by),
                     **{f"{j}_{p}": a for j, ts in enumerate(dtargets) for p, a in enumerate(ts)})
    print(f"teachers for {len(picked)} volumes in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed + 7)
    model = copy.deepcopy(init_model).train().to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    loss_fn = GDSMLoss(cfg.gdsm)
    gdsm_sampler = PatchSampler(volumes, patch=t.patch_size, context=cfg.model.context, augment=True, invert=t.invert)
    pairs = PatchSampler(dvols, patch=t.patch_size, context=cfg.model.context, augment=True, targets=dtargets)
    decay = 0.5 ** (1.0 / t.ema_halflife)
    run_g = run_d = float("nan")
    t0 = time.perf_counter()
    for step in range(t.steps):
        lr = lr_at(cfg, step)
        for grp in opt.param_groups:
            grp["lr"] = lr
        y, sd, mask = gdsm_sampler.sample(t.batch_size, gen)
        lm = loss_fn(model, y.contiguous(memory_format=torch.channels_last), sd, mask, generator=gen)
        loss_g = lm.sum() / mask.sum().clamp_min(1.0)
        loss = loss_g
        loss_d = torch.zeros(())
        if args.lam > 0:
            yd, td, sdd, md = pairs.sample_pairs(t.batch_size, gen)
            d = model(yd.contiguous(memory_format=torch.channels_last), sdd)
            loss_d = (md * (d - td) ** 2 / sdd.reshape(-1, 1, 1, 1) ** 2).sum() / md.sum().clamp_min(1.0)
            loss = loss_g + args.lam * loss_d
        optimizer_step(opt, params, loss, t.grad_clip, step)
        ema_update(ema, model, step, decay)
        run_g = loss_g.item() if math.isnan(run_g) else 0.98 * run_g + 0.02 * loss_g.item()
        run_d = loss_d.item() if math.isnan(run_d) else 0.98 * run_d + 0.02 * loss_d.item()
        if (step + 1) % 100 == 0:
            print(json.dumps({"step": step + 1, "gdsm": round(run_g, 5), "distill": round(run_d, 5), "lr": lr,
                              "seconds": round(time.perf_counter() - t0, 1)}), file=sys.stderr, flush=True)
    summary["init"] = init_info
    summary["distill"] = {"steps": t.steps, "lr": t.lr, "lam": args.lam, "teacher": f"init model, planes "
                          f"{','.join(PLANES)} x tta {args.teacher_tta}, network units", "volumes": len(picked),
                          "match": args.distill_match, "wall_seconds": round(time.perf_counter() - t0, 1)}
    before = json.loads(read_header(init_path)[0].get("training", "{}")).get("description", "")
    summary["description"] = (f"Self-distilled from {init_info['model']} (sha256 {init_info['sha256'][:8]}): "
                              f"{t.steps} steps of GDSM on all volumes + {args.lam:g} x the distance to that model's "
                              f"3-plane x TTA {args.teacher_tta} output on the noisy {args.distill_match} volumes (no "
                              f"clean image). Before: {before}")
    summary["steps"] = t.steps
    with atomic_path(args.output) as tmp:
        save_model(tmp, ema.state_dict(), cfg, {"training": summary})
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
