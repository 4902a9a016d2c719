"""Self-distillation of multi-plane aggregation into the one-pass network: an objective for the one training loop.

The model averaged over three slicing planes (``--planes axial,coronal,sagittal``) beats the same model in one pass
by ~0.35 dB on the unseen subject, at 3× the time. ``c2s train --init MODEL --distill-planes λ`` fine-tunes the
one-pass network towards that average on the *noisy training volumes*: no clean image enters; the teacher is the start
model's own 3-plane (× TTA) output of each noisy volume, in the network's units, at that volume's estimated σ_d.
Each step of :func:`c2s_cli.loop.train` then minimises

    L = L_GDSM(batch of all training volumes)  +  λ · ‖D(y, σ_d) − T(y)‖² / σ_d²   (distillation batch)

where the distillation batch is drawn from the volumes whose name contains ``train.distill_match`` (the shipped
recipe: the 1 mm MNI parts; thick-sliced volumes have no useful other planes), with the same crop, 90° rotations,
flips, slice-order reversal and intensity gain applied to the input stack and to the teacher
(:meth:`~c2s_cli.data.PatchSampler.sample_pairs`). The best the student can reach is E[T | 5-slice stack].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from c2s_cli.config import PLANES, RunConfig
from c2s_cli.data import PatchSampler, TrainVolume, plane_axes
from c2s_cli.infer import denoise_frame
from c2s_cli.noise.domain import NoiseDomain


def teacher(model: torch.nn.Module, v: TrainVolume, tta: int, bf16: bool = False) -> list[NDArray[np.float32]]:
    """The model's multi-plane (× ``tta``) estimate of volume ``v`` in network units, in each of ``v``'s plane
    layouts (the arrays :class:`PatchSampler` draws targets from)."""
    axes = plane_axes(v.slice_axis)
    x = np.moveaxis(v.planes[0], 0, axes[v.plane_names[0]])  # back to the (X, Y, Z) array
    out = denoise_frame(model, x, NoiseDomain.identity(v.sigma_d), axes=(0, 1, 2), passthrough=False, tta=tta,
                        bf16=bf16)
    return [np.ascontiguousarray(np.moveaxis(out, axes[p], 0)) for p in v.plane_names]


class PlaneDistillation:
    """The distillation term: ``λ · Σ mask·(D(y, σ_d) − T)² / σ_d² / Σ mask`` on a batch of (input, teacher) pairs.

    Called by the training loop after the GDSM loss of each step, with the loop's generator (so the draws follow the
    GDSM draws of the same step) and batch size; returns a scalar tensor.
    """

    def __init__(self, volumes: Sequence[TrainVolume], targets: list[list[NDArray[np.float32]]], cfg: RunConfig,
                 ) -> None:
        t = cfg.train
        self.lam = float(t.distill_planes)
        self.pairs = PatchSampler(list(volumes), patch=t.patch_size, context=cfg.model.context, augment=True,
                                  targets=targets)

    def __call__(self, net: Any, gen: torch.Generator, batch_size: int) -> torch.Tensor:
        yd, td, sdd, md = self.pairs.sample_pairs(batch_size, gen)
        d = net(yd.contiguous(memory_format=torch.channels_last), sdd)
        return self.lam * (md * (d - td) ** 2 / sdd.reshape(-1, 1, 1, 1) ** 2).sum() / md.sum().clamp_min(1.0)


def plane_distillation(
    init_model: torch.nn.Module, volumes: Sequence[TrainVolume], names: Sequence[str], cfg: RunConfig,
) -> tuple[PlaneDistillation, dict[str, Any]]:
    """The objective for ``cfg.train.distill_planes`` > 0: teachers of the volumes whose name contains
    ``cfg.train.distill_match`` from ``init_model`` (3 planes × ``distill_tta``), and a record for the model's
    metadata. Raises ValueError (naming ``distill_match``) when no volume matches."""
    t = cfg.train
    if t.distill_tta not in (1, 2, 4, 8):
        raise ValueError(f"distill_tta must be 1, 2, 4 or 8, got {t.distill_tta}")
    picked = [i for i, n in enumerate(names) if t.distill_match in n]
    if not picked:
        raise ValueError(f"distill_match {t.distill_match!r}: no training volume's name contains it")
    chosen = [volumes[i] for i in picked]
    targets = [teacher(init_model.eval(), v, t.distill_tta) for v in chosen]
    record = {"lam": t.distill_planes, "volumes": len(picked), "match": t.distill_match,
              "teacher": f"start model, planes {','.join(PLANES)} x tta {t.distill_tta}, network units"}
    return PlaneDistillation(chosen, targets, cfg), record
