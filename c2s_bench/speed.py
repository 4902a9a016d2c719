"""Speed benchmark: the machine's conv ceiling, c2s denoise throughput and end-to-end time, peers, training.

Everything is measured in one run on the same machine; results go to benchmarks/results/speed.json and a Markdown
table on stdout (copied into benchmarks/README.md).

Usage:  python -m c2s_bench.speed --data ../shared/data [--threads 2] [--bm3d-slices 8] [--train-steps 400]
        python -m c2s_bench.speed --data ../shared/data --e2e-only --isa avx2 --with-bm3d   # AVX2 kernels too

``--isa avx2`` also runs the end-to-end `c2s denoise` processes with torch's and oneDNN's kernels capped at AVX2
(``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``; c2s then runs fp32, as on a CPU without native bf16): the
AVX2 machine's code path, side by side in one run on this CPU (its clock and caches stay this CPU's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from c2s_bench.harness import RESULTS


def bench(fn, reps: int = 5, warmup: int = 2) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def conv_ceiling() -> dict[str, float | None]:
    """GFLOP/s of a 3×3 conv, 64→64 channels, batch 4 at 128×128, channels-last (fp32; bf16 if oneDNN supports it)."""
    out: dict[str, float | None] = {}
    x = torch.randn(4, 64, 128, 128).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    flops = 2 * 4 * 128 * 128 * 64 * 64 * 9
    with torch.inference_mode():
        out["fp32"] = flops / bench(lambda: conv(x)) / 1e9
        bf16_ok = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        if bf16_ok:
            xb, cb = x.bfloat16(), conv.bfloat16()
            out["bf16"] = flops / bench(lambda: cb(xb)) / 1e9
        else:
            out["bf16"] = None
    return out


def model_throughput(model_name: str) -> dict[str, object]:
    from torch.utils.flop_counter import FlopCounterMode

    from c2s_cli.api import Denoiser

    den = Denoiser(model_name, "cpu")
    m = den.model.to(memory_format=torch.channels_last)
    res: dict[str, object] = {"parameters": sum(p.numel() for p in m.parameters())}
    for size in (256, 320):
        x = torch.rand(1, m.cfg.in_channels, size, size)
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            m(x, torch.tensor([0.05]))
        flops = fc.get_total_flops()
        for batch in (1, 2, 4, 8):
            xb = torch.rand(batch, m.cfg.in_channels, size, size).contiguous(memory_format=torch.channels_last)
            s = torch.full((batch,), 0.05)
            with torch.inference_mode():
                t = bench(lambda: m(xb, s), reps=3, warmup=1)
            res[f"{size}_b{batch}"] = {"gflop_per_slice": flops / 1e9, "slices_per_s": batch / t,
                                       "gflop_per_s": flops * batch / t / 1e9}
    return res


def make_volume(data: Path, path: Path, nz: int) -> float:
    """A 256×256×nz Rician-noisy T1 volume (MNI template embedded, σ = 5 % of p99.5) written as int16 NIfTI."""
    mni = np.asarray(nib.load(str(data / "nifti" / "mni152_2009a_t1_1mm.nii.gz")).dataobj, dtype=np.float64)
    vol = np.zeros((256, 256, nz))
    src = mni[:, :, :nz] if nz <= mni.shape[2] else np.concatenate([mni, mni[:, :, : nz - mni.shape[2]]], axis=2)
    vol[30:227, 11:244] = src
    ref = np.percentile(vol[vol > 0], 99.5)
    sigma = 0.05 * ref
    rng = np.random.default_rng(0)
    noisy = np.sqrt((vol + sigma * rng.standard_normal(vol.shape)) ** 2 + (sigma * rng.standard_normal(vol.shape)) ** 2)
    scale = 1000 / ref
    nib.save(nib.Nifti1Image(np.rint(noisy * scale).astype(np.int16), np.diag([1.0, 1.0, 1.0, 1.0])), str(path))
    return float(sigma * scale)


# runs `c2s ARGS…` in this interpreter and writes its peak resident size (kB, VmHWM) to argv[1] at exit
_PEAK_AT_EXIT = """
import atexit, runpy, sys
from c2s_bench.harness import RESULTS
def _peak(path=sys.argv[1]):
    try:
        with open("/proc/self/status") as f:
            kb = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return
    with open(path, "w") as f:
        f.write(kb)
