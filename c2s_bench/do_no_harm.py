"""Do no harm on real scans: real repeat pairs scored against each other, and residuals of real single scans.

**Pairs.** Two acquisitions A, B of the same anatomy with independent noise. Denoise A, score it against B:
``MSE(D(A), B) = MSE(D(A), x) + σ_B² + (physiological change)``, so lower is better, the floor is not zero, and a
method that removes anatomy scores **below the untouched input** — which no default may do. PSNR in dB inside the
object of both (peak = B's 99.5th percentile there); every method is run on A → B and on B → A.

* ``nibabel-example4d``: the two real fMRI time points nibabel ships (``nibabel/tests/data/example4d.nii.gz``,
  128×96×24, 2×2×2.2 mm, background masked to zero). Installed with nibabel, so the test suite can use it too.
* The Siemens PASL mosaic pair in ``../shared/data`` (instances 1 and 51) is **not** a repeat pair: instance 1 has
  another contrast (its object reads 1.3× instance 51, and B − A has a std of 161 in the object against 2.1 in the
  background); the script measures and reports this instead of scoring it.

**Single real scans** (no pair): σ used, residual r = y − D(y) in the object: std(r)/σ, corr(r, D(y)),
corr(|r|, |∇D(y)|) (anatomy in the residual shows as edges) and the lag-1 autocorrelation of r.

**A real diffusion series** (``--methods …,dwi``): dipy's ``small_64D`` (installed with dipy: a real DWI, 10×10×10
voxels of 2 mm, one b0 and 64 directions at b ≈ 1000, its own noise), through ``c2s denoise``'s pipeline with its
``.bval`` / ``.bvec`` (the default: the context mode) beside MRtrix ``dwidenoise`` (the anchor) on the same file: σ
used, std(r)/σ and lag-1 autocorrelation of the residual (σ: ``dwidenoise -noise``'s median, one reference for
both), corr(r, the denoised mean over the volumes) (anatomy in the residual), and a tensor fit's median FA and MD in
the volume against the noisy input's (what a diffusion user sees move).

Rows: untouched; c2s default (the noise policy: σ, map, or a refusal, which leaves the input untouched and is
scored as such); ``--sigma-map none``; ``--sigma-map auto``; c2s at 0.25 / 0.5 / 0.75 × the pair σ (an oracle
sweep: what the network can do on the scan at all); c2s, BM3D slice-wise and BM4D given the pair σ
(std(B − A)/√2 in the object, an upper bound on the noise: it includes physiological change); BM4D (pair σ) is the
anchor row.

Usage:  python -m c2s_bench.do_no_harm [--data ../shared/data] [--threads 2] [--methods ...]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from scipy import ndimage

from c2s_bench.harness import parser, run_header


def example4d_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nibabel's two real fMRI time points (float32) and the affine."""
    import nibabel as nib

    img = nib.load(os.path.join(os.path.dirname(nib.__file__), "tests", "data", "example4d.nii.gz"))
    a = np.asarray(img.dataobj, np.float32)
    return a[..., 0], a[..., 1], img.affine


def pair_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The object in both: non-zero in both and above 10 % of B's 99.5th percentile."""
    both = (a > 0) & (b > 0)
    return both & (b > 0.1 * float(np.percentile(b[both], 99.5)))


