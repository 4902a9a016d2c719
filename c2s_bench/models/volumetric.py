"""The volumetric (3-D) candidate of issue 20, inflated from the shipped 2.5-D network (research model; see
``c2s_bench.volumetric`` for the experiment and its docstring for the design). Also the GDSM block sampler and the
slab-wise 3-D denoise used to score it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from c2s_cli.data import PatchSampler
from c2s_cli.model import Precond
from c2s_cli.model.precond import coefficients
from c2s_cli.model.unet import Block, NoiseEmbedding, UNet

# relative cost of each U-Net level (channels² × kernel area / 4^level, down + up blocks; see the module docstring)
LEVEL_COST = (1104, 1152, 1152, 384)


def flops_ratio(z_levels: tuple[int, ...]) -> float:
    """FLOPs of the 3-D network over the 2.5-D one (3×3×3 kernels cost 3× the 3×3 ones)."""
    return sum(c * (3 if i in z_levels else 1) for i, c in enumerate(LEVEL_COST)) / sum(LEVEL_COST)


def inflate(conv: nn.Conv2d, kz: int) -> nn.Conv3d:
    """A (kz, 3, 3) convolution whose centre plane is ``conv``'s kernel and whose other planes are zero."""
    c3 = nn.Conv3d(conv.in_channels, conv.out_channels, (kz, 3, 3), padding=(0, 1, 1))
    with torch.no_grad():
        c3.weight.zero_()
        c3.weight[:, :, kz // 2] = conv.weight
        c3.bias.copy_(conv.bias)
    return c3


def conv_slices(conv: nn.Conv3d, h: Tensor, depth: int) -> Tensor:
    """``conv`` (a (kz, 3, 3) kernel, z-replicate padded) on slices laid out as a batch: h (B·D, C, H, W) →
    (B·D, C', H, W). kz = 1 is a 2-D convolution; kz = 3 stacks each slice's neighbours as channels (the 2.5-D
    trick) and runs one 2-D convolution with the kernel's planes side by side: the same sums as the 3-D convolution,
    on oneDNN's fast 2-D path (bf16, channels-last)."""
    kz = conv.kernel_size[0]
    w = conv.weight
    if kz == 1:
        return F.conv2d(h, w[:, :, 0], conv.bias, padding=1)
    n, c, hh, ww = h.shape
    h5 = h.reshape(n // depth, depth, c, hh, ww)
    r = kz // 2
    idx = torch.clamp(torch.arange(-r, depth + r, device=h.device), 0, depth - 1)
    hp = h5[:, idx]  # (B, D + 2r, C, H, W), z-replicate padded
    stacked = torch.cat([hp[:, k : k + depth] for k in range(kz)], dim=2).reshape(n, kz * c, hh, ww)
    w2 = w.permute(0, 2, 1, 3, 4).reshape(w.shape[0], kz * c, 3, 3)
    return F.conv2d(stacked.contiguous(memory_format=torch.channels_last), w2, conv.bias, padding=1)


class Block3D(nn.Module):
    """:class:`~c2s_cli.model.unet.Block` in 3-D: conv → ReLU → FiLM → conv → ReLU; kz = 1 or 3 (z-replicate pad).
    Works on slices laid out as a batch (B·D, C, H, W); the FiLM parameters are per volume (B, 2C)."""

    def __init__(self, block: Block, kz: int) -> None:
        super().__init__()
        self.kz = kz
        self.conv1 = inflate(block.conv1, kz)
        self.conv2 = inflate(block.conv2, kz)
        self.film = copy.deepcopy(block.film)

    def modulate(self, h: Tensor, emb: Tensor, depth: int) -> Tensor:
        scale, shift = self.film(emb).to(h.dtype).repeat_interleave(depth, 0)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(shift, h, 1 + scale)

    def forward(self, x: Tensor, emb: Tensor, depth: int) -> Tensor:
        h = F.relu(conv_slices(self.conv1, x, depth), inplace=True)
        h = self.modulate(h, emb, depth)
        return F.relu(conv_slices(self.conv2, h, depth), inplace=True)


class UNet3D(nn.Module):
    """F(x, c_noise): (B, 1, D, H, W), (B,) → (B, 1, D, H, W), inflated from a 2.5-D :class:`UNet`."""

    def __init__(self, unet: UNet, context: int, z_levels: tuple[int, ...]) -> None:
        super().__init__()
        if unet.f != 1 or unet.attn is not None:
            raise ValueError("only U-Nets without pixel-unshuffle and attention can be inflated")
        self.context = context
        self.multiple = unet.multiple
        self.z_levels = tuple(z_levels)
        self.embed: NoiseEmbedding = copy.deepcopy(unet.embed)
        first = unet.down[0].conv1  # (C0, 2·context + 1, 3, 3): one input channel per neighbouring slice
        self.first = nn.Conv3d(1, first.out_channels, (2 * context + 1, 3, 3), padding=(0, 1, 1))
        with torch.no_grad():
            self.first.weight.copy_(first.weight[:, None])
            self.first.bias.copy_(first.bias)
        levels = len(unet.down)
        self.down = nn.ModuleList()
        for i, b in enumerate(unet.down):
            blk = Block3D(b, 3 if i in z_levels else 1)
            if i == 0:  # its first convolution is ``self.first``; the rest as usual
                blk.conv1 = nn.Identity()  # type: ignore[assignment]
            self.down.append(blk)
        self.up = nn.ModuleList()
        for u in unet.up:
            t3 = nn.ConvTranspose3d(u.in_channels, u.out_channels, (1, 2, 2), stride=(1, 2, 2))
            with torch.no_grad():
                t3.weight.copy_(u.weight[:, :, None])
                t3.bias.copy_(u.bias)
            self.up.append(t3)
        self.up_blocks = nn.ModuleList(
            Block3D(b, 3 if (levels - 2 - j) in z_levels else 1) for j, b in enumerate(unet.up_blocks))
        self.out = nn.Conv3d(unet.out.in_channels, unet.out.out_channels, 1)
        with torch.no_grad():
            self.out.weight.copy_(unet.out.weight[:, :, None])
            self.out.bias.copy_(unet.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        b, _, depth, h0, w0 = x.shape
        ph, pw = (-h0) % self.multiple, (-w0) % self.multiple
        if ph or pw:
            mode = "reflect" if ph < h0 and pw < w0 else "replicate"
            x = F.pad(x, (0, pw, 0, ph, 0, 0), mode=mode)
        emb = self.embed(c_noise)
        slices = x[:, 0].reshape(b * depth, 1, *x.shape[-2:])  # (B·D, 1, H, W)
        h = conv_slices(self.first, slices, depth)  # the 2·context + 1 neighbouring slices, as the 2.5-D network
        skips = []
        for i, block in enumerate(self.down):
            if i == 0:  # its first convolution was applied above
                h = block.modulate(F.relu(h, inplace=True), emb, depth)
                h = F.relu(conv_slices(block.conv2, h, depth), inplace=True)
            else:
                h = block(F.avg_pool2d(h, 2), emb, depth)
            skips.append(h)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips[:-1])):
            u = F.conv_transpose2d(h, up.weight[:, :, 0], up.bias, stride=2)
            h = block(torch.cat([u, skip], dim=1), emb, depth)
        out = F.conv2d(h, self.out.weight[:, :, 0], self.out.bias)[..., :h0, :w0]
        return out.reshape(b, depth, 1, h0, w0).transpose(1, 2)


class Precond3D(nn.Module):
    """D(x, σ) = c_skip·x + c_out·F(c_in·x, ln σ / 4) (EDM preconditioning, as :class:`Precond`) on (B, 1, D, H, W)."""

    def __init__(self, base: Precond, z_levels: tuple[int, ...]) -> None:
        super().__init__()
        if base.cfg.guides:
            raise ValueError("guide contrasts are not supported by the volumetric candidate")
        self.cfg = base.cfg
        self.n_target = 1  # for the GDSM loss: one noisy channel, all of it the target
        self.net = UNet3D(base.net, base.cfg.context, z_levels)

    def forward(self, x: Tensor, sigma: Tensor, *, autocast_bf16: bool = False) -> Tensor:
        x = x.float()
        c_skip, c_out, c_in, c_noise = coefficients(sigma, self.cfg.sigma_data, x.ndim)
        if autocast_bf16:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                f = self.net(c_in * x, c_noise)
        else:
            f = self.net(c_in * x, c_noise)
        return c_skip * x + c_out * f.float()


class BlockSampler(PatchSampler):
    """Random (D, P, P) blocks of the training volumes' plane layouts, with the 2.5-D sampler's augmentation
    (in-plane rotations and flips, slice-order reversal, contrast inversion, gain); blocks past a volume's edge are
    zero and masked. The volume, plane and slice are drawn as :class:`~c2s_cli.data.PatchSampler` draws them; the
    block is centred on that slice."""

    def __init__(self, volumes: list, depth: int, patch: int, invert: float) -> None:
        super().__init__(volumes, patch=patch, context=0, augment=True, invert=invert)
        self.depth = depth

    def sample(self, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        d, p = self.depth, self.patch
        ys = np.zeros((batch, 1, d, p, p), np.float32)
        ms = np.zeros((batch, 1, d, p, p), np.float32)
        sd = np.zeros(batch, np.float32)
        for b, vi in enumerate(torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()):
            v = self.volumes[vi]
            pi, k = self.pick(vi, gen)
            vol, msk = v.planes[pi], v.masks[pi]
            z, h, w = vol.shape
            z0 = min(max(k - d // 2, 0), max(z - d, 0))
            i0 = int(torch.randint(max(h - p, 0) + 1, (1,), generator=gen))
            j0 = int(torch.randint(max(w - p, 0) + 1, (1,), generator=gen))
            dd, hh, ww = min(d, z), min(p, h), min(p, w)
            ys[b, 0, :dd, :hh, :ww] = vol[z0 : z0 + dd, i0 : i0 + hh, j0 : j0 + ww]
            ms[b, 0, :dd, :hh, :ww] = msk[z0 : z0 + dd, i0 : i0 + hh, j0 : j0 + ww]
            sd[b] = v.sigma_d
            r = int(torch.randint(8, (1,), generator=gen))
            ys[b], ms[b] = np.rot90(ys[b], r % 4, axes=(2, 3)), np.rot90(ms[b], r % 4, axes=(2, 3))
            if r >= 4:
                ys[b], ms[b] = ys[b][..., ::-1], ms[b][..., ::-1]
            if torch.rand((1,), generator=gen).item() < 0.5:
                ys[b], ms[b] = ys[b][:, ::-1], ms[b][:, ::-1]
            if self.invert > 0 and torch.rand((1,), generator=gen).item() < self.invert:
                ys[b] = np.where(ms[b] > 0, 1.0 - ys[b], 0.0)
            gain = float(0.75 + 0.5 * torch.rand((1,), generator=gen).item())
            ys[b] *= gain
            sd[b] *= gain
        return torch.from_numpy(ys), torch.from_numpy(sd), torch.from_numpy(ms)


def load_candidate(path: Path) -> Precond3D:
    """A candidate written by ``train``: a c2s model file (format, version and config checked as for any model) whose
    metadata also names the 3-D levels (``volumetric.z_levels``)."""
    from safetensors.torch import load_file

    from c2s_cli.checkpoint import check_meta, read_header

    meta, _ = read_header(path)
    cfg = check_meta(path, meta)
    model = Precond3D(Precond(cfg.model), tuple(json.loads(meta["volumetric"])["z_levels"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def denoise3d(model: nn.Module, noisy: np.ndarray, slice_axis: int = 2, bf16: bool = False,
              slab: int = 64, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """x̂ = D(y, σ_d) of a (X, Y, Z) magnitude volume with the 3-D network, in the shipped pipeline's noise domain
    (σ estimated on the whole scan, Rician VST, the exact unbiased inverse, zeros and saturated voxels kept); slabs
    of ``slab`` slices with a halo of 16. ``axes``: run with each of these array axes as the network's depth axis and
    average in image units (as ``--planes`` does; default: ``slice_axis`` alone)."""
    from c2s_cli.noise.domain import NoiseDomain

    dom = NoiseDomain.fit(noisy, slice_axis=slice_axis)
    net_units = dom.forward(noisy)
    acc = np.zeros(noisy.shape, np.float32)
    axes = axes or (slice_axis,)
    for axis in axes:
        x = np.moveaxis(net_units, axis, 0)
        out = np.empty_like(x)
        n, halo = x.shape[0], 16
        with torch.inference_mode():
            for s in range(0, n, slab):
                lo, hi = max(0, s - halo), min(n, s + slab + halo)
                inp = torch.from_numpy(np.ascontiguousarray(x[lo:hi]))[None, None]
                pred = model(inp, torch.tensor([dom.sigma_d]), autocast_bf16=bf16)[0, 0].numpy()
                out[s : min(n, s + slab)] = pred[s - lo : s - lo + min(slab, n - s)]
        acc += dom.inverse(np.moveaxis(out, 0, axis))
    est = acc / np.float32(len(axes))
    keep = dom.passthrough(noisy)
    est[keep] = noisy[keep]
    return est.astype(np.float32)


