"""A non-local-means estimate of the centre slice, as an extra input channel of the network (issue 32's
self-similarity lever).

For every pixel p of the centre slice x_c and every candidate q = p + δ (δ in a (2r+1)² window) in the centre slice
and its two neighbours x_j, the patch distance is the mean squared difference over 3×3 patches,
d(p, q) = mean_{u ∈ 3×3} (x_c(p + u) − x_j(q + u))², and the estimate is

    NL(p) = Σ_q w(p, q)·x_j(q) / Σ_q w(p, q),   w = exp(−max(d − 2s², 0) / (h²·s²))          (Buades et al. 2005)

with s the noise std of the input (2s² is d's expectation for two patches of noise alone) and h = 0.8 (as
scikit-image's fast mode advises with that subtraction). It is a deterministic function of the network's input (x, σ),
so a model that reads it is still a D(x_t, σ_t) and the GDSM minimiser is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

H_FACTOR = 0.8  # filtering strength h in units of the noise std s
# the smallest exponent of a weight: e^−30 ≈ 1e−13 is nothing beside the voxel's own weight 1, and it keeps exp
# and the sums away from denormal floats (which made them ~20× slower)
EXP_FLOOR = -30.0


def nonlocal_means(slices: Tensor, centre: int, noise_std: Tensor, radius: int) -> Tensor:
    """NL-means estimate of slice ``centre`` of ``slices`` (B, S, H, W), searched over ±``radius`` pixels in slices
    centre − 1 … centre + 1 (those that exist), with noise std ``noise_std`` (B,) or (1,) > 0 in the slices' units →
    (B, 1, H, W), float32. Reflect padding at the borders (zeros-free, so the background is not pulled up)."""
    x = slices.float()
    b, s, h, w = x.shape
    if not 0 <= centre < s:
        raise ValueError(f"centre {centre} is not a slice of {s}")
    if radius < 1 or radius >= min(h, w):
        raise ValueError(f"radius must be 1 to {min(h, w) - 1} for {h}×{w} slices, got {radius}")
    s2 = noise_std.float().reshape(-1, 1, 1, 1) ** 2
    neg_inv = -1.0 / (H_FACTOR**2 * s2)
    xc = x[:, centre : centre + 1]
    num = torch.zeros(b, 1, h, w, dtype=torch.float32, device=x.device)
    den = torch.zeros_like(num)
    k = 2 * radius + 1
    for j in range(max(0, centre - 1), min(s, centre + 2)):
        xp = F.pad(x[:, j : j + 1], (radius,) * 4, mode="reflect")
        for dy in range(k):
            for dx in range(k):
                v = xp[:, :, dy : dy + h, dx : dx + w]
                d = F.avg_pool2d((v - xc).square_(), 3, stride=1, padding=1, count_include_pad=False)
                wt = d.sub_(2 * s2).clamp_(min=0).mul_(neg_inv).exp_()
                num.addcmul_(wt, v)
                den.add_(wt)
    return num.div_(den)


def nl_reach(depth: int) -> int:
    """How many slices either side :func:`nonlocal_means_volume` reads to estimate a slice exactly: its candidates'
    (±1) and, for 3×3×3 patches (``depth`` 3), their patches' (±1 more)."""
    return 2 if depth == 3 else 1


def search_fits(radius: int, height: int, width: int) -> bool:
    """Whether slices of ``height`` × ``width`` pixels hold the NL search of ``radius`` (its reflect padding, the
    farthest candidate and its patch: radius + 1 pixels, needs more than that on a side)."""
    return 1 <= radius and radius + 1 < min(height, width)


def _check(depth: int, noise_std: float, radius: int, h: float, height: int, width: int) -> None:
    """Raise ValueError naming the first argument of the volume and one-slice versions that is out of range."""
    if depth not in (1, 3):
        raise ValueError(f"depth must be 1 (3×3 patches) or 3 (3×3×3 patches), got {depth}")
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}")
    if not search_fits(radius, height, width):
        raise ValueError(f"radius must be 1 to {min(height, width) - 2} for {height}×{width} slices, got {radius}")
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")


