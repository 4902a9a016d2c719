"""One-step C2S denoising of volumes: x̂ = D(y, σ_d) per slice (Eq. 11), arrays in, arrays out.

Slices are processed in batches under ``torch.inference_mode``; the output does not depend on the batch size.
Exact zeros and saturated voxels are returned unchanged.
"""

from __future__ import annotations

import dataclasses
import os

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from c2s_cli.config import SelfSimilarity, check_tta
from c2s_cli.model import Precond
from c2s_cli.model.nonlocal_means import nl_reach, nonlocal_means_centre, nonlocal_means_volume, search_fits
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.selfsim import MASK_SNR, BlendFit, SureSums


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else MPS, else CPU; otherwise the named device (checked; a ValueError naming
    the parameter ``device``)."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {spec!r}: MPS is not available on this machine")
    return dev


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) under which it still runs bf16 natively
BF16_ISAS = frozenset({"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                       "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"})


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively on ``device``: a CUDA GPU with bf16, or a CPU with AVX512_BF16 or AMX
    (Linux ``/proc/cpuinfo`` flags) that oneDNN uses — not when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below that.
    Elsewhere fp32: oneDNN's bf16 emulation on other CPUs is slower than fp32 (measured ~15× on an AVX2 CPU,
    benchmarks/README.md)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if cap and cap.strip().upper() not in BF16_ISAS:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), []))
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"}) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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
    model: Precond, stack: NDArray[np.float32], sigma_d: float, device: torch.device, bf16: bool
) -> NDArray[np.float32]:
    """One batch through D (network units). On GPU out-of-memory, retry once in two halves, then fail with a hint."""
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
            raise MemoryError(f"out of {device} memory for a single slice; use the CPU device") from None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        h = len(stack) // 2
        try:
            return np.concatenate([run(stack[:h]), run(stack[h:])])
        except torch.OutOfMemoryError:
            raise MemoryError(f"out of {device} memory with {h} slices per batch; lower batch_size") from None


def denoise_frame(
    model: Precond,
    data: NDArray[np.floating],
    domain: NoiseDomain,
    *,
    axes: tuple[int, ...] = (2,),
    guides: list[tuple[NDArray[np.floating], NoiseDomain]] | None = None,
    strength: float = 1.0,
    batch_size: int | None = None,
    device: torch.device | None = None,
    bf16: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    tta: int = 1,
    passthrough: bool = True,
    blend: Sequence[BlendFit] | None = None,
    context_weight: float = 0.0,
) -> NDArray[np.float32]:
    """x̂ = D(y, σ_d) (C2S Eq. 11) for one (X, Y, Z) frame in image units; returns image units, same shape.

    Args:
        data: the frame (image units), fitted by ``domain`` (fit once; every plane and TTA pass share it).
        axes: slice along each of these array axes and average (view aggregation).
        guides: (volume, its own domain) of co-registered other contrasts, for multi-contrast models; for a
            series model (``volumes`` > 0) first its context volumes, each with the target's domain.
        strength: multiplies σ_d for the conditioning (FFDNet-style trade-off; 1 = the estimate).
        batch_size: slices per forward pass (None: about one 256² slice; the output does not depend on it).
        tta: the mean over 1, 2, 4 or 8 in-plane flips / transposes of each slice (that many passes).
        passthrough: return exact zeros and saturated voxels unchanged (False for callers working in network units
            with an identity domain).
        blend: per axis of ``axes``, the :class:`~c2s_cli.selfsim.BlendFit` of :func:`self_similarity` along that
            axis: every view's estimate becomes D + a·(NL − D) in network units before the inverse, NL computed
            slab by slab from the normalised slices (:func:`~c2s_cli.model.nonlocal_means.nonlocal_means_volume`,
            exact: every slice it is used for has all the slices its NL reads in the slab,
            :func:`~c2s_cli.model.nonlocal_means.nl_reach`).
        context_weight: a series model (``volumes`` > 0) only: every view's estimate (after ``blend``) moved
            towards the first context channel (the volume's prediction from the other volumes, in the target's
            network units) by this weight, f ← f + w·(P − f), before the inverse.
    Every view (plane × TTA transform) is mapped back to image units by the exact unbiased inverse and the views are
    averaged there (see :mod:`c2s_cli.noise.domain` for why and what it measured).
    Memory: the input, the output (the accumulator) and a slab of normalised slices (and its NL estimate).
    """
    device = device or torch.device("cpu")
    check_tta(tta)
    data = np.asarray(data, dtype=np.float32)
    want = model.cfg.volumes + model.cfg.guides
    if len(guides or []) != want:
        raise ValueError(f"model expects {model.cfg.volumes} context volume(s) and {model.cfg.guides} guide "
                         f"contrast(s), got {len(guides or [])} in all" if model.cfg.volumes else
                         f"model expects {model.cfg.guides} guide contrast(s), got {len(guides or [])}")
    acc = np.empty_like(data, dtype=np.float32)  # same memory order as the input (NIfTI is F-ordered)
    model = model.to(device).to(memory_format=torch.channels_last)
    sigma_d = float(domain.sigma_d * strength)
    if blend is not None and len(blend) != len(axes):
        raise ValueError(f"blend: one fit per axis, got {len(blend)} for {len(axes)} axes")
    if not 0 <= context_weight <= 1:
        raise ValueError(f"context_weight must be 0 to 1, got {context_weight}")
    if context_weight and not model.cfg.volumes:
        raise ValueError("context_weight needs a series model (context volumes)")
    for i, axis in enumerate(axes):
        progress = on_progress if on_progress is None or len(axes) == 1 else (
            lambda done, total, i=i: on_progress(i * total + done, len(axes) * total))
        _accumulate(model, data, domain, axis, guides or [], acc, first=i == 0, sigma_d=sigma_d,
                    batch_size=batch_size, device=device, bf16=bf16, on_progress=progress, tta=tta,
                    last=i == len(axes) - 1, views=len(axes) * tta, passthrough=passthrough, blend=blend[i] if blend else None,
                    context_weight=context_weight)
    return acc


