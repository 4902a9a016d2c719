"""Train the start model of the series (4-D context) mode: the ``series`` network already taught to use its context
channels, on DWI and fMRI-like series made from the training anatomy (issue 31).

The series mode widens its start model by ``neighbours + 2`` context channels (the prediction from the other volumes,
the pooled mean of the shell, the nearest volumes: :mod:`c2s_cli.series`) and trains it 400 GDSM steps on the series
being denoised. From the context-free ``series`` network those channels start at zero weight, so most of those steps
go to learning to read them. This script does that learning once, self-supervised (GDSM on the noisy series only, the
clean signal is never a target), on series built by ``c2s_bench.dwi.series_from_t1`` from the **training** anatomy:

* the MNI152 2009a template at 2 mm, two slabs outside the held-out band (1 mm z 70–113, ``HELD_OUT_MNI`` of
  ``c2s_bench.fetch_data``): 2 mm z 0–33 and 57–92;
* the ITK low-resolution T1 head (2 × 2 × 3 mm);

never the pycortex S1 subject (the DWI, fMRI and clean-reference benchmarks' unseen subject). Per series the tissue
model (white-matter tensor, grey-matter diffusivity, the b = 0 contrast), the gradient table (b = 0 count, directions,
shells), the noise (2–12 % Rician, some g-factor-like) and the domain (magnitude with the series σ map, or complex
demodulated as ``c2s denoise`` does) are drawn from ``--seed``; fMRI-like series (a drift and a block activation, no
gradient table: neighbours in time) are mixed in. The noise fit, the context and the units are the product's
(``Denoiser.fit_noise``, ``SeriesContext``), so the start model sees what the series mode gives it.

The run folder holds the resumable state (``--resume`` continues it exactly); the EMA weights go to ``--out``.

Usage:
  python scripts/train_series_start.py --source ../shared/data --run-dir runs/series_start --out /tmp/series_ctx.safetensors
  python scripts/register_weights.py /tmp/series_ctx.safetensors --name series-context
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from c2s_bench.fetch_data import HELD_OUT_MNI, source_file

ROOT = Path(__file__).resolve().parents[1]

NEIGHBOURS = 2  # the series mode's default (SeriesConfig.neighbours): the start model takes neighbours + 2 volumes
SHELL_SETS = ((1000,), (1000, 2000), (700, 2000), (1000, 2000, 3000), (1500,))


def anatomies(src: Path) -> list[tuple[str, np.ndarray, int | None, int]]:
    """(name, 2 mm T1 divided by its 99.5th percentile, slab centre z, slab slices) of the training anatomy."""
    import nibabel as nib

    from c2s_bench.dwi import t1_2mm

    mni = t1_2mm(source_file(src, "mni152_2009a_t1_1mm.nii.gz"))
    lo, hi = HELD_OUT_MNI[0] // 2, -(-HELD_OUT_MNI[1] // 2)  # the held-out band at 2 mm: z 35 … 56
    below, above = lo - 1, mni.shape[2] - hi  # slices clear of it: 0 … 33 and 57 … 92
    itk = nib.as_closest_canonical(nib.load(str(source_file(src, "itk_head_t1_lowres.nii.gz"))))
    t = np.asarray(itk.dataobj, np.float32)
    t = t[..., 0] if t.ndim == 4 else t
    t = t / float(np.percentile(t[t > 0], 99.5))
    return [("mni152 z0-33", mni, below // 2, below), ("mni152 z57-92", mni, hi + min(36, above) // 2, min(36, above)),
            ("itk head", t, None, min(36, t.shape[2]))]


NOISE_LEVELS = (0.02, 0.03, 0.05, 0.05, 0.08, 0.12)  # σ / the b0's 99.5th percentile in the brain, drawn uniformly


def draw_series(rng: np.random.Generator, t1: np.ndarray, zc: int | None, slices: int, kind: str,
                levels: tuple[float, ...] = NOISE_LEVELS) -> dict[str, Any]:
    """One training series from ``t1``: kind "dwi", "dwi-complex" or "fmri" (see the module docstring)."""
    from c2s_bench.dwi import gradient_table, series_from_t1

    tissue = {"wm_tensor": (rng.uniform(1.3e-3, 2.0e-3), rng.uniform(0.2e-3, 0.45e-3), 0.0),
              "d_gm": rng.uniform(0.7e-3, 1.0e-3), "s0_slope": rng.uniform(0.5, 0.85)}
    noise = float(rng.choice(levels))
    gfactor = float(rng.choice([1.0, 1.0, 2.0, 2.5]))
    seed = int(rng.integers(1 << 30))
    if kind == "fmri":
        base = series_from_t1(t1, slices, noise=0.0, seed=seed, z_centre=zc, **tissue)
        s0, brain = base["clean"][..., 0], base["brain"]
        n = int(rng.integers(30, 61))
        design = ((np.arange(n) // int(rng.integers(6, 15))) % 2).astype(np.float32)
        drift = rng.uniform(-0.01, 0.01) * np.linspace(-1, 1, n)
        grid = np.stack(np.meshgrid(*[np.arange(k) for k in s0.shape], indexing="ij"), -1)
        centre = rng.uniform(0.25, 0.75, 3) * np.array(s0.shape)
        active = (np.linalg.norm(grid - centre, axis=-1) <= rng.uniform(4, 8)) & brain
        gain = 1 + drift + rng.uniform(0.01, 0.04) * design * active[..., None]
        clean = (s0[..., None] * gain).astype(np.float32)
        sigma = 0.6 * noise * float(np.percentile(s0[brain], 99.5))  # fMRI: higher SNR than DWI's b = 0
        noisy = np.sqrt((clean + sigma * rng.standard_normal(clean.shape)) ** 2
                        + (sigma * rng.standard_normal(clean.shape)) ** 2).astype(np.float32)
        return {"kind": kind, "noisy": noisy, "bvals": None, "bvecs": None, "noise": 0.6 * noise, "gfactor": 1.0}
    shells = SHELL_SETS[int(rng.integers(len(SHELL_SETS)))]
    table = gradient_table(int(rng.integers(2, 7)), int(rng.integers(12, 33)), shells, seed=seed)
    ph = series_from_t1(t1, slices, noise=noise, seed=seed, z_centre=zc, table=table, gfactor=gfactor, **tissue)
    out = {"kind": kind, "bvals": ph["bvals"], "bvecs": ph["bvecs"], "noise": noise, "gfactor": gfactor}
    out["complex" if kind == "dwi-complex" else "noisy"] = ph["complex"] if kind == "dwi-complex" else ph["noisy"]
    return out


def train_volumes(den: Any, s: dict[str, Any], name: str) -> list[Any]:
    """The series' training volumes with their context channels, through the product's noise fit and context."""
    from c2s_cli import series

    if s["kind"] == "dwi-complex":  # as c2s denoise: demodulated real part, σ map from the imaginary part, no VST
        from c2s_cli.complexdata import demodulate, imaginary_sigma_map

        real, imag, _ = demodulate(s["complex"], slice_axis=2)
        data = real
        fitted = den.fit_noise(real, None, sigma_map=imaginary_sigma_map(imag, slice_axis=2), noise="none",
                               use_vst=False, slice_axis=2, map_source="imaginary part")
    else:
        data = s["noisy"]
        fitted = den.fit_noise(data, slice_axis=2)
    n = data.shape[3]
    frames = [np.ascontiguousarray(data[..., t]) for t in range(n)]
    ctx = series.SeriesContext(frames, fitted.domains, series.neighbours(n, NEIGHBOURS, s["bvals"], s["bvecs"]),
                               series.pools(n, s["bvals"]))
    return series.train_volumes(ctx, slice_axis=2, name=f"{name} ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--start", default="series", help="the registered (or a path to a) context-free model to widen")
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--series", type=int, default=4, help="series per anatomy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-levels", default=",".join(f"{v:g}" for v in NOISE_LEVELS),
                    help="the noise levels drawn from (σ over the b0's 99.5th percentile)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="dwi,dwi,dwi-complex,fmri",
                    help="the kinds of series, in turn per anatomy (dwi, dwi-complex, fmri)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    import torch

    from c2s_cli import series
    from c2s_cli.api import Denoiser
    from c2s_cli.loop import train

    torch.set_num_threads(args.threads)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    den = Denoiser(args.start, "cpu", threads=args.threads)
    rng = np.random.default_rng(args.seed)
    levels = tuple(float(v) for v in args.noise_levels.split(","))
    vols, made = [], []
    t0 = time.perf_counter()
    kinds = tuple(args.kinds.split(","))
    if not kinds or set(kinds) - {"dwi", "dwi-complex", "fmri"}:
        ap.error(f"--kinds: {args.kinds!r} (dwi, dwi-complex, fmri)")
    for name, t1, zc, slices in anatomies(args.source):
        for k in range(args.series):
            kind = kinds[k % len(kinds)]
            s = draw_series(rng, t1, zc, slices, kind, levels)
            label = f"{name} #{k} {kind}"
            vols += train_volumes(den, s, label)
            n = (s["noisy"] if "noisy" in s else s["complex"]).shape
            made.append(f"{label}: {n}, noise {s['noise']:.3f}, g {s['gfactor']:g}"
                        + (f", b {sorted({int(b) for b in np.round(s['bvals'], -1)})}" if s["bvals"] is not None else ""))
            print(f"[{time.perf_counter() - t0:6.0f} s] {made[-1]}", file=sys.stderr, flush=True)
    net = series.widen(den.model, NEIGHBOURS + 2)
    base = den.config
    rc = series.series_run_config(base, net, steps=args.steps, lr=args.lr, seed=args.seed, bf16=den.bf16, warmup=200,
                                  ema_halflife=max(50, args.steps // 10), log_every=50)
    description = (f"The start model of the series (4-D context) mode: {args.start} (sha256 {den.sha256[:8]}) widened by "
                   f"{NEIGHBOURS + 2} context channels and trained {args.steps} GDSM steps (lr {args.lr:g}, seed "
                   f"{args.seed}, self-supervised) on {len(made)} DWI / fMRI-like series with their context made by "
                   "scripts/train_series_start.py from the MNI152 2009a template (2 mm, axial z 35-56 held out) and "
                   "the ITK low-res T1: " + "; ".join(made))

    def log(r: dict[str, Any]) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] step {r.get('step')} loss {r.get('loss', float('nan')):.4f}",
              file=sys.stderr, flush=True)

    train(rc, vols, args.out, args.run_dir, data_summary={"description": description, "series": made},
          init=net, resume=args.resume, on_log=log)
    print(f"{args.out}: {len(vols)} volumes, {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
