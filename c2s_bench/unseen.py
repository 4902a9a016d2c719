"""Zero-shot quality on a subject no training stage saw, with BM4D (true σ) as the anchor row.

Subject: pycortex "S1" (a real single-subject 1 mm T1 head, FreeSurfer-conformed, 8-bit, air zeroed; `../shared/data`,
see its MANIFEST). No c2s weights were trained on it, in any form: the shipped weights' data is listed in
`weights/README.md` (MNI152 slices, dipy, ITK, BrainWeb-free), and this subject is reserved as a test subject.
Colin27 is not used here (reserved for independent evaluation).

The reference is the scan itself, which has its own noise: c2s's estimator gives σ_ref ≈ 1.9 % of the 99.5th
percentile inside the head (the script prints its figure). Rician noise is added at 5 %, 10 % and 15 % of that
percentile (fixed seeds); at 5 % the reference's own noise is ~0.37× the added noise, so that column caps every
method's score and the 10 % and 15 % columns are the meaningful ones.

Slab: the central 48 coronal slices (the conformed volume's third axis), 256×256×48, the same input for every method.
Metrics inside a head mask on intensities divided by the reference's 99.5th percentile: PSNR (dB) and SSIM
(quality.py's definitions). Times are wall seconds on this machine (printed with the CPU capability).

Detail refinement (`--methods c2s,c2s-refine`): GDSM with σ_tg > 0 has the minimiser E[x_tg | x_t], and on the
Gaussian path from x_tg to x_t, Tweedie's formula at both ends gives E[x_tg | x_t] = (σ_tg²/σ_t²)·x_t +
(1 − σ_tg²/σ_t²)·E[x0 | x_t]: a model trained with σ_tg = ρ·σ_d is, at inference (σ_t = σ_d), the clean-target model
blended with its input by ρ². The rows apply that blend to the default's output (image units), so they measure
detail refinement on real anatomy without training one model per ρ.

Clean reference (`--subject unseen-2mm`, issue 32): the same subject averaged over 2×2×2 voxels to 2 mm (eight
independent noise samples per voxel: the reference's own noise drops by √8, to ≈ 0.7 % of the 99.5th percentile,
0.13× the added noise at 5 % and 0.07× at 10 %), central 40 coronal slices of the 2 mm volume (128×128×40). Rician
noise is added to it as above; the rows then measure the distance to a nearly clean image. The subject stays unseen:
no training stage used it at any resolution.

Usage:  python -m c2s_bench.unseen --data ../shared/data [--levels 0.05,0.10,0.15] [--methods ...]
        [--subject unseen|unseen-2mm|mni-heldout]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from c2s_bench.harness import anchor_rows, head_mask, load_mni_heldout, metrics, parser, rician, run_header
from c2s_cli.api import Denoiser
from c2s_cli.records import DenoiseReport
from c2s_cli.config import PLANES
from c2s_cli.noise.estimate import estimate_noise

SLAB = slice(104, 152)


def load(data: Path) -> tuple[np.ndarray, float]:
    """The reference slab divided by its 99.5th percentile, and the reference's own σ (same units)."""
    v = np.asarray(nib.load(str(data / "nifti" / "pycortex_s1_t1_1mm.nii.gz")).dataobj, dtype=np.float32)
    v = v[:, :, SLAB]
    p = float(np.percentile(v[v > 0], 99.5))
    ref = v / p
    return ref.astype(np.float32), float(estimate_noise(ref).sigma)


def load_2mm(data: Path) -> tuple[np.ndarray, float]:
    """The subject averaged over 2×2×2 voxels (2 mm), its central 40 coronal slices, divided by the 99.5th percentile;
    and the reference's own σ: the 1 mm estimate divided by √8 (averaging 8 independent samples)."""
    v = np.asarray(nib.load(str(data / "nifti" / "pycortex_s1_t1_1mm.nii.gz")).dataobj, dtype=np.float32)
    n = [s // 2 * 2 for s in v.shape]
    v = v[: n[0], : n[1], : n[2]].reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2).mean(axis=(1, 3, 5))
    mid = v.shape[2] // 2
    v = v[:, :, mid - 20 : mid + 20]
    p = float(np.percentile(v[v > 0], 99.5))
    _, sigma_1mm = load(data)
    return (v / p).astype(np.float32), sigma_1mm / np.sqrt(8)