def _accumulate(
    model: Precond, data: NDArray[np.float32], domain: NoiseDomain, axis: int,
    guides: list[tuple[NDArray[np.floating], NoiseDomain]], acc: NDArray[np.float32], *, first: bool, sigma_d: float,
    batch_size: int | None, device: torch.device, bf16: bool, on_progress: Callable[[int, int], None] | None, tta: int,
    last: bool = True, views: int = 1, passthrough: bool = True,
    blend: BlendFit | None = None, context_weight: float = 0.0,
) -> None:
    """Add (or, when ``first``, store) the image-unit estimate of every TTA view for slices along ``axis`` into
    ``acc``; on the ``last`` axis also divide by the number of ``views`` and restore the pass-through voxels, batch
    by batch (no extra pass over the volume)."""
    vol = np.moveaxis(data, axis, 0)  # a view: (Z, H, W)
    acc_view = np.moveaxis(acc, axis, 0)
    gvols = [(np.moveaxis(np.asarray(g, np.float32), axis, 0), gd) for g, gd in guides]
    weight = np.float32(blend.weight) if blend is not None and blend.weight > 0 else None
    c = model.cfg.context
    # NL of a slice needs its neighbours in the slab (and theirs, for 3×3×3 patches)
    margin = max(c, nl_reach(blend.depth)) if weight is not None and blend is not None else c
    n = vol.shape[0]
    if batch_size is None:  # about one 256² slice per pass: the fastest on CPUs (benchmarks/README.md, speed)
        batch_size = max(1, int(256 * 256 // (vol.shape[1] * vol.shape[2])))
    # slices normalised at a time: each once (not once per neighbour); about 32 slices of 256² (8 MB), so that the
    # stabilising transform's temporaries stay small beside the volume whatever the slice size
    chunk = max(batch_size, int(32 * 256 * 256 // (vol.shape[1] * vol.shape[2])))
    lo = hi = 0
    slab = np.empty((0,), np.float32)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            k = np.arange(s, min(n, s + batch_size))
            need_lo, need_hi = max(0, s - margin), min(n, int(k[-1]) + margin + 1)
            if need_lo < lo or need_hi > hi:  # the normalised slab [lo, hi) does not cover this batch's inputs
                lo, hi = need_lo, max(need_hi, min(n, need_lo + chunk + 2 * margin))
                slab = domain.forward(vol[lo:hi], domain.local(axis, slice(lo, hi)))
                if weight is not None and blend is not None:
                    nl_slab = nonlocal_means_volume(torch.from_numpy(slab), float(domain.sigma_d), blend.radius,
                                                    blend.h, depth=blend.depth).numpy()
            idx = np.clip(k[:, None] + np.arange(-c, c + 1)[None, :], 0, n - 1) - lo
            stack = slab[idx]
            if gvols:
                stack = np.concatenate([stack, np.stack([gd.forward(gv[k], gd.local(axis, k)) for gv, gd in gvols],
                                                        axis=1)], axis=1)
            stack = np.ascontiguousarray(stack)
            local = domain.local(axis, k)
            for t in range(tta):
                if t == 0:
                    pred = _forward(model, stack, sigma_d, device, bf16)
                else:
                    view = np.ascontiguousarray(_dihedral(stack, t))
                    pred = _dihedral(_forward(model, view, sigma_d, device, bf16), t, inverse=True)
                if weight is not None:
                    pred = pred + weight * (nl_slab[k - lo] - pred)
                if context_weight:  # the first context channel: the prediction from the other volumes
                    pred = pred + np.float32(context_weight) * (stack[:, 2 * c + 1] - pred)
                est = domain.inverse(pred, local)
                if first and t == 0:
                    acc_view[k] = est
                else:
                    acc_view[k] += est
            if last and (views > 1 or passthrough):
                res = acc_view[k]
                if views > 1:
                    res /= np.float32(views)
                if passthrough:
                    src = vol[k]
                    keep = domain.passthrough(src)
                    res[keep] = src[keep]
                acc_view[k] = res
            if on_progress:
                on_progress(int(k[-1]) + 1, n)


def self_similarity(
    model: Precond, data: NDArray[np.floating], domain: NoiseDomain, cfg: SelfSimilarity, *, axis: int = 2,
    device: torch.device | None = None, batch_size: int | None = None, strength: float = 1.0,
    guides: list[tuple[NDArray[np.floating], NoiseDomain]] | None = None,
) -> BlendFit:
    """SURE's weight of the self-similarity blend of one (X, Y, Z) frame (:mod:`c2s_cli.selfsim`), slices along
    ``axis``, fitted on ``cfg.fit_slices`` evenly spaced slices (at most a quarter of them): for each, the normalised
    slices around it, the network in fp32 (its Monte-Carlo divergence needs differences of ε·σ_d), conditioned as
    :func:`denoise_frame` conditions it (``strength``·σ_d), and the NL estimate, on the input and on the input moved
    by ε times a seeded Rademacher probe. ``guides``: as for :func:`denoise_frame` (a series model's context volumes,
    a multi-contrast model's guides): extra input channels, not moved — their noise is independent of the target's,
    so SURE stays unbiased for the target. Not for a model with an NL channel. Memory: a few slices. Slices no
    wider than NL's search window (``cfg.radius`` + 1 pixels on a side) get weight 0 (no blend, ``voxels`` 0).

    With several NL variants (``cfg.depths``: 3×3 and 3×3×3 patches), each gets its own weight from the same network
    passes and probe, and the fit kept is the one whose SURE falls most (``BlendFit.sure_gain``; the others are in
    ``candidates``): which patch suits a scan depends on the scan and on how well σ is known (session 22)."""
    if model.cfg.nonlocal_radius:
        raise ValueError("the self-similarity blend is not for a model with an NL channel (it has one inside)")
    want = model.cfg.volumes + model.cfg.guides
    if len(guides or []) != want:
        raise ValueError(f"model expects {want} context volume(s) / guide(s), got {len(guides or [])}")
    cfg.validate()
    device = device or torch.device("cpu")
    sd = float(domain.sigma_d)
    vol = np.moveaxis(np.asarray(data, np.float32), axis, 0)  # a view: (Z, H, W)
    if not search_fits(cfg.radius, vol.shape[1], vol.shape[2]):  # slices too small for NL's search: no blend
        return BlendFit(0.0, 0.0, 0, 0.0, 0.0, cfg.radius, cfg.h, cfg.depths[0])
    gvols = [(np.moveaxis(np.asarray(g, np.float32), axis, 0), gd) for g, gd in guides or []]
    n, c = vol.shape[0], model.cfg.context
    count = max(1, min(cfg.fit_slices, -(-n // 4)))
    ks = np.unique(np.linspace(0, n - 1, count + 2)[1:-1].round().astype(int)) if n > 2 else np.arange(n)
    gen = torch.Generator().manual_seed(cfg.seed)
    eps = cfg.epsilon * sd
    reach = max(nl_reach(depth) for depth in cfg.depths)
    half = max(c, reach)
    sums = {depth: SureSums(domain.level(MASK_SNR)) for depth in cfg.depths}
    model = model.to(device).to(memory_format=torch.channels_last)
    step = batch_size or max(1, int(256 * 256 // (vol.shape[1] * vol.shape[2])))
    with torch.inference_mode():
        for s in range(0, len(ks), step):
            batch = ks[s : s + step]
            plain, moved, rows = [], [], []
            for k in batch:
                lo, hi = max(0, k - half), min(n, k + half + 1)
                sub = torch.from_numpy(domain.forward(vol[lo:hi], domain.local(axis, slice(lo, hi))))
                b = (torch.randint(0, 2, tuple(sub.shape), generator=gen, dtype=torch.int8) * 2 - 1).float()
                mv = sub + eps * b
                idx = torch.from_numpy(np.clip(k + np.arange(-c, c + 1), 0, n - 1) - lo)
                plain.append(sub[idx].numpy())
                moved.append(mv[idx].numpy())
                nls = {}
                for depth in cfg.depths:
                    r = nl_reach(depth)
                    a0, a1 = max(0, k - r) - lo, min(n, k + r + 1) - lo  # all NL of slice k reads
                    both = nonlocal_means_centre(torch.stack([sub[a0:a1], mv[a0:a1]]), k - lo - a0, sd, cfg.radius,
                                                 cfg.h, depth).numpy()
                    nls[depth] = (both[0], both[1])
                rows.append((sub[k - lo].numpy(), nls, b[k - lo].numpy()))
            plain_s, moved_s = np.stack(plain), np.stack(moved)
            if gvols:
                extra = np.stack([gd.forward(gv[batch], gd.local(axis, batch)) for gv, gd in gvols], axis=1)
                plain_s, moved_s = (np.concatenate([a, extra], axis=1) for a in (plain_s, moved_s))
            d = _forward(model, np.ascontiguousarray(plain_s), sd * strength, device, False)
            dm = _forward(model, np.ascontiguousarray(moved_s), sd * strength, device, False)
            for j, (y, nls, probe) in enumerate(rows):
                for depth, (nl, nlm) in nls.items():
                    sums[depth].add(y, d[j], nl, dm[j], nlm, probe)
    fits = [sums[depth].fit(eps, sd, cfg.max_weight, radius=cfg.radius, h=cfg.h, depth=depth) for depth in cfg.depths]
    best = max(fits, key=lambda f: f.sure_gain)  # the first of equals
    return dataclasses.replace(best, candidates=tuple((f.depth, f.weight, f.sure_gain) for f in fits))


def denoise_network_units(
    model: Precond, x: NDArray[np.floating], sigma_d: float, *, slice_axis: int = 2, **kwargs: Any,
) -> NDArray[np.float32]:
    """:func:`denoise_frame` on a volume already in network units with noise σ_d (identity domain, no pass-through):
    for benchmarks and tests that compare networks in the network's own units."""
    return denoise_frame(model, x, NoiseDomain.identity(sigma_d), axes=(slice_axis,), passthrough=False, **kwargs)


def denoise_array(
    model: Precond,
    data: NDArray[np.floating],
    sigma: float | None = None,
    *,
    use_vst: bool = True,
    coils: int = 1,
    slice_axis: int = 2,
    guides: list[NDArray[np.floating]] | None = None,
    sigma_map: NDArray[np.floating] | None = None,
    **kwargs: Any,
) -> NDArray[np.float32]:
    """Convenience for scripts: fit the 3-D frame's :class:`NoiseDomain` by the noise policy
    (:func:`c2s_cli.noise.policy.fit`: σ in image units, None: its default choice; or a σ map of the frame's shape)
    and the guides' (one convention, :func:`~c2s_cli.noise.policy.fit_frame`), then :func:`denoise_frame` along
    ``slice_axis``."""
    from c2s_cli.noise.policy import NoiseSpec, fit, fit_frame

    spec = NoiseSpec(sigma=sigma, sigma_map=sigma_map, use_vst=use_vst, coils=coils, slice_axis=slice_axis)
    domain = fit(data, spec).domains[0]
    gd = [(g, fit_frame(g, None, use_vst=use_vst, coils=coils, slice_axis=slice_axis)) for g in guides or []]
    return denoise_frame(model, data, domain, axes=(slice_axis,), guides=gd or None, **kwargs)
