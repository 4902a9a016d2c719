"""Preconditioning wrapper D(x, σ) around the backbone (EDM's ``EDMPrecond`` role).

    D(x, σ) = c_skip(σ)·x_c + c_out(σ)·F(c_in(σ)·x, c_noise(σ))          (Karras et al. 2022, Eq. 7)

with c_skip = σ_data²/(σ² + σ_data²), c_out = σ·σ_data/√(σ² + σ_data²), c_in = 1/√(σ² + σ_data²),
c_noise = ln(σ)/4, x_c the centre slice. σ → 0 gives D → identity. The target slices and the series' context
volumes (in the target's units) are scaled by c_in; guide contrasts (in their own units) pass unscaled. A model with
``nonlocal_radius`` > 0 gets one more channel, last: the non-local-means estimate of the scaled centre slice (noise
std c_in·σ), computed here from the input, so it is part of D. Only the target slices are re-corrupted in training
(``n_target``). Everything outside the backbone runs in float32.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from c2s_cli.config import ModelConfig
from c2s_cli.model.nonlocal_means import nonlocal_means
from c2s_cli.model.unet import UNet


def coefficients(sigma: Tensor, sigma_data: float, ndim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """c_skip, c_out, c_in for σ (B,) shaped (B, 1, …) to broadcast over ``ndim``-dimensional inputs, and c_noise
    (B,) (Karras et al. 2022, Eq. 7; see the module docstring)."""
    sigma = sigma.float().reshape(-1)
    s2 = sigma**2 + sigma_data**2
    shape = (-1,) + (1,) * (ndim - 1)
    c_skip = (sigma_data**2 / s2).reshape(shape)
    c_out = (sigma * sigma_data / s2.sqrt()).reshape(shape)
    c_in = (1 / s2.sqrt()).reshape(shape)
    return c_skip, c_out, c_in, sigma.log() / 4


class Precond(nn.Module):
    """D(x, σ): x (B, C, H, W) with C = 2·context + 1 target slices, then ``volumes`` context volumes, then guides
    (the non-local channel, if any, is computed here, not given); σ (B,) > 0 → (B, 1, H, W)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = UNet(cfg)
        self.n_target = 2 * cfg.context + 1
        self.n_scaled = self.n_target + cfg.volumes  # channels in the target's units

    def forward(self, x: Tensor, sigma: Tensor, *, autocast_bf16: bool = False) -> Tensor:
        x = x.float()
        c_skip, c_out, c_in, c_noise = coefficients(sigma, self.cfg.sigma_data, x.ndim)
        target = x[:, : self.n_target]
        parts = [c_in * x[:, : self.n_scaled], x[:, self.n_scaled :]]
        if self.cfg.nonlocal_radius:
            noise_std = c_in.reshape(-1) * sigma.float().reshape(-1)
            parts.append(nonlocal_means(parts[0][:, : self.n_target], self.cfg.context, noise_std,
                                        self.cfg.nonlocal_radius))
        inp = torch.cat(parts, dim=1)
        if autocast_bf16:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                f = self.net(inp, c_noise)
        else:
            f = self.net(inp, c_noise)
        centre = target[:, self.cfg.context : self.cfg.context + 1]
        return c_skip * centre + c_out * f.float()


def with_zero_inputs(model: Precond, cfg: ModelConfig, at: int, count: int) -> Precond:
    """A :class:`Precond` of ``cfg`` holding ``model``'s weights with ``count`` new input channels inserted before
    input channel ``at`` (× the pixel-unshuffle factor²), their first-layer weights zero: it computes exactly what
    ``model`` computes until trained. The one way c2s grows a network's input (the series' context volumes, the
    non-local channel)."""
    out = Precond(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = "net.down.0.conv1.weight"
    w = state[key]
    f2 = cfg.unshuffle**2
    state[key] = torch.cat([w[:, : at * f2], w.new_zeros(w.shape[0], count * f2, *w.shape[2:]), w[:, at * f2 :]], 1)
    out.load_state_dict(state)
    return out


def with_nonlocal(model: Precond, radius: int) -> Precond:
    """``model`` with a non-local-means channel of search radius ``radius`` added as its last input channel, with
    zero first-layer weights: it computes exactly what ``model`` computes until trained (``c2s train --init``)."""
    if model.cfg.nonlocal_radius:
        raise ValueError(f"nonlocal_radius: the model already has a non-local channel (radius {model.cfg.nonlocal_radius})")
    cfg = dataclasses.replace(model.cfg, nonlocal_radius=radius)
    cfg.validate()
    return with_zero_inputs(model, cfg, model.cfg.in_channels, 1)