atexit.register(_peak)
sys.argv = ["c2s", *sys.argv[2:]]
runpy.run_module("c2s_cli", run_name="__main__")
"""


# the environment that caps torch's (ATen) and oneDNN's kernels at an instruction set
ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def end_to_end(inp: Path, out: Path, model: str, threads: int, extra: list[str] | None = None,
               device: str = "cpu", env: dict[str, str] | None = None) -> dict[str, object]:
    """Wall time of a `c2s denoise` process (start → file written) with its own breakdown and the peak RSS."""
    rss_file = out.with_suffix(".rss")
    # peak RSS of this process alone: its own VmHWM, read by the process itself at exit (Linux; NaN elsewhere).
    # Not getrusage's ru_maxrss: it keeps the high-water mark of the forked pre-exec image (this large process)
    cmd = [sys.executable, "-c", _PEAK_AT_EXIT, str(rss_file), "denoise", str(inp), "-o", str(out), "--force",
           "--json", "-q", "--model", model, "--device", device, "--threads", str(threads), *(extra or [])]
    rss_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    peak_kb = float(rss_file.read_text()) if rss_file.exists() else float("nan")
    rec = json.loads(r.stdout)
    secs = rec["seconds"]
    accounted = sum(v for k, v in secs.items() if k != "total")
    return {"wall_s": wall, "breakdown_s": {**secs, "startup_and_other": wall - accounted},
            "peak_rss_mb": peak_kb / 1024, "precision": rec.get("precision"), "env": env or {}}


def peers_time(noisy: np.ndarray, sigma: float, bm3d_slices: int) -> dict[str, object]:
    out: dict[str, object] = {}
    import bm3d

    ks = np.linspace(0, noisy.shape[2] - 1, bm3d_slices).astype(int)
    t0 = time.perf_counter()
    for k in ks:
        bm3d.bm3d(noisy[:, :, k], sigma_psd=sigma)
    per = (time.perf_counter() - t0) / len(ks)
    out["bm3d_s_per_slice"] = per
    out["bm3d_s_per_volume_extrapolated"] = per * noisy.shape[2]
    from dipy.denoise.nlmeans import nlmeans

    t0 = time.perf_counter()
    nlmeans(noisy, sigma=sigma, rician=True)
    out["dipy_nlmeans_s_per_volume"] = time.perf_counter() - t0
    return out


def training_speed(threads: int) -> dict[str, float]:
    from c2s_cli.config import ModelConfig, RunConfig
    from c2s_cli.data import PatchSampler, TrainVolume
    from c2s_cli.losses import GDSMLoss
    from c2s_cli.model import Precond

    cfg = RunConfig()
    t = cfg.train
    vol = np.random.default_rng(0).random((40, 160, 160)).astype(np.float32)
    tv = TrainVolume([vol], [np.ones_like(vol, bool)], [[]], 0.05, "random")
    sampler = PatchSampler([tv], patch=t.patch_size, context=cfg.model.context, augment=True)
    model = Precond(ModelConfig()).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = GDSMLoss(cfg.gdsm)
    g = torch.Generator().manual_seed(0)

    from c2s_cli.loop import optimizer_step

    params = list(model.parameters())

    def step() -> None:  # the training loop's own update (clip included), timed on its own
        y, sd, m = sampler.sample(t.batch_size, g)
        loss = loss_fn(model, y.contiguous(memory_format=torch.channels_last), sd, m, generator=g).mean()
        optimizer_step(opt, params, loss, t.grad_clip, 0)

    sec = bench(step, reps=10, warmup=3)
    return {"steps_per_s": 1 / sec, "batch": t.batch_size, "patch": t.patch_size}


def train_to_pass_bm3d(data: Path, steps: int) -> dict[str, object]:
    """Self-supervised `c2s train` from scratch on one noisy volume (the quality table's MNI 5 % case): training wall
    time until the EMA model's PSNR first exceeds BM3D's (true σ) on the same volume. PSNR is evaluated every 20
    steps; evaluation time is not counted."""
    from c2s_bench.harness import bm3d_slices, head_mask, metrics, rician
    from c2s_bench.quality import bench_cfg, load_cases
    from c2s_cli.data import make_train_volume
    from c2s_cli.infer import denoise_array
    from c2s_cli.loop import train
    from c2s_cli.noise.domain import NoiseDomain
    from c2s_cli.noise.estimate import estimate_noise

    clean = load_cases(data)["mni"]
    noisy = rician(clean, 0.05, seed=100)
    mask = head_mask(clean)
    t0 = time.perf_counter()
    ref = bm3d_slices(noisy, 0.05)
    bm3d_s = time.perf_counter() - t0
    bm3d_psnr = metrics(ref, clean, mask)[0]
    t0 = time.perf_counter()
    est = estimate_noise(noisy).sigma
    cfg = bench_cfg(steps)
    cfg = replace(cfg, train=replace(cfg.train, log_every=5))
    tv = make_train_volume(noisy, NoiseDomain.fit(noisy, est, use_vst=True), slice_axis=2, planes=cfg.train.planes,
                           name="mni")
    prep_s = time.perf_counter() - t0
    eval_s = [0.0]
    curve: list[tuple[int, float, float]] = []

    def evaluate(model) -> float:  # type: ignore[no-untyped-def]
        e0 = time.perf_counter()
        p = metrics(denoise_array(model, noisy, est), clean, mask)[0]
        eval_s[0] += time.perf_counter() - e0
        return p

    def on_log(rec: dict) -> None:
        if rec["psnr"] is not None and rec["step"] % 20 == 0:  # an evaluation tick (log_every 5 × 4)
            curve.append((rec["step"], rec["seconds"] - eval_s[0], rec["psnr"]))

    train(cfg, [tv], None, None, data_summary={}, evaluate=evaluate, on_log=on_log)
    passed = next(((st, sec) for st, sec, p in curve if p > bm3d_psnr), None)
    return {"case": "MNI slab 197×233×24, Rician σ = 5 %", "bm3d_psnr": bm3d_psnr, "bm3d_seconds": bm3d_s,
            "schedule_steps": steps, "batch": cfg.train.batch_size, "patch": cfg.train.patch_size,
            "prepare_seconds": prep_s, "first_step_above_bm3d": passed[0] if passed else None,
            "train_seconds_to_pass": (prep_s + passed[1]) if passed else None,
            "curve": [{"step": st, "train_seconds": round(sec, 1), "psnr": round(p, 2)} for st, sec, p in curve]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bm3d-slices", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=400, help="schedule length of the train-to-pass-BM3D run")
    ap.add_argument("--e2e-repeats", type=int, default=5, help="end-to-end runs of the 176-slice volume (median kept)")
    ap.add_argument("--json", type=Path, default=RESULTS / "speed.json")
    ap.add_argument("--e2e-only", action="store_true", help="only the 176-slice end-to-end runs (e.g. another model)")
    ap.add_argument("--denoise-args", default="", help='extra `c2s denoise` flags, e.g. "--planes axial,coronal,sagittal"')
    ap.add_argument("--isa", action="append", default=[], choices=sorted(ISA_CAPS),
                    help="also run the end-to-end runs with the kernels capped at this instruction set")
    ap.add_argument("--with-bm3d", action="store_true", help="with --e2e-only: BM3D's time on the same volume too")
    args = ap.parse_args()
    extra = args.denoise_args.split()
    torch.set_num_threads(args.threads)
    res: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": args.threads,
        "command": shlex.join(["python", *sys.argv]),
    }

    def repeated_end_to_end(vol: Path, tmp: str) -> None:
        """The 176-slice volume ``--e2e-repeats`` times: every run and the median one into ``res``."""
        for isa in [None, *args.isa]:
            env = ISA_CAPS[isa] if isa else None
            runs = [end_to_end(vol, Path(tmp) / "o176.nii.gz", args.model, args.threads, extra, env=env)
                    for _ in range(args.e2e_repeats)]
            key = "end_to_end_176" + (f"_isa_{isa}" if isa else "")
            res[f"{key}_runs"] = runs
            res[key] = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # the median run

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))

    if args.e2e_only:
        with tempfile.TemporaryDirectory() as tmp:
            vol = Path(tmp) / "vol176.nii.gz"
            sigma = make_volume(args.data, vol, 176)
            repeated_end_to_end(vol, tmp)
            if args.with_bm3d:
                noisy = np.asarray(nib.load(str(vol)).dataobj, dtype=np.float64)
                res["peers"] = peers_time(noisy, sigma, args.bm3d_slices)
        save()
        return
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "c2s_cli", "--help"], capture_output=True, check=True)
    res["help_s"] = time.perf_counter() - t0
    res["ceiling_gflops"] = conv_ceiling()
    res["model"] = model_throughput(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        vols = {}
        for nz in (88, 176):
            p = Path(tmp) / f"vol{nz}.nii.gz"
            vols[nz] = (p, make_volume(args.data, p, nz))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "c2s_cli", "info", str(vols[176][0]), "--no-noise", "--json"],
                       capture_output=True, check=True)
        res["info_nifti_s"] = time.perf_counter() - t0
        repeated_end_to_end(vols[176][0], tmp)
        res["end_to_end_88"] = end_to_end(vols[88][0], Path(tmp) / "o88.nii.gz", args.model, args.threads, extra)
        from c2s_cli.checkpoint import resolve_model

        mpath = resolve_model(args.model)[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "c2s_cli", "info", str(mpath), "--json"], capture_output=True, check=True)
        res["info_model_s"] = time.perf_counter() - t0
        noisy = np.asarray(nib.load(str(vols[176][0])).dataobj, dtype=np.float64)
        res["peers"] = peers_time(noisy, vols[176][1], args.bm3d_slices)
    res["training"] = training_speed(args.threads)
    res["train_to_pass_bm3d"] = train_to_pass_bm3d(args.data, args.train_steps)
    save()


if __name__ == "__main__":
    main()
