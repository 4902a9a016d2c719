"""A volumetric (3-D) candidate for issue 20, fine-tuned from the shipped 2.5-D network and scored on the unseen subject.

The shipped network sees five neighbouring slices (its first convolution mixes them) and nothing further through the
plane. Here every layer becomes a 3-D convolution ("inflation", as I3D inflates 2-D ImageNet weights):

* the first convolution's 5 input channels become a (5, 3, 3) kernel over one channel, z-replicate padded: the same
  sum as the 2.5-D stack, computed for every slice at once;
* every other 3×3 kernel becomes (1, 3, 3), except at the levels in ``--z-levels`` (0 = full resolution … 3 = the
  bottleneck), where it becomes (3, 3, 3) with the 2-D kernel as its centre plane and zeros around it;
* pooling and up-sampling stay in-plane ((1, 2, 2)), FiLM broadcasts over z.

At initialisation the 3-D network therefore reproduces the 2.5-D one exactly, slice by slice (checked on the unseen
slab: the script prints the largest difference); fine-tuning with the GDSM loss on 3-D patches then lets the
zero-initialised through-plane taps learn. GDSM stays exact: every voxel of the patch is re-corrupted together and
the loss is on every voxel (the target is the patch itself). A control fine-tunes the 2.5-D network with the same
loss, steps and learning rate (``--control``), so the gain of the third dimension is separated from that of training
longer.

FLOPs relative to the 2.5-D network (per output voxel; the levels cost 1104, 1152, 1152 and 384 units):
z-levels 3: 1.20×, 0: 1.58×, 2,3: 1.81×, 1,2,3: 2.42×, 0,1,2,3: 3.0×.

Usage:
  python -m c2s_bench.volumetric train /tmp/c2s_weights/noisy ../shared/data/dicom/ge_pd_brain_series \
      -o /tmp/s11/vol.safetensors --z-levels 2,3 --steps 3000
  python -m c2s_bench.volumetric train ... --control -o /tmp/s11/control.safetensors
  python -m c2s_bench.volumetric eval --data ../shared/data --candidate /tmp/s11/vol.safetensors \
      --control-model /tmp/s11/control.safetensors
  python -m c2s_bench.volumetric speed --data ../shared/data --candidate /tmp/s11/vol.safetensors --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from c2s_bench.harness import RESULTS, SHARED_DATA
from c2s_bench.models.volumetric import (  # noqa: F401
    LEVEL_COST,
    Block3D,
    BlockSampler,
    Precond3D,
    UNet3D,
    conv_slices,
    denoise3d,
    flops_ratio,
    inflate,
    load_candidate,
)
from c2s_cli.config import PLANES


def train_main(args: argparse.Namespace) -> None:
    import dataclasses

    from c2s_cli.batch import expand
    from c2s_cli.checkpoint import resolve_model, save_model
    from c2s_cli.errors import C2SError
    from c2s_cli.io.atomic import atomic_path, check_output
    from c2s_cli.loop import train
    from c2s_cli.training import init_config, load_training_set, resolve_init

    try:  # c2s train's pre-flight: not an input, not a file c2s did not write, nothing existing without --force
        check_output(args.output, [*map(Path, args.inputs), resolve_model(args.init)[0]], force=args.force)
    except C2SError as exc:
        sys.exit(str(exc))
    torch.set_num_threads(args.threads)
    cfg = init_config(args.init)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps, lr=args.lr, seed=args.seed,
                                                             warmup=100))
    items = [(it.path, it.series) for it in expand(args.inputs, None)]
    volumes, summary = load_training_set(items, cfg)
    base, info = resolve_init(args.init)
    z_levels = tuple(int(v) for v in args.z_levels.split(",")) if args.z_levels else ()
    if args.control:  # the 2.5-D network, same loss family, steps and learning rate
        model: nn.Module = copy.deepcopy(base)
        batch = cfg.train.batch_size * args.control_batches
        sampler = None  # the loop's own 2.5-D patches
    else:
        model = Precond3D(base, z_levels)
        batch = args.batch
        sampler = BlockSampler(volumes, args.depth, args.patch, cfg.train.invert)
    # the one training loop, with the 3-D block sampler: on 3-D blocks every voxel is re-corrupted together and is a
    # target, so the GDSM loss stays exact
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch, val_fraction=0.0,
                                                             log_every=100, checkpoint_every=10**9))
    t0 = time.perf_counter()
    ema = train(cfg, volumes, None, None, data_summary=summary, init=model, sampler=sampler,
                on_log=lambda r: print(json.dumps({k: r[k] for k in ("step", "loss", "lr", "seconds")}),
                                       file=sys.stderr, flush=True)).model
    meta = {"init": info, "steps": args.steps, "lr": args.lr, "seed": args.seed,
            "wall_seconds": round(time.perf_counter() - t0, 1), "data": summary.get("description", "")}
    extra = ({"training": {**summary, "control_of_volumetric": meta}} if args.control else
             {"training": {**summary, **meta}, "volumetric": {"z_levels": list(z_levels), "depth": args.depth,
                                                              "patch": args.patch, "batch": args.batch}})
    with atomic_path(args.output) as tmp:
        save_model(tmp, ema.state_dict(), cfg, extra)
    print(f"wrote {args.output} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def eval_main(args: argparse.Namespace) -> None:
    from c2s_bench.harness import head_mask, metrics, rician, run_header
    from c2s_bench.unseen import load
    from c2s_cli.api import Denoiser
    from c2s_cli.checkpoint import load_model, resolve_model

    torch.set_num_threads(args.threads)
    ref, sigma_ref = load(args.data)
    mask = head_mask(ref)
    res: dict[str, object] = {**run_header(args.threads), "subject": "pycortex S1 T1, central 48 coronal slices "
                              "(256×256×48), unseen", "reference_sigma_pct": round(100 * sigma_ref, 2), "rows": []}
    rows: list[dict[str, object]] = res["rows"]  # type: ignore[assignment]
    from c2s_cli.infer import native_bf16

    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16(torch.device("cpu")))
    res["precision"] = "bf16" if bf16 else "fp32"
    base = Denoiser(args.model, "cpu", threads=args.threads, precision=args.precision)
    models: list[tuple[str, object]] = [("c2s default (2.5-D" + (")" if args.planes else ", one pass)"), base)]
    if args.control_model:
        models.append(("control: 2.5-D fine-tuned, same steps", Denoiser(args.control_model, "cpu",
                                                                         threads=args.threads,
                                                                         precision=args.precision)))
    if args.check_init:  # the inflated network before any training must reproduce the 2.5-D one
        init3d = Precond3D(load_model(resolve_model(args.model)[0])[0], (2, 3)).eval()
        models.append(("3-D inflated, untrained (must equal the default)", init3d))
    for cand in args.candidate:
        models.append((f"3-D candidate {Path(cand).name}", load_candidate(Path(cand))))
    if args.planes:  # view aggregation for every row: the default's --planes and each candidate along 3 axes
        models = [(f"{n}, 3 planes", m) for n, m in models if not n.startswith("3-D inflated")]
    for i, level in enumerate(float(v) for v in args.levels.split(",")):
        noisy = rician(ref, level, seed=200 + i)
        outs = {}
        if args.bm4d:  # the anchor row: BM4D given the true σ (4-5 min per level here)
            import bm4d

            t0 = time.perf_counter()
            p, s = metrics(bm4d.bm4d(noisy, sigma_psd=level).astype(np.float32), ref, mask)
            rows.append({"level": level, "method": "BM4D (true σ)", "psnr": round(p, 2), "ssim": round(s, 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{100 * level:4.0f} %  {'BM4D (true σ)':<55} PSNR {p:6.2f}  SSIM {s:.4f}", flush=True)
        for name, m in models:
            t0 = time.perf_counter()
            if isinstance(m, Denoiser):
                out = m.denoise(noisy, planes=PLANES if args.planes else ("axial",))
            else:
                out = denoise3d(m, noisy, bf16=bf16, axes=(2, 0, 1) if args.planes else None)
            dt = time.perf_counter() - t0
            outs[name] = out
            p, s = metrics(out, ref, mask)
            rows.append({"level": level, "method": name, "psnr": round(p, 2), "ssim": round(s, 4),
                         "seconds": round(dt, 1)})
            print(f"{100 * level:4.0f} %  {name:<55} PSNR {p:6.2f}  SSIM {s:.4f}  {dt:6.1f} s", flush=True)
        if args.check_init:
            diff = float(np.max(np.abs(outs[models[0][0]] - outs["3-D inflated, untrained (must equal the default)"])))
            res[f"init_max_abs_diff_{level:g}"] = diff
            print(f"      inflated vs 2.5-D: max |Δ| = {diff:.2e}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))


def speed_main(args: argparse.Namespace) -> None:
    """Side by side, alternating, ``--rounds`` times: the default's array denoise and the candidate's, on a real
    256×256×176 noisy volume (the unseen subject's central 176 coronal slices with 10 % Rician noise), same precision."""
    import nibabel as nib

    from c2s_bench.harness import rician, run_header
    from c2s_cli.api import Denoiser
    from c2s_cli.infer import native_bf16

    torch.set_num_threads(args.threads)
    v = np.asarray(nib.load(str(args.data / "nifti" / "pycortex_s1_t1_1mm.nii.gz")).dataobj, np.float32)[:, :, 40:216]
    noisy = rician(v / float(np.percentile(v[v > 0], 99.5)), 0.10, seed=7)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16(torch.device("cpu")))
    den = Denoiser(args.model, "cpu", threads=args.threads, precision=args.precision)
    cands = [(Path(c).name, load_candidate(Path(c))) for c in args.candidate]
    res: dict[str, object] = {**run_header(args.threads), "shape": list(noisy.shape), "precision":
                              "bf16" if bf16 else "fp32", "seconds": {}}
    times: dict[str, list[float]] = res["seconds"]  # type: ignore[assignment]
    for r in range(args.rounds):
        for name, run in [("c2s default (2.5-D)", lambda: den.denoise(noisy)),
                          *[(f"3-D {n}", lambda m=m: denoise3d(m, noisy, bf16=bf16)) for n, m in cands]]:
            t0 = time.perf_counter()
            run()
            times.setdefault(name, []).append(round(time.perf_counter() - t0, 2))
            print(f"round {r}: {name:<40} {times[name][-1]:6.2f} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("inputs", nargs="+")
    tr.add_argument("-o", "--output", type=Path, required=True)
    tr.add_argument("--init", default="default")
    tr.add_argument("--z-levels", default="2,3")
    tr.add_argument("--steps", type=int, default=3000)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--depth", type=int, default=16)
    tr.add_argument("--patch", type=int, default=64)
    tr.add_argument("--batch", type=int, default=2)
    tr.add_argument("--control", action="store_true", help="fine-tune the 2.5-D network instead (the control)")
    tr.add_argument("--control-batches", type=int, default=1, help="control: batch = this × the model's batch size")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument("--force", action="store_true")
    ev = sub.add_parser("eval")
    ev.add_argument("--data", type=Path, default=SHARED_DATA)
    ev.add_argument("--model", default="default")
    ev.add_argument("--candidate", action="append", default=[])
    ev.add_argument("--control-model")
    ev.add_argument("--check-init", action="store_true")
    ev.add_argument("--bm4d", action="store_true", help="add the anchor row, BM4D given the true σ")
    ev.add_argument("--planes", action="store_true", help="every row with view aggregation over the three axes")
    ev.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="every row's precision (auto: bf16 autocast where the CPU runs it natively, as c2s does)")
    ev.add_argument("--levels", default="0.05,0.10,0.15")
    ev.add_argument("--threads", type=int, default=2)
    ev.add_argument("--json", type=Path, default=RESULTS / "volumetric.json")
    sp = sub.add_parser("speed")
    sp.add_argument("--data", type=Path, default=SHARED_DATA)
    sp.add_argument("--model", default="default")
    sp.add_argument("--candidate", action="append", default=[])
    sp.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--json", type=Path, default=RESULTS / "volumetric_speed.json")
    args = ap.parse_args()
    {"train": train_main, "eval": eval_main, "speed": speed_main}[args.cmd](args)


if __name__ == "__main__":
    main()
