"""A volumetric (3-D) candidate for issue 20, fine-tuned from the shipped 2.5-D network and scored on the unseen subject.

The shipped network sees five neighbouring slices (its first convolution mixes them) and nothing further through the
plane. Here every layer becomes a 3-D convolution ("inflation", as I3D inflates 2-D ImageNet weights):

* the first convolution's 5 input channels become a (5, 3, 3) kernel over one channel, z-replicate padded: the same
  sum as the 2.5-D stack, computed for every slice at once;
* every other 3×3 kernel becomes (1, 3, 3), except at the levels in ``--z-levels`` (0 = full resolution … 3 = the
  bottleneck), where it becomes (3, 3, 3) with the 2-D kernel as its centre plane and zeros around it;
* pooling and up-sampling stay in-plane ((1, 2, 2)), FiLM broadcasts over z.

At initialisation the 3-D network therefore reproduces the 2.5-D one exactly, slice by slice (checked on the unseen
slab: the script prints the largest difference); fine-tuning with the GDSM loss on 3-D patches then lets the
zero-initialised through-plane taps learn. GDSM stays exact: every voxel of the patch is re-corrupted together and
the loss is on every voxel (the target is the patch itself). A control fine-tunes the 2.5-D network with the same
loss, steps and learning rate (``--control``), so the gain of the third dimension is separated from that of training
longer.

FLOPs relative to the 2.5-D network (per output voxel; the levels cost 1104, 1152, 1152 and 384 units):
z-levels 3: 1.20×, 0: 1.58×, 2,3: 1.81×, 1,2,3: 2.42×, 0,1,2,3: 3.0×.

Usage:
  python benchmarks/volumetric.py train /tmp/c2s_weights/noisy ../shared/data/dicom/ge_pd_brain_series \
      -o /tmp/s11/vol.safetensors --z-levels 2,3 --steps 3000
  python benchmarks/volumetric.py train ... --control -o /tmp/s11/control.safetensors
  python benchmarks/volumetric.py eval --data ../shared/data --candidate /tmp/s11/vol.safetensors \
      --control-model /tmp/s11/control.safetensors
  python benchmarks/volumetric.py speed --data ../shared/data --candidate /tmp/s11/vol.safetensors --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))

from c2s_cli.config import PLANES  # noqa: E402
from c2s_cli.data import PatchSampler  # noqa: E402
from c2s_cli.model import Precond  # noqa: E402
from c2s_cli.model.precond import coefficients  # noqa: E402
from c2s_cli.model.unet import Block, NoiseEmbedding, UNet  # noqa: E402

# relative cost of each U-Net level (channels² × kernel area / 4^level, down + up blocks; see the module docstring)
LEVEL_COST = (1104, 1152, 1152, 384)


def flops_ratio(z_levels: tuple[int, ...]) -> float:
    """FLOPs of the 3-D network over the 2.5-D one (3×3×3 kernels cost 3× the 3×3 ones)."""
    return sum(c * (3 if i in z_levels else 1) for i, c in enumerate(LEVEL_COST)) / sum(LEVEL_COST)


def _inflate(conv: nn.Conv2d, kz: int) -> nn.Conv3d:
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
        self.conv1 = _inflate(block.conv1, kz)
        self.conv2 = _inflate(block.conv2, kz)
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


def train_main(args: argparse.Namespace) -> None:
    import dataclasses

    from c2s_cli.batch import expand
    from c2s_cli.checkpoint import save_model
    from c2s_cli.losses import GDSMLoss
    from c2s_cli.train import ema_update, lr_at, optimizer_step
    from c2s_cli.training import init_config, load_training_set, resolve_init

    from c2s_cli.checkpoint import resolve_model
    from c2s_cli.errors import C2SError
    from c2s_cli.io.atomic import atomic_path, check_output

    try:  # c2s train's pre-flight: not an input, not a file c2s did not write, nothing existing without --force
        check_output(args.output, [*map(Path, args.inputs), resolve_model(args.init)[0]], force=args.force)
    except C2SError as exc:
        sys.exit(str(exc))
    torch.set_num_threads(args.threads)
    cfg = init_config(args.init)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps, lr=args.lr, seed=args.seed,
                                                             warmup=100))
    items = [(it.path, it.series) for it in expand(args.inputs, None)]
    volumes, summary = load_training_set(items, cfg)
    base, info = resolve_init(args.init)
    z_levels = tuple(int(v) for v in args.z_levels.split(",")) if args.z_levels else ()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 11)
    if args.control:  # the 2.5-D network, same loss family, steps and learning rate
        model: nn.Module = copy.deepcopy(base).train()
        sampler2d = PatchSampler(volumes, patch=cfg.train.patch_size, context=cfg.model.context, augment=True,
                                 invert=cfg.train.invert)
    else:
        model = Precond3D(base, z_levels).train()
        sampler = BlockSampler(volumes, args.depth, args.patch, cfg.train.invert)
    loss_fn = GDSMLoss(cfg.gdsm)  # on 3-D blocks every voxel is re-corrupted together and is a target: still exact
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=cfg.train.weight_decay)
    decay = 0.5 ** (1.0 / cfg.train.ema_halflife)
    t0, run = time.perf_counter(), float("nan")
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        if args.control:
            y, sd, mask = sampler2d.sample(cfg.train.batch_size * args.control_batches, gen)
            lm = loss_fn(model, y, sd, mask, generator=gen)
        else:
            y, sd, mask = sampler.sample(args.batch, gen)
            lm = loss_fn(model, y, sd, mask, generator=gen)
        loss = lm.sum() / mask.sum().clamp_min(1.0)
        optimizer_step(opt, params, loss, cfg.train.grad_clip, step)
        ema_update(ema, model, step, decay)
        run = loss.item() if math.isnan(run) else 0.98 * run + 0.02 * loss.item()
        if (step + 1) % 100 == 0:
            print(json.dumps({"step": step + 1, "loss": round(run, 5), "lr": round(lr_at(cfg, step), 6),
                              "seconds": round(time.perf_counter() - t0, 1)}), file=sys.stderr, flush=True)
    meta = {"init": info, "steps": args.steps, "lr": args.lr, "seed": args.seed,
            "wall_seconds": round(time.perf_counter() - t0, 1), "data": summary.get("description", "")}
    extra = ({"training": {**summary, "control_of_volumetric": meta}} if args.control else
             {"training": {**summary, **meta}, "volumetric": {"z_levels": list(z_levels), "depth": args.depth,
                                                              "patch": args.patch, "batch": args.batch}})
    with atomic_path(args.output) as tmp:
        save_model(tmp, ema.state_dict(), cfg, extra)
    print(f"wrote {args.output} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def eval_main(args: argparse.Namespace) -> None:
    from common import run_header
    from quality import head_mask, metrics, rician
    from unseen import load

    from c2s_cli.api import Denoiser
    from c2s_cli.checkpoint import load_model, resolve_model

    torch.set_num_threads(args.threads)
    ref, sigma_ref = load(args.data)
    mask = head_mask(ref)
    res: dict[str, object] = {**run_header(args.threads), "subject": "pycortex S1 T1, central 48 coronal slices "
                              "(256×256×48), unseen", "reference_sigma_pct": round(100 * sigma_ref, 2), "rows": []}
    rows: list[dict[str, object]] = res["rows"]  # type: ignore[assignment]
    from c2s_cli.infer import native_bf16

    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16(torch.device("cpu")))
    res["precision"] = "bf16" if bf16 else "fp32"
    base = Denoiser(args.model, "cpu", threads=args.threads, precision=args.precision)
    models: list[tuple[str, object]] = [("c2s default (2.5-D" + (")" if args.planes else ", one pass)"), base)]
    if args.control_model:
        models.append(("control: 2.5-D fine-tuned, same steps", Denoiser(args.control_model, "cpu",
                                                                         threads=args.threads,
                                                                         precision=args.precision)))
    if args.check_init:  # the inflated network before any training must reproduce the 2.5-D one
        init3d = Precond3D(load_model(resolve_model(args.model)[0])[0], (2, 3)).eval()
        models.append(("3-D inflated, untrained (must equal the default)", init3d))
    for cand in args.candidate:
        models.append((f"3-D candidate {Path(cand).name}", load_candidate(Path(cand))))
    if args.planes:  # view aggregation for every row: the default's --planes and each candidate along 3 axes
        models = [(f"{n}, 3 planes", m) for n, m in models if not n.startswith("3-D inflated")]
    for i, level in enumerate(float(v) for v in args.levels.split(",")):
        noisy = rician(ref, level, seed=200 + i)
        outs = {}
        if args.bm4d:  # the anchor row: BM4D given the true σ (4-5 min per level here)
            import bm4d

            t0 = time.perf_counter()
            p, s = metrics(bm4d.bm4d(noisy, sigma_psd=level).astype(np.float32), ref, mask)
            rows.append({"level": level, "method": "BM4D (true σ)", "psnr": round(p, 2), "ssim": round(s, 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{100 * level:4.0f} %  {'BM4D (true σ)':<55} PSNR {p:6.2f}  SSIM {s:.4f}", flush=True)
        for name, m in models:
            t0 = time.perf_counter()
            if isinstance(m, Denoiser):
                out = m.denoise(noisy, planes=PLANES if args.planes else ("axial",))
            else:
                out = denoise3d(m, noisy, bf16=bf16, axes=(2, 0, 1) if args.planes else None)
            dt = time.perf_counter() - t0
            outs[name] = out
            p, s = metrics(out, ref, mask)
            rows.append({"level": level, "method": name, "psnr": round(p, 2), "ssim": round(s, 4),
                         "seconds": round(dt, 1)})
            print(f"{100 * level:4.0f} %  {name:<55} PSNR {p:6.2f}  SSIM {s:.4f}  {dt:6.1f} s", flush=True)
        if args.check_init:
            diff = float(np.max(np.abs(outs[models[0][0]] - outs["3-D inflated, untrained (must equal the default)"])))
            res[f"init_max_abs_diff_{level:g}"] = diff
            print(f"      inflated vs 2.5-D: max |Δ| = {diff:.2e}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))


def speed_main(args: argparse.Namespace) -> None:
    """Side by side, alternating, ``--rounds`` times: the default's array denoise and the candidate's, on a real
    256×256×176 noisy volume (the unseen subject's central 176 coronal slices with 10 % Rician noise), same precision."""
    from common import run_header
    from quality import rician

    import nibabel as nib

    from c2s_cli.api import Denoiser
    from c2s_cli.infer import native_bf16

    torch.set_num_threads(args.threads)
    v = np.asarray(nib.load(str(args.data / "nifti" / "pycortex_s1_t1_1mm.nii.gz")).dataobj, np.float32)[:, :, 40:216]
    noisy = rician(v / float(np.percentile(v[v > 0], 99.5)), 0.10, seed=7)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16(torch.device("cpu")))
    den = Denoiser(args.model, "cpu", threads=args.threads, precision=args.precision)
    cands = [(Path(c).name, load_candidate(Path(c))) for c in args.candidate]
    res: dict[str, object] = {**run_header(args.threads), "shape": list(noisy.shape), "precision":
                              "bf16" if bf16 else "fp32", "seconds": {}}
    times: dict[str, list[float]] = res["seconds"]  # type: ignore[assignment]
    for r in range(args.rounds):
        for name, run in [("c2s default (2.5-D)", lambda: den.denoise(noisy)),
                          *[(f"3-D {n}", lambda m=m: denoise3d(m, noisy, bf16=bf16)) for n, m in cands]]:
            t0 = time.perf_counter()
            run()
            times.setdefault(name, []).append(round(time.perf_counter() - t0, 2))
            print(f"round {r}: {name:<40} {times[name][-1]:6.2f} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("inputs", nargs="+")
    tr.add_argument("-o", "--output", type=Path, required=True)
    tr.add_argument("--init", default="default")
    tr.add_argument("--z-levels", default="2,3")
    tr.add_argument("--steps", type=int, default=3000)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--depth", type=int, default=16)
    tr.add_argument("--patch", type=int, default=64)
    tr.add_argument("--batch", type=int, default=2)
    tr.add_argument("--control", action="store_true", help="fine-tune the 2.5-D network instead (the control)")
    tr.add_argument("--control-batches", type=int, default=1, help="control: batch = this × the model's batch size")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument("--force", action="store_true")
    ev = sub.add_parser("eval")
    ev.add_argument("--data", type=Path, default=here.parents[1] / "shared" / "data")
    ev.add_argument("--model", default="default")
    ev.add_argument("--candidate", action="append", default=[])
    ev.add_argument("--control-model")
    ev.add_argument("--check-init", action="store_true")
    ev.add_argument("--bm4d", action="store_true", help="add the anchor row, BM4D given the true σ")
    ev.add_argument("--planes", action="store_true", help="every row with view aggregation over the three axes")
    ev.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="every row's precision (auto: bf16 autocast where the CPU runs it natively, as c2s does)")
    ev.add_argument("--levels", default="0.05,0.10,0.15")
    ev.add_argument("--threads", type=int, default=2)
    ev.add_argument("--json", type=Path, default=here / "results" / "volumetric.json")
    sp = sub.add_parser("speed")
    sp.add_argument("--data", type=Path, default=here.parents[1] / "shared" / "data")
    sp.add_argument("--model", default="default")
    sp.add_argument("--candidate", action="append", default=[])
    sp.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--json", type=Path, default=here / "results" / "volumetric_speed.json")
    args = ap.parse_args()
    {"train": train_main, "eval": eval_main, "speed": speed_main}[args.cmd](args)


if __name__ == "__main__":
    main()
