"""Does a second, Wiener stage with the network's estimate as its pilot (BM3D's second stage) bring back the fine
texture the one pass loses at 5 % (issue 32: SSIM −0.0006 against BM4D)? A probe on the validation references only
(Colin27 at 2 mm and the MNI held-out slab; never the test subject), in image units with the true σ (the head's
Rician noise is close to Gaussian at these levels). Rows: BM4D (true σ), the default's one pass, BM4D's Wiener stage
alone with the one pass as its pilot (``bm4d(..., stage_arg=pilot)``, its block matching and 3-D grouping), and a
Wiener filter without grouping: sliding B³ DCT blocks (stride s), gain P²/(P² + σ²) from the pilot's coefficients
applied to the noisy block's, blocks averaged with BM3D's weights 1/Σg². Session 22.

  python -m c2s_bench.wiener_probe [--subjects colin-2mm,mni-heldout] [--levels 0.05,0.10] [--threads 2]
"""
from __future__ import annotations

import json
import time

import numpy as np
import scipy.fft
import torch

from c2s_bench.harness import add_validation_args, metrics, parser, rician, start_probe, validation_references


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n × n, float32): rows are the basis vectors (scipy's DCT of the identity)."""
    return torch.from_numpy(scipy.fft.dct(np.eye(n), norm="ortho", axis=0)).float()


def dct_wiener(noisy: np.ndarray, pilot: np.ndarray, sigma: float, block: int = 8, stride: int = 4) -> np.ndarray:
    """Empirical Wiener filtering of ``noisy`` (X, Y, Z) in sliding ``block``³ DCT blocks with ``pilot``'s spectra:
    every tiling offset (multiples of ``stride``) tiles the reflect-padded volume without overlap; BM3D's aggregation
    weights (1/Σ g²) per block."""
    y = torch.from_numpy(np.asarray(noisy, np.float32))
    p = torch.from_numpy(np.asarray(pilot, np.float32))
    pad = block
    yp = torch.nn.functional.pad(y[None, None], (pad,) * 6, mode="reflect")[0, 0]
    pp = torch.nn.functional.pad(p[None, None], (pad,) * 6, mode="reflect")[0, 0]
    acc = torch.zeros_like(yp)
    wsum = torch.zeros_like(yp)
    c = dct_matrix(block)
    s2 = float(sigma) ** 2
    offs = range(0, block, stride)
    for o0 in offs:
        for o1 in offs:
            for o2 in offs:
                n0, n1, n2 = ((yp.shape[i] - o) // block for i, o in enumerate((o0, o1, o2)))
                sl = (slice(o0, o0 + n0 * block), slice(o1, o1 + n1 * block), slice(o2, o2 + n2 * block))

                def blocks(v: torch.Tensor) -> torch.Tensor:
                    b = v[sl].reshape(n0, block, n1, block, n2, block).permute(0, 2, 4, 1, 3, 5)
                    return torch.einsum("ai,bj,ck,xyzijk->xyzabc", c, c, c, b)

                Y, P = blocks(yp), blocks(pp)
                g = P * P / (P * P + s2)
                w = 1.0 / (g.square().sum(dim=(3, 4, 5), keepdim=True) * s2 + 1e-12)
                est = torch.einsum("ai,bj,ck,xyzabc->xyzijk", c, c, c, g * Y) * w
                est = est.permute(0, 3, 1, 4, 2, 5).reshape(n0 * block, n1 * block, n2 * block)
                acc[sl] += est
                wsum[sl] += w.expand(-1, -1, -1, block, block, block).permute(0, 3, 1, 4, 2, 5).reshape(
                    n0 * block, n1 * block, n2 * block)
    out = acc / wsum.clamp_min(1e-12)
    return out[pad:-pad, pad:-pad, pad:-pad].numpy()


def main() -> None:
    ap = parser(__doc__, "wiener_probe")
    add_validation_args(ap)
    ap.add_argument("--levels", default="0.05,0.10")
    ap.add_argument("--variants", default="bm4d-wiener,dct8s4,dct8s2,dct4s2,dct16s8")
    args = ap.parse_args()
    import bm4d

    den, res = start_probe(args)

    def row(subject: str, level: float, name: str, out: np.ndarray, seconds: float, ref: np.ndarray,
            mask: np.ndarray) -> None:
        p, s = metrics(out, ref, mask)
        r = {"subject": subject, "level": level, "method": name, "psnr": round(p, 3), "ssim": round(s, 5),
             "seconds": round(seconds, 2)}
        res["rows"].append(r)  # type: ignore[union-attr]
        print(json.dumps(r), flush=True)

    for subject, ref, mask in validation_references(args):
        for level in (float(v) for v in args.levels.split(",")):
            noisy = rician(ref, level, seed=201)
            t = time.perf_counter()
            b = bm4d.bm4d(noisy, sigma_psd=level).astype(np.float32)
            row(subject, level, "BM4D (true σ)", b, time.perf_counter() - t, ref, mask)
            t = time.perf_counter()
            d = den.denoise(noisy)
            row(subject, level, "c2s default", d, time.perf_counter() - t, ref, mask)
            for v in args.variants.split(","):
                t = time.perf_counter()
                if v == "bm4d-wiener":
                    w = np.asarray(bm4d.bm4d(noisy, sigma_psd=level, stage_arg=d), np.float32)
                else:
                    bs, st = (int(x) for x in v[3:].split("s"))
                    w = dct_wiener(noisy, d, level, bs, st)
                sec = time.perf_counter() - t
                row(subject, level, f"{v} (pilot c2s)", w, sec, ref, mask)
                row(subject, level, f"half {v}", d + 0.5 * (w - d), sec, ref, mask)
            args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
