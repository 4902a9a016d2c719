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
