"""4-D diffusion series: c2s against the diffusion peers on a multi-shell DWI phantom built from a real head no
model has seen (issue 31).

**The phantom.** pycortex S1 (the reserved unseen subject; never in any training stage), its 1 mm T1 averaged over
2×2×2 voxels to 2 mm (RAS), an axial slab of ``--slices`` slices through the centre of the cerebrum, cropped to the
head. Tissue fractions come from the T1 intensity: white matter (next to the largest connected component of T1 in
[0.66, 0.9] of its 99.5th percentile, a partial-volume ramp 0.50 → 0.70), CSF (T1 0.30 → 0.15, inside the brain) and
grey matter (the rest of the brain: the white matter grown by 10 mm, closed and filled). Per voxel, one diffusion tensor, the
fraction-weighted sum of
  WM  mean diffusivity 0.75·10⁻³ mm²/s, anisotropy of λ = (1.7, 0.28, 0.28)·10⁻³ scaled by 0.5–1 with the coherence
      of the T1's structure tensor (FA ≈ 0.4–0.8), its principal direction the axis along which the smoothed T1
      changes least (the smallest eigenvector: along the white-matter sheets);
  GM  0.85·10⁻³ isotropic;  CSF 3.0·10⁻³ isotropic;  outside the brain 1.0·10⁻³ isotropic;
and a T2-like b = 0 signal S0 = 1 − 0.75·T1 in the brain (CSF ≈ 0.85, GM ≈ 0.65, WM ≈ 0.45; 0.4·T1 outside, 0
in air). Signal
S_k = S0·exp(−b_k gₖᵀ D gₖ) for 5 b = 0, 30 directions at b = 1000 and 30 at b = 2000 (electrostatic repulsion,
dipy ``disperse_charges``, seeded), then Rician noise of σ = ``--noise`` × the b0's 99.5th percentile in the brain
(a complex Gaussian pair with a smooth phase, kept for the complex-data rows); ``--gfactor G`` makes it centre-high,
σ × 1 at the edges of each slice to × G at its centre (a g-factor-like case; σ in the scores' notes is the edge σ).

**Scores** (inside the brain mask): PSNR of the b0 and of the diffusion-weighted volumes (peak: the clean b0's 99.5th
percentile, one peak for every volume, so equal noise gives equal PSNR), and the error of a tensor fit (dipy
``TensorModel``, WLS) against the fit of the clean series: FA RMSE in the brain and in white matter (true FA > 0.3),
MD RMSE in tissue (true MD < 1.5·10⁻³), in 10⁻³ mm²/s.

**Methods** (``--methods``, side by side in one run): ``noisy``; ``dwidenoise`` (MRtrix3, MP-PCA, default 5×5×5
window, the anchor); ``mppca`` (dipy, patch radius 2); ``patch2self`` (dipy, OLS); ``bm4d`` (per volume, true σ;
slow); ``c2s-volumes`` (the shipped default, volume by volume with the series σ map); ``c2s-series`` (the 4-D mode:
the other volumes as context, ``c2s_cli.series``); ``c2s-series-complex`` (the complex series as a complex NIfTI through
``c2s denoise``'s pipeline with its defaults: the low-pass phase removed, the real part denoised without the VST, σ
from the imaginary part, magnitude out; :mod:`c2s_cli.complexdata`).

Usage: python -m c2s_bench.dwi [--data ../shared/data] [--threads 2] [--methods noisy,dwidenoise,mppca,c2s-volumes]
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from c2s_bench.harness import parser, run_header, run_rows

WM_TENSOR = (1.7e-3, 0.28e-3, 0.28e-3)
D_GM, D_CSF, D_OUT = 0.85e-3, 3.0e-3, 1.0e-3


def gradient_table(n_b0: int = 5, n_dirs: int = 30, shells: tuple[int, ...] = (1000, 2000), seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """bvals (T,) and unit bvecs (T, 3): ``n_b0`` b = 0 then ``n_dirs`` repulsion-dispersed directions per shell."""
    from dipy.core.sphere import HemiSphere, disperse_charges

    rng = np.random.default_rng(seed)
    bvals, bvecs = [0] * n_b0, [np.zeros(3)] * n_b0
    for b in shells:
        theta, phi = np.pi * rng.random(n_dirs), 2 * np.pi * rng.random(n_dirs)
        hemi, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 2000)
        bvals += [b] * n_dirs
        bvecs += list(hemi.vertices)
    return np.asarray(bvals, np.float64), np.asarray(bvecs, np.float64)


def principal_directions(t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z, 3) unit vectors, the smallest eigenvector of the structure tensor of the smoothed T1, and its
    coherence in [0, 1] ((μ₃ − μ₁)/(μ₃ + μ₁), μ the eigenvalues)."""
    g = [ndimage.gaussian_filter(t1, 1.0, order=o) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    st = np.empty(t1.shape + (3, 3), np.float64)
    for i in range(3):
        for j in range(i, 3):
            st[..., i, j] = st[..., j, i] = ndimage.gaussian_filter(g[i] * g[j], 2.0)
    vals, vecs = np.linalg.eigh(st)
    coherence = (vals[..., 2] - vals[..., 0]) / (vals[..., 2] + vals[..., 0] + 1e-12)
    return vecs[..., :, 0], np.clip(coherence, 0, 1)


def t1_2mm(path: Path) -> np.ndarray:
    """A 1 mm T1 (RAS) averaged over 2×2×2 voxels, divided by its 99.5th percentile."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    v = np.asarray(img.dataobj, np.float32)
    n = [s // 2 * 2 for s in v.shape]
    v = v[: n[0], : n[1], : n[2]].reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2).mean((1, 3, 5))
    return v / float(np.percentile(v[v > 0], 99.5))


def phantom(data: Path, slices: int = 36, noise: float = 0.05, seed: int = 31, gfactor: float = 1.0) -> dict[str, Any]:
    """The clean and noisy series (X, Y, Z, T), the gradient table, the masks and σ of the unseen subject (see the
    module docstring); ``gfactor`` > 1: centre-high noise (:func:`g_map`)."""
    return series_from_t1(t1_2mm(data / "nifti" / "pycortex_s1_t1_1mm.nii.gz"), slices, noise, seed, gfactor=gfactor)


def validation_phantom(mni_2mm: np.ndarray, noise: float = 0.05, gfactor: float = 1.0) -> dict[str, Any]:
    """The phantom of the **training** anatomy on which the series mode's settings are chosen (never the benchmark's
    subject): :func:`series_from_t1` of the MNI template at 2 mm (``t1_2mm`` of it), the axial slab z 0–33 (outside
    its held-out band), noise seed 7."""
    return series_from_t1(mni_2mm, 33, noise=noise, seed=7, z_centre=16, gfactor=gfactor)


def g_map(shape: tuple[int, ...], peak: float) -> np.ndarray:
    """A g-factor-like noise multiplier (X, Y, Z): 1 at the edges of each slice, ``peak`` at its centre, a Gaussian
    bump of 0.35 × the half-width in plane (parallel imaging: σ highest in the middle of the head), the same in
    every slice."""
    xx, yy = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    g = 1.0 + (peak - 1.0) * np.exp(-(xx ** 2 + yy ** 2) / (2 * 0.35 ** 2))
    return np.repeat(g[:, :, None], shape[2], axis=2)


def series_from_t1(t: np.ndarray, slices: int = 36, noise: float = 0.05, seed: int = 31, z_centre: int | None = None,
                   table: tuple[np.ndarray, np.ndarray] | None = None, gfactor: float = 1.0,
                   wm_tensor: tuple[float, float, float] = WM_TENSOR, d_gm: float = D_GM, s0_slope: float = 0.75
                   ) -> dict[str, Any]:
    """The phantom of the module docstring from a 2 mm T1 ``t`` (divided by its 99.5th percentile, white matter near
    0.74); the slab centred on ``z_centre`` (default: the white matter's centre); ``table``: (bvals, bvecs);
    ``wm_tensor`` (mm²/s), ``d_gm`` (mm²/s) and ``s0_slope`` (S0 = 1 − slope·T1 in the brain) vary the tissue model
    (the scored phantom keeps the defaults; ``scripts/train_series_start.py`` draws them)."""
    wm_core = ndimage.binary_opening((t > 0.66) & (t < 0.9))
    lab, _ = ndimage.label(wm_core)
    wm_comp = lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1
    zs = np.nonzero(wm_comp.any((0, 1)))[0]
    zc = (zs.min() + zs.max()) // 2 if z_centre is None else z_centre
    z0 = max(0, zc - slices // 2)
    head = ndimage.gaussian_filter(t, 1.0) > 0.05
    xs, ys = np.nonzero(head[:, :, z0 : z0 + slices].any(2).any(1))[0], np.nonzero(head[:, :, z0 : z0 + slices].any(2).any(0))[0]
    box = (slice(max(0, xs.min() - 2), xs.max() + 3), slice(max(0, ys.min() - 2), ys.max() + 3), slice(z0, z0 + slices))
    # the brain: the white matter grown by 10 mm, closed and filled (cortex and sulci; the skull and scalp stay out)
    grown = ndimage.binary_closing(ndimage.binary_dilation(wm_comp, iterations=5), iterations=3)
    brain_all = np.stack([ndimage.binary_fill_holes(grown[:, :, k]) for k in range(grown.shape[2])], 2) & (t > 0.04)
    near_wm = ndimage.binary_dilation(wm_comp, iterations=1)
    e1, coherence = principal_directions(t)
    t, near_wm, brain, e1, coherence = t[box], near_wm[box], brain_all[box], e1[box], coherence[box]
    f_wm = np.where(near_wm & brain, np.clip((t - 0.50) / 0.20, 0, 1), 0.0)
    f_csf = np.where(brain, np.clip((0.30 - t) / 0.15, 0, 1), 0.0) * (1 - f_wm)
    f_gm = np.where(brain, 1 - f_wm - f_csf, 0.0)
    air = ndimage.gaussian_filter(t, 0.7) < 0.03
    # T2-like b = 0 signal, continuous in the T1 (its anatomy and partial volumes carry through): CSF ≈ 0.85,
    # GM ≈ 0.65, WM ≈ 0.45; outside the brain 0.4·T1, air 0
    s0 = np.where(brain, 1.0 - s0_slope * np.clip(t, 0, 1), 0.4 * t)
    s0 = np.where(air & ~brain, 0.0, s0)
    # white-matter tensor: mean diffusivity of WM_TENSOR, anisotropy scaled by the structure tensor's coherence
    # (FA ≈ 0.4 … 0.8), principal direction e1
    l1, l2, _ = wm_tensor
    md_wm = (l1 + 2 * l2) / 3
    a = (0.5 + 0.5 * coherence)[..., None, None]
    aniso = (l1 - md_wm) * (3 * e1[..., :, None] * e1[..., None, :] - np.eye(3)) / 2
    tensor_wm = md_wm * np.eye(3) + a * aniso
    iso = np.where(brain, f_gm * d_gm + f_csf * D_CSF, D_OUT)
    dt = f_wm[..., None, None] * tensor_wm + iso[..., None, None] * np.eye(3)
    dt = np.where(brain[..., None, None], dt, D_OUT * np.eye(3))
    bvals, bvecs = table if table is not None else gradient_table()
    adc = np.einsum("ti,xyzij,tj->xyzt", bvecs, dt, bvecs)
    clean = (s0[..., None] * np.exp(-bvals * adc)).astype(np.float32) * 1000.0
    sigma = noise * float(np.percentile(clean[..., 0][brain], 99.5))
    rng = np.random.default_rng(seed)
    xx, yy, zz = np.meshgrid(*[np.linspace(-1, 1, s) for s in clean.shape[:3]], indexing="ij")
    phase = (0.8 * xx + 0.5 * yy ** 2 - 0.4 * zz)[..., None] + 0.3 * rng.standard_normal(clean.shape[3])  # smooth
    smap = sigma * (g_map(clean.shape[:3], gfactor)[..., None] if gfactor != 1.0 else 1.0)
    cplx = clean * np.exp(1j * phase) + smap * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape))
    noisy = np.abs(cplx).astype(np.float32)
    return {"clean": clean, "noisy": noisy, "complex": cplx.astype(np.complex64), "bvals": bvals, "bvecs": bvecs,
            "brain": brain, "sigma": sigma, "affine": np.diag([2.0, 2.0, 2.0, 1.0])}


def tensor_maps(series: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FA and MD (mm²/s) of a WLS tensor fit inside ``mask``."""
    from dipy.core.gradients import gradient_table as gtab_of
    from dipy.reconst.dti import TensorModel

    gtab = gtab_of(bvals, bvecs=bvecs)
    fit = TensorModel(gtab, fit_method="WLS").fit(np.maximum(series, 1e-3), mask=mask)
    return np.nan_to_num(fit.fa), np.nan_to_num(fit.md)


def scores(out: np.ndarray, ph: dict[str, Any], truth: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """PSNR of b0 / DW volumes in the brain, FA RMSE (brain, WM), MD RMSE (tissue, 10⁻³ mm²/s)."""
    clean, brain, bvals = ph["clean"], ph["brain"], ph["bvals"]
    peak = float(np.percentile(clean[..., 0][brain], 99.5))

    def psnr(sel: np.ndarray) -> float:
        d = out[..., sel][brain] - clean[..., sel][brain]
        return float(10 * np.log10(peak**2 / np.mean(d.astype(np.float64) ** 2)))

    fa, md = tensor_maps(out, bvals, ph["bvecs"], brain)
    fa0, md0 = truth
    wm = brain & (fa0 > 0.3)
    tissue = brain & (md0 < 1.5e-3)
    fa_brain = float(np.sqrt(np.mean((fa[brain] - fa0[brain]) ** 2)))
    fa_wm = float(np.sqrt(np.mean((fa[wm] - fa0[wm]) ** 2)))
    return {"psnr_b0": round(psnr(bvals < 50), 3), "psnr_dw": round(psnr(bvals >= 50), 3),
            "psnr_b1000": round(psnr(np.abs(bvals - 1000) < 50), 3), "psnr_b2000": round(psnr(np.abs(bvals - 2000) < 50), 3),
            "fa_rmse_brain": round(fa_brain, 4), "fa_rmse_wm": round(fa_wm, 4),
            "md_rmse_tissue": round(float(np.sqrt(np.mean((md[tissue] - md0[tissue]) ** 2))) * 1e3, 4),
            "fa_rmse_brain_full": fa_brain, "fa_rmse_wm_full": fa_wm}  # unrounded: paired differences over draws


def fa_bias(out: np.ndarray, ph: dict[str, Any], truth: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean signed FA error in white matter (true FA > 0.3): below zero, the directions' contrast was flattened."""
    fa, _ = tensor_maps(out, ph["bvals"], ph["bvecs"], ph["brain"])
    wm = ph["brain"] & (truth[0] > 0.3)
    return round(float(np.mean(fa[wm] - truth[0][wm])), 4)


def dwidenoise(noisy: np.ndarray, affine: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """MRtrix3 ``dwidenoise`` (MP-PCA) on a NIfTI copy; returns the denoised series and its noise map."""
    import nibabel as nib

    exe = shutil.which("dwidenoise")
    if exe is None:
        raise SystemExit("dwidenoise not found: apt-get install mrtrix3")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, nmap = (Path(tmp) / n for n in ("in.nii", "out.nii", "noise.nii"))
        nib.save(nib.Nifti1Image(noisy, affine), str(src))
        subprocess.run([exe, str(src), str(dst), "-noise", str(nmap), "-nthreads", str(threads), "-quiet"], check=True)
        return (np.asarray(nib.load(str(dst)).dataobj, np.float32), np.asarray(nib.load(str(nmap)).dataobj, np.float32))


def run_method(name: str, ph: dict[str, Any], args: Any) -> tuple[np.ndarray, str]:
    noisy, bvals = ph["noisy"], ph["bvals"]
    if name == "noisy":
        return noisy, ""
    if name == "dwidenoise":
        out, nmap = dwidenoise(noisy, ph["affine"], args.threads)
        return out, f"noise map median in brain {float(np.median(nmap[ph['brain']])):.2f} (true σ {ph['sigma']:.2f})"
    if name == "mppca":
        from contextlib import nullcontext

        from dipy.denoise.localpca import mppca

        try:  # one BLAS thread: dipy's per-voxel 125 × T SVDs ran 7× slower with 2 (thread hand-offs, 2026-12-03)
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(1)
        except ImportError:
            limit = nullcontext()
        with limit:
            return np.asarray(mppca(noisy, patch_radius=2), np.float32), "patch radius 2, 1 BLAS thread"
    if name == "patch2self":
        from dipy.denoise.patch2self import patch2self

        return np.asarray(patch2self(noisy, bvals, model="ols", shift_intensity=True, clip_negative_vals=False,
                                     b0_threshold=50, verbose=False), np.float32), "OLS"
    if name == "bm4d":
        import bm4d

        return np.stack([np.asarray(bm4d.bm4d(noisy[..., k], sigma_psd=ph["sigma"]), np.float32)
                         for k in range(noisy.shape[3])], 3), "true σ, per volume"
    if name == "c2s-volumes":
        from c2s_cli.api import Denoiser

        den = Denoiser(args.model, "cpu", threads=args.threads)
        fitted = den.fit_noise(noisy)
        return den.denoise(noisy, fitted=fitted), f"{fitted.uses}"
    if name in ("c2s-series", "c2s-series-noss"):  # -noss: without the self-similarity blend (the default since session 19)
        from c2s_cli.api import Denoiser

        den = Denoiser(args.model, "cpu", threads=args.threads)
        return den.denoise_series(noisy, bvals=bvals, bvecs=ph["bvecs"], steps=args.series_steps,
                                  neighbours=args.series_neighbours,
                                  self_similarity=not name.endswith("-noss")), \
            f"{args.series_steps if args.series_steps is not None else 'default'} steps, {args.series_neighbours} neighbours"
    if name == "c2s-series-complex":  # the product path: a complex NIfTI with its .bval / .bvec, c2s's defaults
        import nibabel as nib

        from c2s_cli.api import Denoiser

        den = Denoiser(args.model, "cpu", threads=args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "dwi.nii", Path(tmp) / "out.nii"
            nib.save(nib.Nifti1Image(ph["complex"], ph["affine"]), str(src))
            np.savetxt(Path(tmp) / "dwi.bval", bvals[None], fmt="%g")
            np.savetxt(Path(tmp) / "dwi.bvec", ph["bvecs"].T, fmt="%.6f")
            rec = den.denoise_file(src, dst)
            out = np.asarray(nib.load(str(dst)).dataobj, np.float32)
        return out, f"{rec['series_mode']} mode; σ median {rec['noise'][0]['sigma']:.2f} (true {ph['sigma']:.2f})"
    raise SystemExit(f"unknown method {name}")


def main() -> None:
    ap = parser(__doc__, "dwi")
    ap.add_argument("--methods", default="noisy,dwidenoise,mppca,patch2self,c2s-volumes,c2s-series")
    ap.add_argument("--slices", type=int, default=36)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--gfactor", type=float, default=1.0, help="centre-high noise: σ × 1 at the edges … × G at the centre")
    ap.add_argument("--series-steps", type=int, default=None, help="default: the start model's (200 or 400)")
    ap.add_argument("--series-neighbours", type=int, default=2)
    ap.add_argument("--seed", type=int, default=31, help="the noise (and phase) draw; 31 is every earlier table's")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ph = phantom(args.data, args.slices, args.noise, seed=args.seed, gfactor=args.gfactor)
    truth = tensor_maps(ph["clean"], ph["bvals"], ph["bvecs"], ph["brain"])
    res: dict[str, Any] = {**run_header(args.threads), "shape": list(ph["noisy"].shape), "sigma": ph["sigma"],
                           "noise_fraction": args.noise, "gfactor": args.gfactor, "seed": args.seed,
                           "brain_voxels": int(ph["brain"].sum()),
                           "wm_voxels": int((ph["brain"] & (truth[0] > 0.3)).sum()), "rows": []}
    print(f"phantom {ph['noisy'].shape}, σ {ph['sigma']:.2f}, brain {res['brain_voxels']} voxels, "
          f"WM (FA > 0.3) {res['wm_voxels']}", flush=True)
    run_rows(res, args.methods, lambda name: run_method(name, ph, args),
             lambda out: {**scores(out, ph, truth), "fa_bias_wm": fa_bias(out, ph, truth)}, args.json)


if __name__ == "__main__":
    main()
