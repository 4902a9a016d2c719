"""Quality benchmark: c2s against classical and self-supervised peers on the same slices (see benchmarks/README.md).

Cases (clean-enough references, Rician noise at σ = 5 % and 10 % of the reference's 99.5th percentile, fixed seeds):
  mni    MNI152 2009a T1 template (nilearn), axial slices z = 80…103 (the shipped weights never saw z = 70…113)
  b0     dipy S0_10slices diffusion b0 (T2-like), all 10 slices (never seen by the shipped weights)
plus a real-noise case without reference (the GE PD DICOM series): residual statistics.

Metrics, inside a head mask, on intensities divided by the clean 99.5th percentile (data range 1):
  PSNR = 10·log10(1 / MSE);  SSIM = mean over the mask of skimage's SSIM map (7×7 window, per slice).

Usage:
  python -m c2s_bench.quality --data ../shared/data --steps 300
  python -m c2s_bench.fetch_data --out /tmp/c2s_data && python -m c2s_bench.quality --data /tmp/c2s_data
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from c2s_bench.harness import RESULTS, bm3d_slices, head_mask, metrics, rician
from c2s_cli.config import PLANES, GDSMConfig, ModelConfig, RunConfig, TrainConfig
from c2s_cli.data import make_train_volume
from c2s_cli.infer import denoise_array, denoise_network_units
from c2s_cli.noise import vst
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.estimate import estimate_noise


def load_cases(data: Path) -> dict[str, np.ndarray]:
    mni = np.asarray(nib.load(str(data / "nifti" / "mni152_2009a_t1_1mm.nii.gz")).dataobj, dtype=np.float64)
    mni = mni[:, :, 80:104]
    b0 = np.asarray(nib.load(str(data / "nifti" / "dipy_b0_10slices.nii.gz")).dataobj, dtype=np.float64)
    b0 = b0[..., 0] if b0.ndim == 4 else b0
    out = {}
    for name, vol in (("mni", mni), ("b0", b0)):
        out[name] = (vol / np.percentile(vol[vol > 0], 99.5)).astype(np.float32)
    return out


def bench_cfg(steps: int, target_fraction: float = 0.0) -> RunConfig:
    return RunConfig(
        model=ModelConfig(),
        gdsm=GDSMConfig(target_fraction=target_fraction),
        train=TrainConfig(steps=steps, batch_size=8, patch_size=64, planes=("axial", "coronal", "sagittal"),
                          val_fraction=0.0, log_every=10**9, checkpoint_every=10**9),
    )


def run_case(name: str, clean: np.ndarray, sigma: float, seed: int, args: argparse.Namespace) -> list[dict]:
    from c2s_bench.models.peers import r2r_predict, train_peer
    from c2s_cli.api import Denoiser
    from c2s_cli.loop import train

    noisy = rician(clean, sigma, seed)
    mask = head_mask(clean)
    rows: list[dict] = []

    def record(method: str, out: np.ndarray, seconds: float, train_s: float = 0.0, note: str = "") -> None:
        p, s = metrics(out, clean, mask)
        rows.append({"case": name, "method": method, "psnr": round(p, 2), "ssim": round(s, 4),
                     "seconds": round(seconds, 1), "train_seconds": round(train_s, 1), "note": note})
        print(f"  {name:<12} {method:<28} PSNR {p:6.2f}  SSIM {s:.4f}  {seconds:7.1f} s  (+train {train_s:.0f} s)",
              flush=True)

    record("noisy", noisy, 0.0)
    want = set(args.methods.split(","))
    if "bm3d" in want:
        t0 = time.perf_counter()
        out = bm3d_slices(noisy, sigma)
        record("BM3D (true σ)", out, time.perf_counter() - t0)
    if "bm4d" in want:
        import bm4d

        t0 = time.perf_counter()
        record("BM4D (true σ)", np.asarray(bm4d.bm4d(noisy, sigma_psd=sigma), np.float32), time.perf_counter() - t0)
    if "nlm" in want:
        from skimage.restoration import denoise_nl_means

        t0 = time.perf_counter()
        out = np.stack([denoise_nl_means(noisy[:, :, k], h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                                         patch_distance=6) for k in range(noisy.shape[2])], axis=2)
        record("skimage NLM (true σ)", out.astype(np.float32), time.perf_counter() - t0)
    if "dipy" in want:
        from dipy.denoise.nlmeans import nlmeans

        t0 = time.perf_counter()
        out = nlmeans(noisy.astype(np.float64), sigma=sigma, rician=True)
        record("dipy nlmeans Rician (true σ)", out.astype(np.float32), time.perf_counter() - t0)

    est = estimate_noise(noisy).sigma
    models = [args.model, *filter(None, args.also.split(","))] if "zeroshot" in want else []
    dens = {model: Denoiser(model, "cpu") for model in models}
    for model, den in dens.items():
        label = "c2s zero-shot" if model == args.model else f"c2s zero-shot `--model {model}`"
        t0 = time.perf_counter()
        out = den.denoise(noisy)
        record(f"{label} (σ estimated)", out, time.perf_counter() - t0, note=f"σ̂/σ = {est / sigma:.3f}")
        if "tta" in want:
            t0 = time.perf_counter()
            record(f"{label}, --tta 8", den.denoise(noisy, tta=8), time.perf_counter() - t0,
                   note="mean over the 8 in-plane flips / transposes")
        if "planes" in want:
            t0 = time.perf_counter()
            record(f"{label}, --planes axial,coronal,sagittal", den.denoise(noisy, planes=PLANES),
                   time.perf_counter() - t0, note="mean over the three slicing planes")
        if "tta-planes" in want:
            t0 = time.perf_counter()
            record(f"{label}, --tta 8 --planes axial,coronal,sagittal", den.denoise(noisy, tta=8, planes=PLANES),
                   time.perf_counter() - t0, note="24 passes per voxel")
    if "zeroshot" in want and "adapt" in want:
        t0 = time.perf_counter()
        adapted = dens[args.model].adapted(noisy, args.adapt_steps)
        t_adapt = time.perf_counter() - t0
        t0 = time.perf_counter()
        record(f"c2s zero-shot + adapt {args.adapt_steps} steps", adapted.denoise(noisy), time.perf_counter() - t0,
               t_adapt)

    cfg = bench_cfg(args.steps)
    norm = NoiseDomain.fit(noisy, est, use_vst=True)
    tv = make_train_volume(noisy, norm, slice_axis=2, planes=cfg.train.planes, name=name)
    for method in ("noise2self", "neighbor2neighbor", "r2r", "noise2true"):
        if method not in want:
            continue
        t0 = time.perf_counter()
        clean_tv = None
        if method == "noise2true":
            target = vst.expected(clean, est) / norm.scale  # E[f(z) | ν]: what the EUI inverts
            clean_tv = [make_train_volume(target, NoiseDomain.identity(1.0), slice_axis=2, planes=("axial",), name="c")]
            noisy_axial = [make_train_volume(noisy, norm, slice_axis=2, planes=("axial",), name=name)]
            model = train_peer(method, noisy_axial, cfg, clean=clean_tv)
        else:
            model = train_peer(method, [tv], cfg)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        x = norm.forward(noisy)
        y = r2r_predict(model, x, norm.sigma_d) if method == "r2r" else denoise_network_units(model, x, norm.sigma_d)
        out = norm.inverse(y)
        label = {"noise2self": "Noise2Self", "neighbor2neighbor": "Neighbor2Neighbor", "r2r": "R2R",
                 "noise2true": "Noise2True (supervised bound)"}[method]
        record(f"{label} ({args.steps} steps)", out, time.perf_counter() - t0, t_train)
    for rho, key in ((0.0, "c2s-self"), (0.3, "c2s-dr")):
        if key not in want:
            continue
        run = Path(args.workdir) / f"{name}_{key}"
        run.mkdir(parents=True, exist_ok=True)
        cfg_r = bench_cfg(args.steps, rho)
        t0 = time.perf_counter()
        train(cfg_r, [tv], run / "m.safetensors", run, data_summary={})
        t_train = time.perf_counter() - t0
        from c2s_cli.checkpoint import load_model

        model, _, _ = load_model(run / "m.safetensors")
        t0 = time.perf_counter()
        out = denoise_array(model, noisy, est)
        label = "c2s self-trained" + (f", detail refinement ρ={rho}" if rho else "")
        record(f"{label} ({args.steps} steps)", out, time.perf_counter() - t0, t_train)
    return rows


def real_case(data: Path, model: str) -> dict:
    """Real noise without reference: residual statistics of c2s zero-shot on the GE PD series."""
    from c2s_cli.api import Denoiser, DenoiseReport  # noqa: F401
    from c2s_cli.io import read_volume

    vol, _ = read_volume(data / "dicom" / "ge_pd_brain_series")
    den = Denoiser(model, "cpu")
    rep = DenoiseReport()
    t0 = time.perf_counter()
    out = den.denoise(vol, report=rep)
    seconds = time.perf_counter() - t0
    sigma = rep.noise[0]["sigma"]
    resid = vol.data - out
    obj = ndimage.binary_erosion(ndimage.gaussian_filter(vol.data, (2, 2, 0)) > 4 * sigma, iterations=3)
    grad = np.hypot(ndimage.sobel(ndimage.gaussian_filter(out, (1, 1, 0)), 0), ndimage.sobel(ndimage.gaussian_filter(out, (1, 1, 0)), 1))
    r = resid[obj]
    corr_grad = float(np.corrcoef(np.abs(r), grad[obj])[0, 1])
    corr_img = float(np.corrcoef(r, out[obj])[0, 1])
    a, b = resid[:-1][obj[:-1] & obj[1:]], resid[1:][obj[:-1] & obj[1:]]
    acf = float(np.corrcoef(a, b)[0, 1])
    _save_residual_png(vol.data, out, resid, sigma, RESULTS / "ge_pd_residual.png")
    return {"sigma_estimate": round(sigma, 3), "sigma_method": rep.noise[0]["method"],
            "residual_std_in_object": round(float(r.std()), 3), "ratio_std_to_sigma": round(float(r.std() / sigma), 3),
            "corr_abs_residual_vs_gradient": round(corr_grad, 3), "corr_residual_vs_image": round(corr_img, 3),
            "residual_lag1_autocorrelation": round(acf, 3), "seconds": round(seconds, 1)}


def _save_residual_png(noisy: np.ndarray, out: np.ndarray, resid: np.ndarray, sigma: float, path: Path) -> None:
    from PIL import Image

    k = noisy.shape[2] // 2
    top = np.percentile(noisy, 99.5)
    panels = [np.clip(noisy[:, :, k].T / top, 0, 1), np.clip(out[:, :, k].T / top, 0, 1),
              np.clip(0.5 + resid[:, :, k].T / (6 * sigma), 0, 1)]
    img = np.concatenate(panels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with nifti/ and dicom/ (shared/data layout)")
    ap.add_argument("--steps", type=int, default=300, help="training budget (steps) of every trained method")
    ap.add_argument("--model", default="default")
    ap.add_argument("--also", default="wide", help="comma list of other shipped models scored zero-shot")
    ap.add_argument("--cases", default="mni:0.05,mni:0.10,b0:0.05,b0:0.10")
    ap.add_argument("--methods", default="bm3d,bm4d,nlm,dipy,zeroshot,tta,planes,tta-planes,adapt,noise2self,neighbor2neighbor,r2r,noise2true,c2s-self,c2s-dr")
    ap.add_argument("--adapt-steps", type=int, default=100)
    ap.add_argument("--workdir", default="/tmp/c2s_quality")
    ap.add_argument("--json", type=Path, default=RESULTS / "quality.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = load_cases(args.data)
    rows = []
    for i, spec in enumerate(args.cases.split(",")):
        name, level = spec.split(":")
        print(f"case {name} σ = {float(level):.0%}", flush=True)
        rows += run_case(f"{name} {float(level):.0%}", cases[name], float(level), 100 + i, args)
    real = real_case(args.data, args.model)
    print("real GE PD:", real)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": " ".join(["python", *sys.argv]),
        "rows": rows,
        "real_ge_pd": real,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(to_markdown(result))


def to_markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['machine']}.", "", f"Command: `{result['command']}`", "",
             "| case | method | PSNR (dB) | SSIM | denoise s | train s | note |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['seconds']} | "
                     f"{r['train_seconds'] or ''} | {r['note']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
