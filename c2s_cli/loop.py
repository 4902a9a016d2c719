"""Self-supervised training with the GDSM loss (no clean images), EMA of the weights, resumable state.

``train`` works on in-memory :class:`~c2s_cli.data.TrainVolume` objects and a run folder; it knows nothing of
the CLI. Progress is reported through the ``on_log`` callback; ``stats.jsonl`` gets one line per log tick.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from c2s_cli.checkpoint import load_state, save_model, save_state
from c2s_cli.config import RunConfig
from c2s_cli.data import PatchSampler, TrainVolume
from c2s_cli.losses import GDSMLoss
from c2s_cli.model import Precond


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    loss: float
    val_loss: float | None
    model: Precond  # the EMA weights


def _split_slices(
    volumes: list[TrainVolume], fraction: float, seed: int
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]] | None]:
    """Hold out a fraction of each volume's axial slices (whole slices, same in every plane's index space)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    any_val = False
    for v in volumes:
        tr_planes, va_planes = [], []
        for m in v.masks:
            cand = np.nonzero(m.reshape(m.shape[0], -1).mean(1) > 0.05)[0]
            n_val = int(round(fraction * len(cand))) if len(cand) >= 10 else 0
            chosen = rng.choice(cand, n_val, replace=False) if n_val else np.array([], dtype=np.int64)
            tr_planes.append(np.setdiff1d(cand, chosen))
            va_planes.append(np.sort(chosen))
            any_val |= n_val > 0
        train.append(tr_planes)
        val.append(va_planes)
    return train, (val if any_val else None)


def lr_at(cfg: RunConfig, step: int) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up over ``train.warmup`` steps, then constant or a
    cosine decay to 5 % of ``train.lr`` at ``train.steps``."""
    t = cfg.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    if t.schedule == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_step(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor, grad_clip: float,
                   step: int) -> None:
    """One update from a scalar ``loss``: refuse a non-finite loss (naming the step), backward, clip the gradient
    norm to ``grad_clip``, step."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower --lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """Move the EMA weights towards the model's, with warm-up: early on (decay capped at (1 + step)/(10 + step)) they
    follow the weights closely, with no long memory of the initialisation."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - d)


def _opt_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    out = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_opt(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], tensors: dict[str, torch.Tensor]) -> None:
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt.state[params[int(i)]][name] = v.clone()


