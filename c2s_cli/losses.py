"""The generalised denoising score matching (GDSM) loss of Corruption2Self.

    L = w(τ) · ‖ γ·D(x_t, σ_t) + (1 − γ)·x_t − y ‖²                       (Tu, Shi & Lam 2025, Eq. 3 / Alg. 1)

with y the observed slice (noise σ_d), τ ~ U(0, T·σ_d], x_t = y + τ·n (all input slices re-corrupted together,
guide contrasts untouched), σ_t² = σ_d² + τ², σ_tg = ρ·σ_d, γ = τ²/(τ² + σ_d² − σ_tg²), w = (τ² + σ_d²)^α·γ^(−β)
(β = ``gamma_power``; β = 0 is the paper's weight).
Its minimiser is D(x_t, σ_t) = E[x_tg | x_t], the posterior mean of the image at the lower noise level σ_tg
(σ_tg = 0: the clean image). The loss is evaluated on the centre slice only, so 2.5D input keeps it exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from c2s_cli.config import GDSMConfig
from c2s_cli.model.precond import Precond


class GDSMLoss:
    """Callable returning the un-reduced loss (B, 1, H, W); reduce with the mask count."""

    def __init__(self, cfg: GDSMConfig) -> None:
        if not 0.0 <= cfg.target_fraction < 1.0:
            raise ValueError(f"target_fraction must be in [0, 1), got {cfg.target_fraction}")
        if cfg.tau_max <= 0:
            raise ValueError(f"tau_max must be > 0, got {cfg.tau_max}")
        self.cfg = cfg

    def __call__(
        self,
        net: Precond,
        y: Tensor,
        sigma_d: Tensor,
        mask: Tensor,
        *,
        generator: torch.Generator | None = None,
        autocast_bf16: bool = False,
    ) -> Tensor:
        """Args:
            net: the preconditioned denoiser D; its ``n_target`` first input channels are the noisy target stack,
                whose middle one is the target (a 3-D network: one channel, the whole block).
            y: (B, C, H, W) observed stack: 2·context + 1 noisy slices, then guide channels; or (B, C, D, H, W).
            sigma_d: (B,) noise std of y in the same (normalised) units.
            mask: (B, 1, H, W) 1 where the centre voxel counts (not zero, saturated or padding), else 0.
            generator: the source of τ and of the re-corruption noise.
        Returns:
            (B, 1, H, W) loss (or (B, 1, D, H, W)), zero outside the mask.
        """
        b = y.shape[0]
        n_t = net.n_target
        per_sample = (b,) + (1,) * (y.ndim - 1)
        sd = sigma_d.reshape(per_sample).float()
        u = 1.0 - torch.rand(per_sample, generator=generator, device=y.device)  # (0, 1]
        tau = u * self.cfg.tau_max * sd
        noise = torch.randn(y[:, :n_t].shape, generator=generator, device=y.device)
        x_t = y[:, :n_t] + tau * noise
        sigma_t = torch.sqrt(sd**2 + tau**2)
        sigma_tg = self.cfg.target_fraction * sd
        gamma = tau**2 / (tau**2 + sd**2 - sigma_tg**2)
        d = net(torch.cat([x_t, y[:, n_t:]], dim=1), sigma_t.reshape(b), autocast_bf16=autocast_bf16)
        c = (n_t - 1) // 2  # the centre of the 2·context + 1 target slices
        pred = gamma * d + (1 - gamma) * x_t[:, c : c + 1]
        weight = (tau**2 + sd**2) ** self.cfg.alpha * gamma ** (-self.cfg.gamma_power)
        return weight * mask * (pred - y[:, c : c + 1]) ** 2
