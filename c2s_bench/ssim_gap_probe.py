"""Where does the default's one pass lose SSIM to BM4D at 5 %? A diagnostic on the validation references only (the
MNI held-out slab and Colin27 at 2 mm; never the test subject): SSIM (``harness.metrics``' definition: skimage, 7×7
windows per slice, data range 1, in the head mask) split into its luminance, contrast and structure terms, and by
stratum — the band within 2 voxels of the head mask's edge, and terciles of the reference's gradient magnitude
inside; per stratum also the median of the output's local std over the reference's and the mean local std of the
error (7×7 windows). Session 21.

  python -m c2s_bench.ssim_gap_probe [--subjects colin-2mm,mni-heldout] [--level 0.05] [--threads 2]
"""
from __future__ import annotations

import json
import time

import numpy as np
from scipy import ndimage

from c2s_bench.harness import add_validation_args, metrics, parser, rician, start_probe, validation_references

C1, C2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # skimage's constants at data range 1


def ssim_terms(x: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per-voxel luminance, contrast, structure terms and SSIM of each axial slice (7×7 uniform windows, sample
    covariance as skimage)."""
    out: dict[str, list[np.ndarray]] = {"luminance": [], "contrast": [], "structure": [], "ssim": [],
                                        "std_ratio": [], "error_std": []}
    n = 49
    cov = n / (n - 1)
    for k in range(ref.shape[2]):
        a, b = ref[:, :, k].astype(np.float64), x[:, :, k].astype(np.float64)
        f = lambda v: ndimage.uniform_filter(v, 7, mode="reflect")  # noqa: E731
        ma, mb = f(a), f(b)
        va, vb = cov * (f(a * a) - ma**2), cov * (f(b * b) - mb**2)
        vab = cov * (f(a * b) - ma * mb)
        sa, sb = np.sqrt(np.maximum(va, 0)), np.sqrt(np.maximum(vb, 0))
        lum = (2 * ma * mb + C1) / (ma**2 + mb**2 + C1)
        con = (2 * sa * sb + C2) / (va + vb + C2)
        st = (vab + C2 / 2) / (sa * sb + C2 / 2)
        out["luminance"].append(lum)
        out["contrast"].append(con)
        out["structure"].append(st)
        out["ssim"].append(lum * (2 * vab + C2) / (va + vb + C2))
        out["std_ratio"].append(sb / np.maximum(sa, 1e-3))  # the output's local std over the reference's
        e = b - a
        out["error_std"].append(np.sqrt(np.maximum(cov * (f(e * e) - f(e) ** 2), 0)))  # the error's local std
    return {k: np.stack(v, 2) for k, v in out.items()}


def main() -> None:
    ap = parser(__doc__, "ssim_gap_probe")
    add_validation_args(ap)
    ap.add_argument("--level", type=float, default=0.05)
    args = ap.parse_args()
    import bm4d

    den, res = start_probe(args)
    for subject, ref, mask in validation_references(args):
        noisy = rician(ref, args.level, seed=201)  # the 5 % draw of selfsim's validation is seed 200; another one
        outs = {"BM4D (true σ)": bm4d.bm4d(noisy, sigma_psd=args.level).astype(np.float32), "c2s default": den.denoise(noisy),
                "c2s --no-self-similarity": den.denoise(noisy, self_similarity=False)}
        edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
        inner = mask & ~edge
        g = ndimage.gaussian_gradient_magnitude(ref, 1.0)
        q = np.percentile(g[inner], [33.3, 66.7])
        strata = {"all": mask, "edge band (2 voxels)": edge, "inside, low gradient": inner & (g <= q[0]),
                  "inside, mid gradient": inner & (g > q[0]) & (g <= q[1]), "inside, high gradient": inner & (g > q[1])}
        for name, out in outs.items():
            p, s = metrics(out, ref, mask)
            terms = ssim_terms(out, ref)
            row = {"subject": subject, "level": args.level, "method": name, "psnr": round(p, 3), "ssim": round(s, 5),
                   "strata": {k: {t: round(float(np.median(terms[t][m]) if t == "std_ratio" else terms[t][m].mean()), 5)
                                  for t in terms} | {"voxels": int(m.sum())}
                              for k, m in strata.items()}}
            res["rows"].append(row)  # type: ignore[union-attr]
            print(json.dumps(row), flush=True)
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