def train(
    cfg: RunConfig,
    volumes: list[TrainVolume],
    out_model: Path | None,
    run_dir: Path | None,
    *,
    data_summary: dict[str, Any],
    init: Precond | None = None,
    resume: bool = False,
    device: str = "cpu",
    on_log: Callable[[dict[str, Any]], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
    evaluate: Callable[[Precond], float] | None = None,
    objectives: Sequence[Callable[[Any, torch.Generator, int], torch.Tensor]] = (),
    sampler: Any | None = None,
    gdsm: bool = True,
) -> TrainResult:
    """Train a C2S denoiser and write its EMA weights to ``out_model``.

    Args:
        cfg: the full run config (model, GDSM, noise, training).
        volumes: normalised training volumes.
        out_model: final ``.safetensors`` (written at the end; the run folder holds periodic snapshots); None: keep
            the result in memory only (``TrainResult.model``).
        run_dir: folder for ``config.json``, ``stats.jsonl``, ``model.safetensors``, ``state.safetensors``; None:
            no files at all (per-scan adaptation).
        init: start from these weights (fine-tuning) instead of a fresh initialisation.
        resume: continue from ``run_dir/state.safetensors``.
        evaluate: optional score of the EMA model (e.g. PSNR against a reference), logged at validation ticks.
        objectives: more terms of each step's loss after the GDSM one, each called as ``objective(net, generator,
            batch_size)`` and returning a scalar (e.g. :class:`c2s_cli.distill.PlaneDistillation`).
    """
    t = cfg.train
    world, rank, created_group = _dist_setup(device)
    if rank != 0:  # only rank 0 logs and writes
        out_model, run_dir, on_log = None, None, None
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed + 1000 * rank)  # each rank draws its own patches and noise
    model = Precond(cfg.model) if init is None else copy.deepcopy(init)
    model.to(device).train()
    planar = all(p.ndim != 5 for p in model.parameters())  # channels-last is a 2-D layout
    if planar:
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = list(model.parameters())
    net: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = _DDPNet(DistributedDataParallel(model), model)
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    loss_fn = GDSMLoss(cfg.gdsm)
    train_slices, val_slices = _split_slices(volumes, t.val_fraction, t.seed)
    sampler = sampler or PatchSampler(volumes, patch=t.patch_size, context=cfg.model.context, augment=t.augment, slices=train_slices,
                           guide_dropout=t.guide_dropout, invert=t.invert, n_volumes=cfg.model.volumes)
    val_batches = None
    if val_slices is not None:
        vs = PatchSampler(volumes, patch=t.patch_size, context=cfg.model.context, augment=False, slices=val_slices,
                          n_volumes=cfg.model.volumes)
        vg = torch.Generator().manual_seed(t.seed + 1)
        val_batches = [(*vs.sample(t.batch_size, vg), torch.Generator().manual_seed(t.seed + 2 + i)) for i in range(4)]

    start = 0
    if run_dir is None and resume:
        raise ValueError("resume needs a run folder")
    state_path = run_dir / "state.safetensors" if run_dir is not None else None
    if resume and state_path is not None:
        tensors, info = load_state(state_path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_opt(opt, params, tensors)
        gen.set_state(tensors["rng"])
        start = int(info["step"])
    elif run_dir is not None:
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    decay = 0.5 ** (1.0 / max(1, t.ema_halflife))
    stats = open(run_dir / "stats.jsonl", "a") if run_dir is not None else None
    meta = {"training": {**data_summary}, **(extra_meta or {})}

    def snapshot(step: int) -> None:
        if run_dir is None or state_path is None:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        tensors.update(_opt_tensors(opt, params))
        tensors["rng"] = gen.get_state()
        meta["training"]["steps"] = step
        save_model(run_dir / "model.safetensors", ema.state_dict(), cfg, meta)
        save_state(state_path, tensors, {"step": step})

    t0 = time.perf_counter()
    running, val_loss, psnr = float("nan"), None, None
    step = start
    try:
        for step in range(start, t.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            loss = torch.zeros((), device=device)
            if gdsm:
                y, sd, mask = sampler.sample(t.batch_size, gen)
                y = y.to(device).contiguous(memory_format=torch.channels_last) if planar else y.to(device)
                sd, mask = sd.to(device), mask.to(device)
                loss_map = loss_fn(net, y, sd, mask, generator=gen, autocast_bf16=t.bf16)
                loss = loss_map.sum() / mask.sum().clamp_min(1.0)
            elif not objectives:
                raise ValueError("gdsm=False needs objectives")
            for objective in objectives:
                loss = loss + objective(net, gen, t.batch_size)
            optimizer_step(opt, params, loss, t.grad_clip, step)
            ema_update(ema, model, step, decay)
            running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                if done % (t.log_every * 4) == 0 or done == t.steps:
                    if val_batches is not None:
                        val_loss = _validate(ema, loss_fn, val_batches, device)
                    if evaluate is not None:
                        psnr = evaluate(ema)
                rec = {
                    "step": done,
                    "total_steps": t.steps,
                    "loss": running,
                    "val_loss": val_loss,
                    "psnr": psnr,
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,  # since this process started (or resumed) the run
                    "steps_per_second": (done - start) / max(time.perf_counter() - t0, 1e-9),
                }
                if stats is not None:
                    stats.write(json.dumps(rec) + "\n")
                    stats.flush()
                if on_log:
                    on_log(rec)
            if done % t.checkpoint_every == 0 and done < t.steps:
                snapshot(done)
        step = t.steps
        snapshot(step)
    finally:
        if stats is not None:
            stats.close()
    meta["training"]["steps"] = step
    meta["training"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if world > 1:
        _check_ranks_agree(ema, world)
    if out_model is not None:
        save_model(out_model, ema.state_dict(), cfg, meta)
    if created_group:
        del net
        _dist_teardown()
    return TrainResult(step, time.perf_counter() - t0, running, val_loss, ema.to("cpu"))


class _DDPNet:
    """A DistributedDataParallel module that still exposes the Precond attributes the loss reads."""

    def __init__(self, ddp: Any, base: Precond) -> None:
        self.ddp, self.cfg, self.n_target = ddp, base.cfg, base.n_target

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.ddp(*args, **kwargs)


def dist_env() -> tuple[int, int]:
    """(world size, rank) as torchrun sets them in the environment (1, 0 outside torchrun): the one place that reads
    them. Only rank 0 checks outputs, logs and writes."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def _dist_setup(device: str) -> tuple[int, int, bool]:
    """(world size, rank, whether this call created the process group) under torchrun (env WORLD_SIZE > 1: gloo on
    CPU, NCCL on CUDA), else (1, 0, False)."""
    world, _ = dist_env()
    if world <= 1:
        return 1, 0, False
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_world_size(), dist.get_rank(), created


def _dist_teardown() -> None:
    """Wait for every rank (rank 0 has written the model), then destroy the process group this run created, so that a
    library caller's process is left as it was. (It did not stop a gloo rank from aborting at process exit, seen
    again in CI on 2026-12-02; ``c2s train`` ends its torchrun workers with ``os._exit``, cli/train.py.)"""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def _check_ranks_agree(ema: Precond, world: int) -> None:
    """All ranks must end with the same weights (gradients are all-reduced); raise if they do not."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in ema.parameters()])
    mine = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), dtype=torch.float64)).sum()])
    gathered = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    if not all(torch.allclose(g, gathered[0], rtol=1e-9, atol=0) for g in gathered):
        raise RuntimeError(f"distributed training diverged: ranks hold different weights {gathered}")


def _validate(model: Precond, loss_fn: GDSMLoss, batches: list[Any], device: str) -> float:
    """Self-supervised validation: the GDSM loss on held-out slices with fixed noise draws."""
    total, count = 0.0, 0.0
    with torch.no_grad():
        for y, sd, mask, g in batches:
            g = torch.Generator().set_state(g.get_state())
            lm = loss_fn(model, y.to(device), sd.to(device), mask.to(device), generator=g)
            total += float(lm.sum())
            count += float(mask.sum())
    return total / max(count, 1.0)