def pair_psnr(x: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    peak = float(np.percentile(b[mask], 99.5))
    return float(10 * np.log10(peak**2 / np.mean((x[mask] - b[mask]) ** 2)))


def residual_stats(y: np.ndarray, out: np.ndarray, sigma: float) -> dict[str, float]:
    """Anatomy in the residual r = y − D(y), inside the object (eroded)."""
    obj = ndimage.binary_erosion(ndimage.gaussian_filter(y, (2, 2, 0)) > 4 * sigma, iterations=2)
    r = (y - out)[obj]
    sm = ndimage.gaussian_filter(out, (1, 1, 0))
    grad = np.hypot(ndimage.sobel(sm, 0), ndimage.sobel(sm, 1))[obj]
    res = y - out
    both = obj[:-1] & obj[1:]
    return {"resid_std_over_sigma": round(float(r.std() / sigma), 3),
            "corr_resid_image": round(float(np.corrcoef(r, out[obj])[0, 1]), 3),
            "corr_absresid_gradient": round(float(np.corrcoef(np.abs(r), grad)[0, 1]), 3),
            "resid_lag1_acf": round(float(np.corrcoef(res[:-1][both], res[1:][both])[0, 1]), 3)}


def real_dwi(den: object, res: dict, threads: int) -> None:
    """The real-diffusion-series rows (module docstring): dipy's small_64D, noisy / dwidenoise / c2s default."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import dipy
    import nibabel as nib

    from c2s_bench.dwi import tensor_maps
    from c2s_cli.io.gradients import read_gradient_table

    files = Path(dipy.__file__).parent / "data" / "files"
    res["dwi"] = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dwi.nii"
        shutil.copyfile(files / "small_64D.nii", src)
        for ext in ("bval", "bvec"):
            shutil.copyfile(files / f"small_64D.{ext}", Path(tmp) / f"dwi.{ext}")
        y = np.asarray(nib.load(str(src)).dataobj, np.float32)
        bvals, bvecs = read_gradient_table(Path(tmp) / "dwi.bval", Path(tmp) / "dwi.bvec", y.shape[3])
        mask = np.ones(y.shape[:3], bool)
        outs: dict[str, tuple[np.ndarray, float, str]] = {"noisy": (y, 0.0, "")}
        exe = shutil.which("dwidenoise")
        sigma_ref = None
        if exe:
            t0 = time.perf_counter()
            subprocess.run([exe, str(src), str(Path(tmp) / "dn.nii"), "-noise", str(Path(tmp) / "noise.nii"),
                            "-nthreads", str(threads), "-quiet"], check=True)
            nmap = np.asarray(nib.load(str(Path(tmp) / "noise.nii")).dataobj, np.float32)
            sigma_ref = float(np.median(nmap[np.isfinite(nmap) & (nmap > 0)]))
            outs["dwidenoise"] = (np.asarray(nib.load(str(Path(tmp) / "dn.nii")).dataobj, np.float32),
                                  time.perf_counter() - t0, f"noise map median {sigma_ref:.2f}")
        t0 = time.perf_counter()
        rec = den.denoise_file(src, Path(tmp) / "c2s.nii")  # type: ignore[attr-defined]
        outs["c2s default"] = (np.asarray(nib.load(str(Path(tmp) / "c2s.nii")).dataobj, np.float32),
                               time.perf_counter() - t0,
                               f"{rec['series_mode']} mode; σ median {np.median([n['sigma'] for n in rec['noise']]):.2f}")
        fa0, md0 = tensor_maps(y, bvals, bvecs, mask)
        for name, (out, seconds, note) in outs.items():
            r = y - out
            fa, md = tensor_maps(out, bvals, bvecs, mask)
            mean = out.mean(-1)
            row = {"series": "dipy small_64D (real DWI, 10×10×10×65)", "method": name, "seconds": round(seconds, 1),
                   "note": note, "fa_median": round(float(np.median(fa)), 4), "md_median_1e-3": round(float(np.median(md)) * 1000, 3),
                   "fa_median_noisy": round(float(np.median(fa0)), 4)}
            if name != "noisy":
                row.update({"resid_std_over_sigma": round(float(r.std() / sigma_ref), 3) if sigma_ref else None,
                            "corr_resid_mean_image": round(float(np.corrcoef(r.reshape(-1), np.repeat(
                                mean[..., None], r.shape[3], -1).reshape(-1))[0, 1]), 3),
                            "resid_lag1_acf": round(float(np.corrcoef(r[:-1].reshape(-1), r[1:].reshape(-1))[0, 1]),
                                                    3)})
            res["dwi"].append(row)
            print(f"  {row['series']:<40} {name:<12} {json.dumps({k: v for k, v in row.items() if k not in ('series', 'method')})}",
                  flush=True)


def main() -> None:
    ap = parser(__doc__, "do_no_harm")
    ap.add_argument("--methods", default="default,none,auto,pair-sigma,sweep,bm3d,bm4d,dwi")
    args = ap.parse_args()
    want = set(args.methods.split(","))

    from c2s_cli.api import Denoiser
    from c2s_cli.errors import C2SError
    from c2s_cli.io import read_volume

    den = Denoiser(args.model, "cpu", threads=args.threads)
    res: dict = {**run_header(args.threads), "model": args.model, "pairs": [], "singles": [], "excluded": []}

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))

    def c2s_run(y: np.ndarray, **kw: object) -> tuple[np.ndarray | None, str]:
        try:
            fitted = den.fit_noise(y, **kw)  # type: ignore[arg-type]
        except C2SError as exc:
            return None, f"refused: {str(exc)[:90]}…"
        return den.denoise(y, fitted=fitted), f"{fitted.uses}, σ {fitted.domains[0].sigma:.4g}"

    a0, b0, _ = example4d_pair()
    for direction, (a, b) in (("t0→t1", (a0, b0)), ("t1→t0", (b0, a0))):
        mask = pair_mask(a, b)
        pair_sigma = float((b - a)[mask].std() / np.sqrt(2))
        base = pair_psnr(a, b, mask)

        def record(method: str, out: np.ndarray | None, seconds: float, note: str = "") -> None:
            p = base if out is None else pair_psnr(out, b, mask)
            row = {"pair": "nibabel-example4d", "direction": direction, "method": method, "psnr": round(p, 3),
                   "vs_untouched_db": round(p - base, 3), "seconds": round(seconds, 1), "note": note}
            res["pairs"].append(row)
            print(f"  {direction} {method:<36} {p:7.3f} dB ({p - base:+.3f})  {seconds:5.1f} s  {note}", flush=True)
            save()

        record("untouched", None, 0.0, f"pair σ {pair_sigma:.3f}")
        for m, kw in (("default", {}), ("none", {"noise": "none"}), ("auto", {"noise": "auto"})):
            if m in want:
                t0 = time.perf_counter()
                out, note = c2s_run(a, **kw)
                record(f"c2s {'default' if m == 'default' else '--sigma-map ' + m}", out, time.perf_counter() - t0,
                       note)
        if "pair-sigma" in want:
            t0 = time.perf_counter()
            record("c2s --sigma (pair σ)", den.denoise(a, pair_sigma), time.perf_counter() - t0)
        if "sweep" in want:  # what the network can do on this scan at all, σ chosen with the answer in hand
            for frac in (0.25, 0.5, 0.75):
                t0 = time.perf_counter()
                record(f"c2s --sigma {frac:g} × pair σ (oracle sweep)", den.denoise(a, frac * pair_sigma),
                       time.perf_counter() - t0)
        if "bm3d" in want:
            import bm3d

            t0 = time.perf_counter()
            out = np.stack([bm3d.bm3d(a[:, :, k], sigma_psd=pair_sigma) for k in range(a.shape[2])], 2)
            record("BM3D slice-wise (pair σ)", out.astype(np.float32), time.perf_counter() - t0)
        if "bm4d" in want:
            import bm4d

            t0 = time.perf_counter()
            record("BM4D (pair σ), anchor", np.asarray(bm4d.bm4d(a, sigma_psd=pair_sigma), np.float32),
                   time.perf_counter() - t0)

    # the PASL mosaic "pair": measured, not scored
    pasl = args.data / "dicom" / "siemens_pasl_mosaic"
    if pasl.is_dir():
        va, _ = read_volume(pasl / "pasl_0001.dcm")
        vb, _ = read_volume(pasl / "pasl_0051.dcm")
        obj = va.data > np.percentile(va.data, 70)
        bg = va.data < np.percentile(va.data, 30)
        d = vb.data - va.data
        res["excluded"].append({
            "pair": "siemens-pasl instances 1 / 51", "object_mean_ratio_1_over_51": round(
                float(va.data[obj].mean() / vb.data[obj].mean()), 3),
            "diff_std_object": round(float(d[obj].std()), 2), "diff_std_background": round(float(d[bg].std()), 2),
            "why": "instance 1 has another contrast (not a repeat): the difference is anatomy, not noise"})
        print(f"  excluded: {res['excluded'][-1]}", flush=True)

    if "dwi" in want:
        real_dwi(den, res, args.threads)
        save()

    singles = {"pycortex S1 BOLD EPI reference": args.data / "nifti" / "pycortex_s1_epi_ref.nii.gz",
               "dipy b0, 10 slices": args.data / "nifti" / "dipy_b0_10slices.nii.gz",
               "dipy b0, anisotropic": args.data / "nifti" / "dipy_b0_aniso.nii.gz",
               "ITK head T1 (low resolution)": args.data / "nifti" / "itk_head_t1_lowres.nii.gz",
               "GE PD series (the README example)": args.data / "dicom" / "ge_pd_brain_series"}
    for label, path in singles.items():
        if not path.exists():
            continue
        vol, _ = read_volume(path)
        y = vol.data if vol.data.ndim == 3 else vol.data[..., 0]
        for m, kw in (("default", {}), ("none", {"noise": "none"})):
            t0 = time.perf_counter()
            out, note = c2s_run(y, slice_axis=vol.slice_axis, **kw)
            row = {"scan": label, "method": f"c2s {'default' if m == 'default' else '--sigma-map none'}",
                   "note": note, "seconds": round(time.perf_counter() - t0, 1)}
            if out is not None:
                sigma = float(den.fit_noise(y, slice_axis=vol.slice_axis, **kw).domains[0].sigma)  # type: ignore[arg-type]
                row.update(residual_stats(y, out, sigma))
            res["singles"].append(row)
            print(f"  {label:<36} {row['method']:<24} {json.dumps({k: v for k, v in row.items() if k not in ('scan', 'method')})}",
                  flush=True)
            save()
    save()


if __name__ == "__main__":
    main()
