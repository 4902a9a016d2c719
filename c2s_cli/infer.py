"""One-step C2S denoising of volumes: x̂ = D(y, σ_d) per slice (Eq. 11), arrays in, arrays out.

Slices are processed in batches under ``torch.inference_mode``; the output does not depend on the batch size.
Exact zeros and saturated voxels are returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray

from c2s_cli.config import TTA_CHOICES
from c2s_cli.data import Normalizer, slice_stack
from c2s_cli.model import Precond
from c2s_cli.noise.estimate import saturation_level, valid_mask


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else MPS, else CPU; otherwise the named device (checked)."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {spec}: MPS is not available on this machine")
    return dev


def denoise_normalized(
    model: Precond,
    x: NDArray[np.float32],
    sigma_d: float,
    *,
    slice_axis: int = 2,
    guides: list[NDArray[np.float32]] | None = None,
    batch_size: int = 4,
    device: torch.device | None = None,
    bf16: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    tta: int = 1,
) -> NDArray[np.float32]:
    """Denoise a normalised (X, Y, Z) volume slice by slice along ``slice_axis``.

    Args:
        model: D(x, σ), in eval mode.
        x: network-unit volume; guides: same-shape guide volumes in network units.
        sigma_d: noise std in network units (conditioning level).
        tta: test-time augmentation, the mean over 1, 2, 4 or 8 in-plane flips / transposes (that many passes).
    Returns:
        network-unit (X, Y, Z) float32 array.
    """
    device = device or torch.device("cpu")
    _check_tta(tta)
    c = model.cfg.context
    vol = np.ascontiguousarray(np.moveaxis(x, slice_axis, 0))
    gvols = [np.ascontiguousarray(np.moveaxis(g, slice_axis, 0)) for g in (guides or [])]
    if len(gvols) != model.cfg.guides:
        raise ValueError(f"model expects {model.cfg.guides} guide contrast(s), got {len(gvols)}")
    out = np.empty_like(vol)
    n = vol.shape[0]
    model = model.to(device).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            k = np.arange(s, min(n, s + batch_size))
            stack = slice_stack(vol, k, c)
            if gvols:
                stack = np.concatenate([stack, np.stack([g[k] for g in gvols], axis=1)], axis=1)
            out[k] = _forward(model, np.ascontiguousarray(stack), float(sigma_d), device, bf16, tta)
            if on_progress:
                on_progress(int(k[-1]) + 1, n)
    return np.moveaxis(out, 0, slice_axis)


def _check_tta(tta: int) -> None:
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta}")


def _dihedral(x: NDArray[np.float32], t: int, inverse: bool = False) -> NDArray[np.float32]:
    """Element ``t`` (0…7) of the in-plane dihedral group on (..., H, W): bit 0 flips W, bit 1 flips H, bit 2
    transposes H and W (applied last; ``inverse`` undoes it, transpose first)."""
    def flips(a: NDArray[np.float32]) -> NDArray[np.float32]:
        if t & 1:
            a = a[..., ::-1]
        if t & 2:
            a = a[..., ::-1, :]
        return a

    if inverse:
        return flips(np.swapaxes(x, -1, -2) if t & 4 else x)
    y = flips(x)
    return np.swapaxes(y, -1, -2) if t & 4 else y


def _forward(
    model: Precond, stack: NDArray[np.float32], sigma_d: float, device: torch.device, bf16: bool, tta: int = 1
) -> NDArray[np.float32]:
    """One batch through D; with ``tta`` > 1 the mean of D over that many in-plane flips / transposes of the slices
    (each mapped back). On GPU out-of-memory, retry once in two halves, then fail with a hint."""
    if tta > 1:
        acc = _forward(model, stack, sigma_d, device, bf16)
        for t in range(1, tta):
            acc += _dihedral(_forward(model, np.ascontiguousarray(_dihedral(stack, t)), sigma_d, device, bf16), t,
                             inverse=True)
        return acc / np.float32(tta)

    def run(x: NDArray[np.float32]) -> NDArray[np.float32]:
        inp = torch.from_numpy(x)
        if device.type == "cuda":
            inp = inp.pin_memory()
        inp = inp.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        sig = torch.full((len(x),), sigma_d, device=device)
        return model(inp, sig, autocast_bf16=bf16)[:, 0].float().cpu().numpy()

    try:
        return run(stack)
    except torch.OutOfMemoryError:
        if len(stack) < 2:
            raise MemoryError(f"out of {device} memory for a single slice; try --device cpu") from None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        h = len(stack) // 2
        try:
            return np.concatenate([run(stack[:h]), run(stack[h:])])
        except torch.OutOfMemoryError:
            raise MemoryError(f"out of {device} memory with {h} slices per batch; lower --batch-size") from None


def denoise_array(
    model: Precond,
    data: NDArray[np.floating],
    sigma: float,
    *,
    use_vst: bool = True,
    coils: int = 1,
    strength: float = 1.0,
    slice_axis: int = 2,
    guides: list[tuple[NDArray[np.floating], float]] | None = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
    bf16: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    tta: int = 1,
) -> NDArray[np.float32]:
    """Denoise a (X, Y, Z) magnitude volume in image units with noise σ (image units); returns image units.

    Slices are normalised, denoised and mapped back batch by batch (memory: the input, the output and a few
    slices). Exact zeros and saturated voxels are returned unchanged.

    ``strength`` multiplies the conditioning noise level (FFDNet-style trade-off; 1 = the estimate).
    ``guides``: (volume, σ) pairs of co-registered other contrasts for multi-contrast models.
    ``tta``: test-time augmentation, the mean over 1, 2, 4 or 8 in-plane flips / transposes (that many passes).
    """
    device = device or torch.device("cpu")
    _check_tta(tta)
    data = np.asarray(data, dtype=np.float32)
    norm = Normalizer.fit(data, sigma, use_vst=use_vst, coils=coils)
    gnorms = [(np.moveaxis(np.asarray(g, np.float32), slice_axis, 0), Normalizer.fit(g, gs, use_vst=use_vst, coils=coils))
              for g, gs in guides or []]
    if len(gnorms) != model.cfg.guides:
        raise ValueError(f"model expects {model.cfg.guides} guide contrast(s), got {len(gnorms)}")
    vol = np.moveaxis(data, slice_axis, 0)  # a view: (Z, H, W)
    out = np.empty_like(data, dtype=np.float32)  # same memory order as the input (NIfTI is F-ordered)
    out_view = np.moveaxis(out, slice_axis, 0)
    c = model.cfg.context
    n = vol.shape[0]
    if batch_size is None:  # about one 256² slice per pass: the fastest on CPUs (benchmarks/README.md, speed)
        batch_size = max(1, int(256 * 256 // (vol.shape[1] * vol.shape[2])))
    sigma_d = norm.sigma_d * strength
    sat = saturation_level(data)
    model = model.to(device).to(memory_format=torch.channels_last)
    chunk = max(batch_size, 32)  # slices normalised at a time: each once (not once per neighbour), memory bounded
    lo = hi = 0
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            k = np.arange(s, min(n, s + batch_size))
            need_lo, need_hi = max(0, s - c), min(n, int(k[-1]) + c + 1)
            if need_lo < lo or need_hi > hi:  # the normalised slab [lo, hi) does not cover this batch's inputs
                lo, hi = need_lo, max(need_hi, min(n, need_lo + chunk + 2 * c))
                slab = norm.forward(vol[lo:hi])
            idx = np.clip(k[:, None] + np.arange(-c, c + 1)[None, :], 0, n - 1) - lo
            stack = slab[idx]
            if gnorms:
                stack = np.concatenate([stack, np.stack([gn.forward(gv[k]) for gv, gn in gnorms], axis=1)], axis=1)
            pred = _forward(model, np.ascontiguousarray(stack), float(sigma_d), device, bf16, tta)
            res = norm.inverse(pred)
            src = vol[k]
            keep = ~valid_mask(src, sat)
            res[keep] = src[keep]
            out_view[k] = res
            if on_progress:
                on_progress(int(k[-1]) + 1, n)
    return out
