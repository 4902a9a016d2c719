"""Which non-local estimate should the self-similarity blend take, for SSIM at 5 % (issue 32)? A probe on the
validation references only (Colin27 at 2 mm, the MNI held-out slab; never the test subject), whole volume, in
network units: y = the stabilised noisy volume (the noise policy's domain, σ estimated), D = the network's one pass
(fp32), NL = a non-local-means variant, f = D + a·(NL − D) with a SURE's weight over the object (as
``c2s_cli.selfsim``, its Monte-Carlo divergence from one Rademacher probe on the whole volume), back to image units.

This probe's own 3×3×3 version (``nl_3d_patches``, replicate padding everywhere, any through-plane radius) came
before the product's, ``nonlocal_means_volume(depth=3)`` (through-plane radius 1, reflect padding in-plane), and is
kept as what produced ``results/nl3d_probe*.json``; the two agree away from the in-plane borders.

Variants ``P:R:Z:H``: P = 2 (3×3 in-plane patches, the shipped ``nonlocal_means_volume``; Z must be 1) or 3 (3×3×3
patches), R = in-plane search radius, Z = through-plane search radius, H = filtering strength (units of σ_d).
Session 22.

  python -m c2s_bench.nl3d_probe --threads 2 [--colin PATH] [--variants 2:2:1:1.0,3:2:1:1.0,...]
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from c2s_bench.harness import add_validation_args, metrics, parser, rician, start_probe, validation_references
from c2s_cli.infer import denoise_network_units
from c2s_cli.model.nonlocal_means import EXP_FLOOR, nonlocal_means_volume
from c2s_cli.noise.policy import NoiseSpec, fit
from c2s_cli.selfsim import MASK_SNR


def nl_3d_patches(volume: torch.Tensor, noise_std: float, radius: int, zradius: int, h: float) -> torch.Tensor:
    """NL means of (Z, H, W) with 3×3×3 patches, candidates within ±radius in-plane and ±zradius slices (reflect
    padding), w = exp(−max(d − 2s², 0)/(h²s²)), d the patch's mean squared difference; the voxel itself weight 1."""
    x = volume.float()
    z, hh, ww = x.shape
    p, pz = radius + 1, zradius + 1
    xp = F.pad(x[None, None], (p, p, p, p, pz, pz), mode="replicate")[0, 0]
    s2 = float(noise_std) ** 2
    num, den = x.clone(), torch.ones_like(x)
    ref = xp[pz - 1 : pz + z + 1, p - 1 : p + hh + 1, p - 1 : p + ww + 1]  # x with a 1-voxel rim
    for dz in range(-zradius, zradius + 1):
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if (dz, dy, dx) == (0, 0, 0):
                    continue
                cand = xp[pz - 1 + dz : pz + z + 1 + dz, p - 1 + dy : p + hh + 1 + dy, p - 1 + dx : p + ww + 1 + dx]
                d = F.avg_pool3d((ref - cand).square()[None, None], 3, stride=1)[0, 0]
                w = ((d - 2 * s2).clamp(min=0) * (-1.0 / (h * h * s2))).clamp(min=EXP_FLOOR).exp()
                num += w * cand[1:-1, 1:-1, 1:-1]
                den += w
    return num / den


def main() -> None:
    ap = parser(__doc__, "nl3d_probe")
    add_validation_args(ap)
    ap.add_argument("--levels", default="0.05,0.10")
    ap.add_argument("--variants", default="2:2:1:1.0,3:2:1:1.0,3:2:1:1.5,3:3:1:1.5,3:2:2:1.5")
    ap.add_argument("--max-weight", type=float, default=0.5)
    args = ap.parse_args()
    den, res = start_probe(args)
    for subject, ref, mask in validation_references(args):
        for i, level in enumerate(float(v) for v in args.levels.split(",")):
            noisy = rician(ref, level, seed=201 + i)
            domain = fit(noisy, NoiseSpec()).domains[0]
            sd = float(domain.sigma_d)
            y = domain.forward(noisy)
            gen = torch.Generator().manual_seed(0)
            b = (torch.randint(0, 2, y.shape, generator=gen, dtype=torch.int8) * 2 - 1).float().numpy()
            eps = 0.01 * sd
            d = denoise_network_units(den.model, y, sd)
            dm = denoise_network_units(den.model, y + eps * b, sd)
            obj = d > domain.level(MASK_SNR)
            div_d = float((b * (dm - d))[obj].sum()) / eps
            rows = [("network alone", d, 0.0, 0.0)]
            for spec in args.variants.split(","):
                pk, r, zr, h = spec.split(":")
                t = time.perf_counter()

                def nl(v: np.ndarray) -> np.ndarray:
                    vt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, 2, 0)))
                    if pk == "2":
                        out = nonlocal_means_volume(vt, sd, int(r), float(h))
                    else:
                        out = nl_3d_patches(vt, sd, int(r), int(zr), float(h))
                    return np.moveaxis(out.numpy(), 0, 2)

                n0, n1 = nl(y), nl(y + eps * b)
                sec = time.perf_counter() - t
                u = (n0 - d)[obj].astype(np.float64)
                div_nl = float((b * (n1 - n0))[obj].sum()) / eps
                raw = (float(u @ (y - d)[obj].astype(np.float64)) - sd * sd * (div_nl - div_d)) / float(u @ u)
                a = float(np.clip(raw, 0, args.max_weight))
                rows.append((f"blend {spec}", d + np.float32(a) * (n0 - d), a, sec / 2))
                rows.append((f"NL {spec} alone", n0, 1.0, sec / 2))
            for name, f, a, sec in rows:
                p, s = metrics(domain.inverse(f), ref, mask)
                r_ = {"subject": subject, "level": level, "method": name, "weight": round(a, 3), "psnr": round(p, 3),
                      "ssim": round(s, 5), "nl_seconds": round(sec, 2)}
                res["rows"].append(r_)  # type: ignore[union-attr]
                print(json.dumps(r_), flush=True)
            args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