def main() -> None:
    ap = parser(__doc__, "unseen")
    ap.add_argument("--levels", default="0.05,0.10,0.15")
    ap.add_argument("--methods", default="bm3d,bm4d,c2s,c2s-true,c2s-tta,c2s-planes")
    ap.add_argument("--adapt-steps", default="100,300,1000", help="c2s-adapt rows: --adapt steps")
    ap.add_argument("--adapt-lr", default="2e-4,1e-3", help="c2s-adapt rows: learning rates")
    ap.add_argument("--subject", choices=("unseen", "unseen-2mm", "mni-heldout"), default="unseen",
                    help="mni-heldout: the MNI152 held-out axial slab z 70-113 (clean reference; validation, not unseen)")
    ap.add_argument("--refine", default="0.1,0.2,0.3",
                    help="c2s-refine rows (with c2s): ρ = σ_tg/σ_d of detail refinement, applied at inference")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, … (the GPU rows: scripts/gpu_check.sh)")
    ap.add_argument("--draws", type=int, default=1,
                    help="noise draws per level (seed 200 + level index + 100·draw; draw 0 is every earlier table's); "
                         "with more than one, the summary pairs each method with BM4D on the same draw")
    args = ap.parse_args()
    if args.draws < 1:
        ap.error(f"--draws must be >= 1, got {args.draws}")
    torch.set_num_threads(args.threads)
    want = set(args.methods.split(","))
    if args.subject == "unseen":
        ref, sigma_ref = load(args.data)
    elif args.subject == "unseen-2mm":
        ref, sigma_ref = load_2mm(args.data)
    else:  # validation only: a clean reference, but not an unseen subject
        ref = load_mni_heldout(args.data)
        sigma_ref = float(estimate_noise(ref).sigma) if np.any(ref) else 0.0
    mask = head_mask(ref)
    res: dict[str, object] = {
        **run_header(args.threads),
        "subject": {"unseen": "pycortex S1 T1, central 48 coronal slices (256×256×48)",
                    "unseen-2mm": "pycortex S1 T1 averaged to 2 mm (clean reference), central 40 coronal slices "
                                  "(128×128×40)",
                    "mni-heldout": "MNI152 2009a held-out axial slab z 70-113 (validation, not unseen)"}[args.subject],
        "reference_sigma_pct": round(100 * sigma_ref, 2), "mask_voxels": int(mask.sum()), "rows": [],
    }
    print(f"reference σ ≈ {100 * sigma_ref:.2f} % of the 99.5th percentile; mask {mask.sum()} voxels", flush=True)
    den = Denoiser(args.model, args.device, threads=args.threads)
    res["device"] = str(den.device)
    rows: list[dict[str, object]] = res["rows"]  # type: ignore[assignment]

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))

    levels = [float(v) for v in args.levels.split(",")]
    for i, level, draw in ((i, lv, d) for i, lv in enumerate(levels) for d in range(args.draws)):
        seed = 200 + i + 100 * draw
        noisy = rician(ref, level, seed=seed)

        def record(method: str, out: np.ndarray, seconds: float, note: str = "") -> None:
            p, s = metrics(np.asarray(out, np.float32), ref, mask)
            row = {"level": level, "method": method, "psnr": round(p, 2), "ssim": round(s, 4),
                   "seconds": round(seconds, 1), "note": note}
            if args.draws > 1:
                row.update({"draw": draw, "seed": seed, "psnr_full": p, "ssim_full": s})
            rows.append(row)
            tag = f" d{draw}" if args.draws > 1 else ""
            print(f"  {100 * level:4.0f} %{tag}  {method:<40} PSNR {p:6.2f}  SSIM {s:.4f}  {seconds:7.1f} s  {note}",
                  flush=True)
            save()

        record("noisy", noisy, 0.0)
        anchor_rows(record, noisy, level, want)
        if "c2s" in want:
            t0 = time.perf_counter()
            rep = DenoiseReport()
            out = den.denoise(noisy, report=rep)
            dt = time.perf_counter() - t0
            est = estimate_noise(noisy).sigma
            weight = f", self-similarity weight {rep.blends[0].weight:.3f}" if rep.blends else ""
            record("c2s default (σ estimated)", out, dt, note=f"σ̂/σ = {est / level:.3f}{weight}")
        if "c2s-off" in want:  # the network's output alone (--no-self-similarity)
            t0 = time.perf_counter()
            record("c2s --no-self-similarity (σ estimated)", den.denoise(noisy, self_similarity=False),
                   time.perf_counter() - t0)
            if "c2s-refine" in want:  # detail refinement at inference: E[x_tg|y] = (1−ρ²)·E[x0|y] + ρ²·y
                for rho in (float(v) for v in args.refine.split(",")):
                    record(f"c2s detail refinement ρ = σ_tg/σ_d = {rho:g}", (1 - rho**2) * out + rho**2 * noisy, dt)
        if "c2s-true" in want:
            t0 = time.perf_counter()
            record("c2s default (true σ)", den.denoise(noisy, level), time.perf_counter() - t0)
        if "c2s-tta" in want:
            t0 = time.perf_counter()
            record("c2s --tta 8 (σ estimated)", den.denoise(noisy, tta=8), time.perf_counter() - t0)
        if "c2s-adapt" in want:  # per-scan adaptation (GDSM on the noisy slab itself), then one pass
            for lr in (float(v) for v in args.adapt_lr.split(",")):
                for steps in (int(v) for v in args.adapt_steps.split(",")):
                    t0 = time.perf_counter()
                    out = den.adapted(noisy, steps, lr=lr).denoise(noisy)
                    record(f"c2s --adapt {steps} --adapt-lr {lr:g}", out, time.perf_counter() - t0)
        if "c2s-planes" in want:
            t0 = time.perf_counter()
            record("c2s --planes axial,coronal,sagittal (σ est.)", den.denoise(noisy, planes=PLANES),
                   time.perf_counter() - t0)
        if "c2s-planes-tta" in want:
            t0 = time.perf_counter()
            record("c2s --planes axial,coronal,sagittal --tta 8", den.denoise(noisy, planes=PLANES, tta=8),
                   time.perf_counter() - t0)
        if "c2s-planes-tta2" in want:  # 6× one pass: within a tenth of BM4D's time
            t0 = time.perf_counter()
            record("c2s --planes axial,coronal,sagittal --tta 2", den.denoise(noisy, planes=PLANES, tta=2),
                   time.perf_counter() - t0)
        if "c2s-planes-tta4" in want:  # 12× one pass
            t0 = time.perf_counter()
            record("c2s --planes axial,coronal,sagittal --tta 4", den.denoise(noisy, planes=PLANES, tta=4),
                   time.perf_counter() - t0)
    if args.draws > 1:
        res["paired_with_bm4d"] = paired_summary(rows)
        for r in res["paired_with_bm4d"]:  # type: ignore[attr-defined]
            print(f"  {100 * r['level']:4.0f} %  {r['method']:<40} mean over {r['draws']} draws PSNR {r['psnr_mean']:.3f} "
                  f"SSIM {r['ssim_mean']:.5f}; − BM4D: {r['psnr_diff_mean']:+.3f} ± {r['psnr_diff_se']:.3f} dB, "
                  f"SSIM {r['ssim_diff_mean']:+.5f} ± {r['ssim_diff_se']:.5f}", flush=True)
    save()
    print(json.dumps(res, indent=1))