def nonlocal_means_volume(volume: Tensor, noise_std: float, radius: int = 1, h: float = 1.0,
                          chunk: int = 8, depth: int = 1) -> Tensor:
    """NL-means estimate of every voxel of ``volume`` (Z, H, W) from the (2·radius + 1)² in-plane offsets in its own
    slice and the two neighbouring slices, with 3×3 in-plane patches, noise std ``noise_std`` (> 0, the volume's
    units) and filtering strength ``h`` (units of the noise std) → (Z, H, W) float32.

    The same weights as :func:`nonlocal_means`, w = exp(−max(d − 2s², 0) / (h²·s²)) with d the patch's mean squared
    difference, here for a whole volume and computed once per pair of voxels: w(p, p + δ) = w(p + δ, p), so only
    the 13 (radius 1) offsets of one half of the 3 × (2r+1)² window are evaluated and each adds to both voxels
    (half the work of evaluating every offset). In-plane borders: reflect padding (candidates and their patches);
    the first and last slices have one neighbouring slice. ``chunk``: slices per step (the result does not depend
    on it). Memory: two accumulators of the padded volume's size beside a chunk's temporaries.

    ``depth`` 3: 3×3×3 patches instead (:func:`_nonlocal_means_3d`); 1: the 3×3 in-plane patches above.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be (Z, H, W), got shape {tuple(volume.shape)}")
    z, hh, ww = volume.shape
    _check(depth, noise_std, radius, h, hh, ww)
    if depth == 3:
        return _nonlocal_means_3d(volume, float(noise_std), radius, float(h), chunk)
    p = radius + 1  # padding: the farthest candidate and its patch
    x = F.pad(volume.float()[None], (p,) * 4, mode="reflect")[0].contiguous()  # (Z, Hp, Wp)
    hp, wp = x.shape[1], x.shape[2]
    s2 = float(noise_std) ** 2
    scale = -1.0 / (9.0 * h * h * s2)  # d = (sum over the 3×3 patch) / 9
    shift = 2.0 / (h * h)  # −(d − 2s²)/(h²s²) = scale·sum + shift
    num = x.clone()  # the voxel itself, weight 1
    den = torch.ones_like(x)
    offsets = [(0, dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1) if (dy, dx) > (0, 0)]
    offsets += [(1, dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    for lo in range(0, z, chunk):
        for dz, dy, dx in offsets:
            hi = min(lo + chunk, z - dz)
            if hi <= lo:
                continue
            # voxels q (centre of a full 3×3 patch in the padded grid) whose partner q + δ also has one
            r0, r1 = max(1, 1 - dy), min(hp - 1, hp - 1 - dy)
            c0, c1 = max(1, 1 - dx), min(wp - 1, wp - 1 - dx)
            a = x[lo:hi, r0 - 1 : r1 + 1, c0 - 1 : c1 + 1]
            b = x[lo + dz : hi + dz, r0 - 1 + dy : r1 + 1 + dy, c0 - 1 + dx : c1 + 1 + dx]
            d = (a - b).square_()
            d = d[:, :, :-2] + d[:, :, 1:-1] + d[:, :, 2:]
            d = d[:, :-2] + d[:, 1:-1] + d[:, 2:]
            w = d.mul_(scale).add_(shift).clamp_(min=EXP_FLOOR, max=0.0).exp_()
            num[lo:hi, r0:r1, c0:c1].addcmul_(w, b[:, 1:-1, 1:-1])
            den[lo:hi, r0:r1, c0:c1].add_(w)
            num[lo + dz : hi + dz, r0 + dy : r1 + dy, c0 + dx : c1 + dx].addcmul_(w, a[:, 1:-1, 1:-1])
            den[lo + dz : hi + dz, r0 + dy : r1 + dy, c0 + dx : c1 + dx].add_(w)
    return num.div_(den)[:, p:-p, p:-p].contiguous()


def _nonlocal_means_3d(volume: Tensor, noise_std: float, radius: int, h: float, chunk: int) -> Tensor:
    """NL means of (Z, H, W) with 3×3×3 patches (issue 32, session 22): the candidates are the (2·radius + 1)²
    in-plane offsets in the voxel's slice and its two neighbours, on the volume padded by reflection in-plane and by
    replication through-plane (so any number of slices works); d is the mean squared difference of the two
    3×3×3 patches and w = exp(−max(d − 2s², 0) / (h²·s²)), as for 3×3 patches. A patch three slices deep averages the
    distance over three times the voxels, so the weights are far less noisy: similar structure is found where 3×3
    patches see mostly noise (validation: ``c2s_bench.nl3d_probe``). Each pair of voxels is evaluated once (37 of
    the 75 offsets at radius 2) and adds to both. Memory: two accumulators of the padded volume's size beside a
    chunk's temporaries."""
    z, hh, ww = volume.shape
    p = radius + 1  # in-plane padding: the farthest candidate and its patch
    x = F.pad(volume.float()[None], (p,) * 4, mode="reflect")[0]
    x = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]]).contiguous()  # through-plane: the candidate ±1 and its patch ±1
    zp, hp, wp = x.shape
    s2 = noise_std**2
    scale = -1.0 / (27.0 * h * h * s2)  # d = (sum over the 3×3×3 patch) / 27
    shift = 2.0 / (h * h)
    num = x.clone()  # the voxel itself, weight 1
    den = torch.ones_like(x)
    offsets = [(0, dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1) if (dy, dx) > (0, 0)]
    offsets += [(1, dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    for lo in range(1, zp - 1, chunk):
        for dz, dy, dx in offsets:
            hi = min(lo + chunk, zp - 1 - dz)
            if hi <= lo:
                continue
            # voxels q (centre of a full 3×3×3 patch in the padded grid) whose partner q + δ also has one
            r0, r1 = max(1, 1 - dy), min(hp - 1, hp - 1 - dy)
            c0, c1 = max(1, 1 - dx), min(wp - 1, wp - 1 - dx)
            a = x[lo - 1 : hi + 1, r0 - 1 : r1 + 1, c0 - 1 : c1 + 1]
            b = x[lo - 1 + dz : hi + 1 + dz, r0 - 1 + dy : r1 + 1 + dy, c0 - 1 + dx : c1 + 1 + dx]
            d = (a - b).square_()
            d = d[:, :, :-2] + d[:, :, 1:-1] + d[:, :, 2:]
            d = d[:, :-2] + d[:, 1:-1] + d[:, 2:]
            d = d[:-2] + d[1:-1] + d[2:]
            w = d.mul_(scale).add_(shift).clamp_(min=EXP_FLOOR, max=0.0).exp_()
            num[lo:hi, r0:r1, c0:c1].addcmul_(w, b[1:-1, 1:-1, 1:-1])
            den[lo:hi, r0:r1, c0:c1].add_(w)
            num[lo + dz : hi + dz, r0 + dy : r1 + dy, c0 + dx : c1 + dx].addcmul_(w, a[1:-1, 1:-1, 1:-1])
            den[lo + dz : hi + dz, r0 + dy : r1 + dy, c0 + dx : c1 + dx].add_(w)
    return num.div_(den)[2:-2, p:-p, p:-p].contiguous()


def nonlocal_means_centre(slabs: Tensor, centre: int, noise_std: float, radius: int = 1, h: float = 1.0,
                          depth: int = 1) -> Tensor:
    """:func:`nonlocal_means_volume` of one slice only: slice ``centre`` of each slab of ``slabs`` (B, Z, H, W) →
    (B, H, W) float32, equal to ``nonlocal_means_volume(slabs[b], …)[centre]`` up to float rounding (the sums run in
    another order). For SURE's fit, which needs a few slices' estimates: the volume version would compute every
    slice of each slab (3 or 5 for one) and, to halve its work, each pair of voxels once; here every offset is
    evaluated for the one slice."""
    if slabs.ndim != 4:
        raise ValueError(f"slabs must be (B, Z, H, W), got shape {tuple(slabs.shape)}")
    b, z, hh, ww = slabs.shape
    if not 0 <= centre < z:
        raise ValueError(f"centre {centre} is not a slice of {z}")
    _check(depth, noise_std, radius, h, hh, ww)
    p = radius + 1
    x = F.pad(slabs.float(), (p,) * 4, mode="reflect")  # (B, Z, Hp, Wp)
    s2 = float(noise_std) ** 2
    if depth == 3:  # through-plane replication by 2, as the volume version; the patch spans the slices c − 1 … c + 1
        x = torch.cat([x[:, :1], x[:, :1], x, x[:, -1:], x[:, -1:]], dim=1)
        c, rows, scale = centre + 2, (-1, 0, 1), -1.0 / (27.0 * h * h * s2)
        js = [c - 1, c, c + 1]
    else:  # candidates in the slices that exist
        c, rows, scale = centre, (0,), -1.0 / (9.0 * h * h * s2)
        js = [j for j in (c - 1, c, c + 1) if 0 <= j < z]
    shift = 2.0 / (h * h)
    lo, hi = rows[0], rows[-1] + 1
    a = x[:, c + lo : c + hi, p - 1 : p + hh + 1, p - 1 : p + ww + 1]  # (B, P, H + 2, W + 2): the patch's slices
    num = torch.zeros(b, hh, ww, dtype=torch.float32, device=x.device)
    den = torch.zeros_like(num)
    for j in js:
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                cand = x[:, j + lo : j + hi, p + dy - 1 : p + dy + hh + 1, p + dx - 1 : p + dx + ww + 1]
                d = (a - cand).square_()
                d = d[:, 0] + d[:, 1] + d[:, 2] if len(rows) == 3 else d[:, 0]  # (B, H + 2, W + 2)
                d = d[:, :, :-2] + d[:, :, 1:-1] + d[:, :, 2:]
                d = d[:, :-2] + d[:, 1:-1] + d[:, 2:]
                w = d.mul_(scale).add_(shift).clamp_(min=EXP_FLOOR, max=0.0).exp_()
                num.addcmul_(w, cand[:, len(rows) // 2, 1:-1, 1:-1])
                den.add_(w)
    return num.div_(den)
