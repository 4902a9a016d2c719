"""Self-supervised peers and the supervised bound, trained with c2s's own U-Net and budget (benchmark only).

All methods use the same preconditioned 2.5D U-Net (``c2s_cli.model.Precond``, conditioned on the constant σ_d),
the same patches, optimiser, schedule, EMA and number of steps as c2s; only the loss differs:

* Noise2Self (Batson & Royer 2019): J-invariant masking of a random pixel grid in the centre slice, masked pixels
  replaced by the mean of their 4 neighbours, loss on masked pixels.
* Neighbor2Neighbor (Huang et al. 2021): random neighbour sub-sampling of 2×2 cells, with the regulariser (γ = 2).
* Recorrupted2Recorrupted (Pang et al. 2021): y₁ = y + α·σ·z, y₂ = y − σ·z/α (α = 0.5); inference averages
  5 re-corrupted passes.
* Noise2True: supervised on the clean image (upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from c2s_cli.config import ModelConfig, RunConfig
from c2s_cli.data import PatchSampler, TrainVolume, slice_stack
from c2s_cli.model import Precond


def _n2s_loss(net: Precond, y: torch.Tensor, sd: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    c = net.cfg.context
    b, _, h, w = y.shape
    cell = 4
    oi, oj = torch.randint(cell, (2,), generator=g).tolist()
    m = torch.zeros((1, 1, h, w))
    m[..., oi::cell, oj::cell] = 1
    centre = y[:, c : c + 1]
    kernel = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=y.dtype).reshape(1, 1, 3, 3) / 4
    interp = F.conv2d(F.pad(centre, (1, 1, 1, 1), mode="reflect"), kernel)
    inp = y.clone()
    inp[:, c : c + 1] = centre * (1 - m) + interp * m
    out = net(inp, sd)
    return ((out - centre) ** 2 * m * mask).sum() / (m * mask).sum().clamp_min(1)


def _subsample(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick one pixel per 2×2 cell: idx (B, H/2, W/2) in 0..3."""
    b, ch, h, w = x.shape
    cells = x[..., : h // 2 * 2, : w // 2 * 2].reshape(b, ch, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)
    cells = cells.reshape(b, ch, h // 2, w // 2, 4)
    return torch.gather(cells, 4, idx[:, None, :, :, None].expand(b, ch, h // 2, w // 2, 1))[..., 0]


def _nb2nb_loss(net: Precond, y: torch.Tensor, sd: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    c = net.cfg.context
    b, _, h, w = y.shape
    i1 = torch.randint(4, (b, h // 2, w // 2), generator=g)
    off = torch.tensor([[1, 2], [0, 3], [0, 3], [1, 2]])  # a horizontal or vertical neighbour in the 2×2 cell
    i2 = torch.gather(off[i1], -1, torch.randint(2, (b, h // 2, w // 2, 1), generator=g))[..., 0]
    g1, g2 = _subsample(y, i1), _subsample(y, i2)
    m = _subsample(mask, i1) * _subsample(mask, i2)
    out = net(g1, sd)
    with torch.no_grad():
        full = net(y, sd)
    f1, f2 = _subsample(full, i1), _subsample(full, i2)
    diff = out - g2[:, c : c + 1]
    rec = ((diff**2) * m).sum() / m.sum().clamp_min(1)
    reg = (((diff - (f1 - f2)) ** 2) * m).sum() / m.sum().clamp_min(1)
    return rec + 2.0 * reg


R2R_ALPHA = 0.5


def _r2r_loss(net: Precond, y: torch.Tensor, sd: torch.Tensor, mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    c = net.cfg.context
    z = torch.randn(y.shape, generator=g)
    s = sd.reshape(-1, 1, 1, 1)
    y1 = y + R2R_ALPHA * s * z
    y2 = y[:, c : c + 1] - s * z[:, c : c + 1] / R2R_ALPHA
    out = net(y1, sd * math.sqrt(1 + R2R_ALPHA**2))
    return (((out - y2) ** 2) * mask).sum() / mask.sum().clamp_min(1)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"noise2self": _n2s_loss, "neighbor2neighbor": _nb2nb_loss, "r2r": _r2r_loss}


class PeerObjective:
    """One peer's loss as an objective of the one training loop (``c2s_cli.loop.train(..., gdsm=False)``): it draws
    its own batch (noisy patches, or noisy and clean pairs for Noise2True) and returns the scalar loss."""

    def __init__(self, method: str, sampler: PatchSampler, pairs: _PairSampler | None) -> None:
        if method == "noise2true" and pairs is None:
            raise ValueError("noise2true needs the clean volumes")
        self.method, self.sampler, self.pairs = method, sampler, pairs

    def __call__(self, net: Precond, gen: torch.Generator, batch: int) -> torch.Tensor:
        if self.method == "noise2true":
            assert self.pairs is not None
            y, x, sd, mask = self.pairs.sample(batch, gen)
            return (((net(y, sd) - x) ** 2) * mask).sum() / mask.sum().clamp_min(1)
        y, sd, mask = self.sampler.sample(batch, gen)
        return LOSSES[self.method](net, y, sd, mask, gen)


def train_peer(
    method: str,
    noisy: list[TrainVolume],
    cfg: RunConfig,
    *,
    clean: list[TrainVolume] | None = None,
) -> Precond:
    """Train ``method`` ('noise2self', 'neighbor2neighbor', 'r2r' or 'noise2true') with c2s's training recipe and its
    one training loop (the same schedule, clipping and EMA); returns the EMA model."""
    from c2s_cli.loop import train

    t = cfg.train
    sampler = PatchSampler(noisy, patch=t.patch_size, context=cfg.model.context, augment=False)
    pairs = _PairSampler(noisy, clean, t.patch_size, cfg.model.context) if clean is not None else None
    return train(cfg, noisy, None, None, data_summary={}, objectives=[PeerObjective(method, sampler, pairs)],
                 gdsm=False).model


class _PairSampler:
    """Same random patches of a noisy and its clean volume (axial plane only)."""

    def __init__(self, noisy: list[TrainVolume], clean: list[TrainVolume], patch: int, context: int) -> None:
        self.noisy, self.clean, self.patch, self.context = noisy, clean, patch, context

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        p, c = self.patch, self.context
        ys = np.zeros((batch, 2 * c + 1, p, p), np.float32)
        xs = np.zeros((batch, 1, p, p), np.float32)
        ms = np.zeros((batch, 1, p, p), np.float32)
        sd = np.zeros(batch, np.float32)
        for b in range(batch):
            vi = int(torch.randint(len(self.noisy), (1,), generator=g))
            n, k = self.noisy[vi], self.clean[vi]
            vol, ref, msk = n.planes[0], k.planes[0], n.masks[0]
            z, h, w = vol.shape
            cand = np.nonzero(msk.reshape(z, -1).mean(1) > 0.05)[0]
            s = int(cand[int(torch.randint(len(cand), (1,), generator=g))])
            i0 = int(torch.randint(max(h - p, 0) + 1, (1,), generator=g))
            j0 = int(torch.randint(max(w - p, 0) + 1, (1,), generator=g))
            hh, ww = min(p, h), min(p, w)
            ys[b, :, :hh, :ww] = slice_stack(vol, np.array([s]), c)[0, :, i0 : i0 + hh, j0 : j0 + ww]
            xs[b, 0, :hh, :ww] = ref[s, i0 : i0 + hh, j0 : j0 + ww]
            ms[b, 0, :hh, :ww] = 1.0
            sd[b] = n.sigma_d
        return torch.from_numpy(ys), torch.from_numpy(xs), torch.from_numpy(sd), torch.from_numpy(ms)


def r2r_predict(model: Precond, x: np.ndarray, sigma_d: float, passes: int = 5, seed: int = 0) -> np.ndarray:
    """R2R inference: average of ``passes`` forward passes on y + α·σ·z (slices along axis 2)."""
    from c2s_cli.infer import denoise_network_units

    rng = np.random.default_rng(seed)
    acc = np.zeros_like(x)
    for _ in range(passes):
        noisy = x + R2R_ALPHA * sigma_d * rng.standard_normal(x.shape).astype(np.float32)
        acc += denoise_network_units(model, noisy, sigma_d * math.sqrt(1 + R2R_ALPHA**2))
    return acc / passes


__all__ = ["train_peer", "r2r_predict", "ModelConfig"]