def paired_summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per level and method: the mean PSNR / SSIM over the noise draws and the mean (± standard error) of its
    difference to BM4D on the same draw (rows with ``draw``; unrounded scores)."""
    out: list[dict[str, object]] = []
    anchor = {(r["level"], r["draw"]): r for r in rows if str(r["method"]).startswith("BM4D")}
    keys = list(dict.fromkeys((r["level"], r["method"]) for r in rows))
    for level, method in keys:
        mine = [r for r in rows if r["level"] == level and r["method"] == method]
        pairs = [(r, anchor[(level, r["draw"])]) for r in mine if (level, r["draw"]) in anchor]
        entry: dict[str, object] = {"level": level, "method": method, "draws": len(mine),
                                    "psnr_mean": float(np.mean([r["psnr_full"] for r in mine])),
                                    "ssim_mean": float(np.mean([r["ssim_full"] for r in mine]))}
        if len(pairs) >= 2:
            for k in ("psnr", "ssim"):
                d = np.array([float(a[f"{k}_full"]) - float(b[f"{k}_full"]) for a, b in pairs])  # type: ignore[arg-type]
                entry[f"{k}_diff_mean"] = float(d.mean())
                entry[f"{k}_diff_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
        else:
            entry.update({"psnr_diff_mean": float("nan"), "psnr_diff_se": float("nan"),
                          "ssim_diff_mean": float("nan"), "ssim_diff_se": float("nan")})
        out.append(entry)
    return out


if __name__ == "__main__":
    main()
