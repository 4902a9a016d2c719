"""Noise-conditioned 2D U-Net backbone F(x, c_noise): knows nothing of σ semantics (see ``precond``).

Blocks are conv3×3 → ReLU → FiLM(noise embedding) → conv3×3 → ReLU (no normalisation layers, so bf16 and
channels-last run fast on CPUs). Optional noise-conditioned multi-head self-attention at the lowest resolution
(the paper's NVC-MSA, in spirit: the attention output is gated by the noise embedding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from c2s_cli.config import ModelConfig


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of the scalar c_noise followed by a 2-layer MLP: (B,) → (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100.0), dim // 2)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, c_noise: Tensor) -> Tensor:
        arg = c_noise[:, None].float() * self.freqs[None, :]
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.relu(self.conv1(x), inplace=True)
        scale, shift = self.film(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, h, 1 + scale)  # h·(1 + scale) + shift in one pass
        return F.relu(self.conv2(h), inplace=True)


class NoiseAttention(nn.Module):
    """Self-attention over positions whose residual is gated per channel by the noise embedding."""

    def __init__(self, channels: int, heads: int, emb_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Linear(emb_dim, channels)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        att = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = self.proj(att.transpose(-1, -2).reshape(b, c, h, w))
        return x + self.gate(emb).to(out.dtype)[:, :, None, None] * out


class UNet(nn.Module):
    """F(x, c_noise): (B, in_channels, H, W), (B,) → (B, 1, H, W). Any H, W (reflect-padded internally)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.f = cfg.unshuffle
        self.multiple = self.f * 2 ** (len(ch) - 1)
        self.embed = NoiseEmbedding(cfg.emb_dim)
        self.down = nn.ModuleList()
        cin = cfg.in_channels * self.f**2
        for c in ch:
            self.down.append(Block(cin, c, cfg.emb_dim))
            cin = c
        self.attn = NoiseAttention(ch[-1], cfg.attention_heads, cfg.emb_dim) if cfg.attention else None
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(len(ch) - 2, -1, -1):
            self.up.append(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2))
            self.up_blocks.append(Block(2 * ch[i], ch[i], cfg.emb_dim))
        self.out = nn.Conv2d(ch[0], self.f**2, 1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        h0, w0 = x.shape[-2:]
        ph, pw = (-h0) % self.multiple, (-w0) % self.multiple
        if ph or pw:
            mode = "reflect" if ph < h0 and pw < w0 else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        emb = self.embed(c_noise)
        skips = []
        h = F.pixel_unshuffle(x, self.f) if self.f > 1 else x
        for i, block in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = block(h, emb)
            skips.append(h)
        if self.attn is not None:
            h = self.attn(h, emb)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1), emb)
        out = self.out(h)
        if self.f > 1:
            out = F.pixel_shuffle(out, self.f)
        return out[..., :h0, :w0]
