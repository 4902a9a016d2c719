"""Speed benchmark: the machine's conv ceiling, c2s denoise throughput and end-to-end time, peers, training.

Everything is measured in one run on the same machine; results go to benchmarks/results/speed.json and a Markdown
table on stdout (copied into benchmarks/README.md).

Usage:  python benchmarks/speed.py --data ../shared/data [--threads 2] [--skip-train] [--bm3d-slices 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch


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
        for batch in (1, 4, 8):
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


def end_to_end(inp: Path, out: Path, model: str, threads: int) -> dict[str, object]:
    """Wall time of a `c2s denoise` process (start → file written) with its own breakdown and the peak RSS."""
    cmd = [sys.executable, "-m", "c2s_cli", "denoise", str(inp), "-o", str(out), "--force", "--json", "-q",
           "--model", model, "--device", "cpu", "--threads", str(threads)]
    # peak RSS of this process alone: GNU time's %M (RUSAGE_CHILDREN would keep the maximum of earlier children)
    rss_file = out.with_suffix(".rss")
    timed = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd] if Path("/usr/bin/time").exists() else cmd
    t0 = time.perf_counter()
    r = subprocess.run(timed, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    peak_kb = float(rss_file.read_text().split()[-1]) if rss_file.exists() else float("nan")
    rec = json.loads(r.stdout)
    secs = rec["seconds"]
    accounted = sum(v for k, v in secs.items() if k != "total")
    return {"wall_s": wall, "breakdown_s": {**secs, "startup_and_other": wall - accounted},
            "peak_rss_mb": peak_kb / 1024}


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
    from c2s_cli.config import ModelConfig, RunConfig, TrainConfig
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

    def step() -> None:
        y, sd, m = sampler.sample(t.batch_size, g)
        loss = loss_fn(model, y.contiguous(memory_format=torch.channels_last), sd, m, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    sec = bench(step, reps=10, warmup=3)
    return {"steps_per_s": 1 / sec, "batch": t.batch_size, "patch": t.patch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bm3d-slices", type=int, default=8)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": args.threads,
        "command": " ".join(["python", *sys.argv]),
    }
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
        res["end_to_end_176"] = end_to_end(vols[176][0], Path(tmp) / "o176.nii.gz", args.model, args.threads)
        res["end_to_end_88"] = end_to_end(vols[88][0], Path(tmp) / "o88.nii.gz", args.model, args.threads)
        from c2s_cli.checkpoint import resolve_model

        mpath = resolve_model(args.model)[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "c2s_cli", "info", str(mpath), "--json"], capture_output=True, check=True)
        res["info_model_s"] = time.perf_counter() - t0
        noisy = np.asarray(nib.load(str(vols[176][0])).dataobj, dtype=np.float64)
        res["peers"] = peers_time(noisy, vols[176][1], args.bm3d_slices)
    res["training"] = training_speed(args.threads)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
