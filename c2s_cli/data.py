"""Training data: the training set built from noisy frames, training volumes and batches (arrays in, arrays /
tensors out).

The training set (:func:`build`): noisy frames (optionally with synthetic noise) → fitted noise domains → training
volumes; reading files is the caller's (``c2s_cli.training``). Every frame gets its own noise domain, and guides the
same convention as at inference. With a σ map the training volume is in the map's unit-σ domain, so the GDSM
re-corruption (uniform τ there) is τ scaled by the local σ in image units, under which the loss stays exact per voxel.

The map between image units and the network's units is :class:`~c2s_cli.noise.domain.NoiseDomain`, fitted once
per 3-D frame: magnitude data go through the Rician / nc-χ VST (noise std 1), then are divided by a per-volume
scale (the 99.5th percentile of the valid voxels), so the network sees intensities ≈ [0, 1] with noise σ_d.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from c2s_cli.config import PLANES, RunConfig
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.estimate import valid_mask
from c2s_cli.noise.synth import rician


def slice_stack(vol: NDArray[np.float32], k: NDArray[np.int64], context: int) -> NDArray[np.float32]:
    """2.5D stacks: for slices ``k`` of ``vol`` (Z, H, W) return (len(k), 2·context + 1, H, W), edges replicated."""
    offsets = np.arange(-context, context + 1)
    idx = np.clip(k[:, None] + offsets[None, :], 0, vol.shape[0] - 1)
    return vol[idx]


@dataclass
class TrainVolume:
    """One normalised training volume in slice-first layouts for each requested plane."""

    planes: list[NDArray[np.float32]]  # each (Z, H, W), Z the slicing axis of that plane
    masks: list[NDArray[np.bool_]]
    guides: list[list[NDArray[np.float32]]]  # per plane, per guide: (Z, H, W)
    sigma_d: float
    name: str
    slice_axis: int = 2  # the (X, Y, Z) axis of the acquisition's slices
    plane_names: tuple[str, ...] = ("axial",)  # the plane of each layout in ``planes``


def make_train_volume(
    data: NDArray[np.float32],
    norm: NoiseDomain,
    *,
    slice_axis: int,
    planes: tuple[str, ...],
    name: str,
    guides: list[NDArray[np.float32]] | None = None,
) -> TrainVolume:
    """Normalise a (X, Y, Z) volume and lay it out slice-first for each plane.

    "axial" means the acquisition's slice axis; "coronal"/"sagittal" the other two axes.
    """
    x = norm.forward(data)
    valid = valid_mask(data)
    axes = plane_axes(slice_axis)
    out_p, out_m, out_g = [], [], []
    for p in planes:
        a = axes[p]
        out_p.append(np.ascontiguousarray(np.moveaxis(x, a, 0)))
        out_m.append(np.ascontiguousarray(np.moveaxis(valid, a, 0)))
        out_g.append([np.ascontiguousarray(np.moveaxis(g, a, 0)) for g in (guides or [])])
    return TrainVolume(out_p, out_m, out_g, norm.sigma_d, name, slice_axis, tuple(planes))


def plane_axes(slice_axis: int) -> dict[str, int]:
    """Array axis sliced for each plane of a 3D volume: "axial" is ``slice_axis`` (the acquisition's), "coronal" and
    "sagittal" the other two in increasing order (the same mapping in training and at inference)."""
    order = [slice_axis, *[a for a in range(3) if a != slice_axis]]
    return dict(zip(PLANES, order))


class PatchSampler:
    """Random 2.5D patches (with augmentation) from in-memory volumes; no file I/O per step.

    Each draw picks a volume (weighted by voxel count), a plane, a slice whose centre has enough valid voxels,
    and a patch position; patches larger than the slice are zero-padded and masked.
    """

    def __init__(
        self,
        volumes: list[TrainVolume],
        *,
        patch: int,
        context: int,
        augment: bool,
        slices: list[list[NDArray[np.int64]]] | None = None,
        guide_dropout: float = 0.0,
        invert: float = 0.0,
        targets: list[list[NDArray[np.float32]]] | None = None,
        n_volumes: int = 0,
    ) -> None:
        """``n_volumes``: the first guides of each volume are that many context volumes of a series, in the target's
        units (gain and inversion apply to them as to the target, guide dropout does not). ``targets``: per volume and plane layout, a (Z, H, W) array cropped and augmented like the input's centre
        slice (gain and inversion included), for :meth:`sample_pairs`; drawing them takes no extra random numbers."""
        self.volumes = volumes
        self.targets = targets
        self.guide_dropout = guide_dropout
        self.invert = invert
        self.n_volumes = n_volumes
        self.patch = patch
        self.context = context
        self.augment = augment
        # candidate slices per volume and plane: at least 5 % valid voxels
        if slices is None:
            slices = [
                [np.nonzero(m.reshape(m.shape[0], -1).mean(1) > 0.05)[0] for m in v.masks] for v in volumes
            ]
        self.slices = slices
        sizes = np.array([sum(len(s) for s in ss) for ss in slices], dtype=np.float64)
        if sizes.sum() == 0:
            raise ValueError("no slice with enough non-zero voxels to train on")
        self.weights = torch.tensor(sizes / sizes.sum())

    def pick(self, vi: int, generator: torch.Generator) -> tuple[int, int]:
        """A plane layout of volume ``vi`` that has candidate slices, and one of its candidate slices (two draws)."""
        planes = [i for i, s in enumerate(self.slices[vi]) if len(s)]
        pi = planes[int(torch.randint(len(planes), (1,), generator=generator))]
        cand = self.slices[vi][pi]
        return pi, int(cand[int(torch.randint(len(cand), (1,), generator=generator))])

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns y (B, C, P, P), σ_d (B,), mask (B, 1, P, P) as float32 tensors."""
        ys, _, sd, ms = self._draw(batch, generator, with_targets=False)
        return torch.from_numpy(ys), torch.from_numpy(sd), torch.from_numpy(ms)

    def sample_pairs(
        self, batch: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns y (B, C, P, P), the targets (B, 1, P, P) at the same positions, σ_d (B,), mask (B, 1, P, P)."""
        if self.targets is None:
            raise ValueError("sample_pairs needs a sampler built with targets")
        ys, ts, sd, ms = self._draw(batch, generator, with_targets=True)
        return torch.from_numpy(ys), torch.from_numpy(ts), torch.from_numpy(sd), torch.from_numpy(ms)

    def _draw(
        self, batch: int, generator: torch.Generator, *, with_targets: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        p, c = self.patch, self.context
        n_g = len(self.volumes[0].guides[0]) if self.volumes[0].guides else 0
        n_s = 2 * c + 1 + self.n_volumes  # channels in the target's units
        ys = np.zeros((batch, 2 * c + 1 + n_g, p, p), np.float32)
        ts = np.zeros((batch if with_targets else 0, 1, p, p), np.float32)
        ms = np.zeros((batch, 1, p, p), np.float32)
        sd = np.zeros(batch, np.float32)
        vidx = torch.multinomial(self.weights, batch, replacement=True, generator=generator).tolist()
        for b, vi in enumerate(vidx):
            v = self.volumes[vi]
            pi, k = self.pick(vi, generator)
            vol, msk = v.planes[pi], v.masks[pi]
            _, h, w = vol.shape
            i0 = int(torch.randint(max(h - p, 0) + 1, (1,), generator=generator))
            j0 = int(torch.randint(max(w - p, 0) + 1, (1,), generator=generator))
            hh, ww = min(p, h), min(p, w)
            stack = slice_stack(vol, np.array([k]), c)[0, :, i0 : i0 + hh, j0 : j0 + ww]
            ys[b, : 2 * c + 1, :hh, :ww] = stack
            for g, gv in enumerate(v.guides[pi]):
                ys[b, 2 * c + 1 + g, :hh, :ww] = gv[k, i0 : i0 + hh, j0 : j0 + ww]
            ms[b, 0, :hh, :ww] = msk[k, i0 : i0 + hh, j0 : j0 + ww]
            if with_targets:
                ts[b, 0, :hh, :ww] = self.targets[vi][pi][k, i0 : i0 + hh, j0 : j0 + ww]  # type: ignore[index]
            sd[b] = v.sigma_d
            if self.augment:
                r = torch.randint(8, (1,), generator=generator).item()
                ys[b] = np.rot90(ys[b], r % 4, axes=(1, 2))
                ms[b] = np.rot90(ms[b], r % 4, axes=(1, 2))
                if with_targets:
                    ts[b] = np.rot90(ts[b], r % 4, axes=(1, 2))
                if r >= 4:
                    ys[b], ms[b] = ys[b][:, :, ::-1], ms[b][:, :, ::-1]
                    if with_targets:
                        ts[b] = ts[b][:, :, ::-1]
                if c > 0 and torch.rand((1,), generator=generator).item() < 0.5:
                    ys[b, : 2 * c + 1] = ys[b, : 2 * c + 1][::-1].copy()  # reverse the slice order
                # guide dropout: the model stays useful when a guide is weak or missing
                for g in range(self.n_volumes, n_g):
                    if torch.rand((1,), generator=generator).item() < self.guide_dropout:
                        ys[b, 2 * c + 1 + g] = 0.0
                # contrast inversion y → 1 − y of the target slices (noise std unchanged); no draw when off, so runs
                # without it repeat earlier ones exactly
                if self.invert > 0 and torch.rand((1,), generator=generator).item() < self.invert:
                    ys[b, :n_s] = 1.0 - ys[b, :n_s]
                    if with_targets:
                        ts[b] = 1.0 - ts[b]
                # intensity scaling: the noise scales with the data
                gain = float(0.75 + 0.5 * torch.rand((1,), generator=generator).item())
                ys[b, :n_s] *= gain
                if with_targets:
                    ts[b] *= gain
                sd[b] *= gain
        return ys, ts, sd, ms


# ------------------------------------------------------------------------------------- the training set
@dataclass
class Scan:
    """One training input in memory: (X, Y, Z[, T]) image units, its slice axis and co-registered guides."""

    name: str
    data: NDArray[np.float32]
    slice_axis: int = 2
    guides: list[NDArray[np.float32]] = field(default_factory=list)
    contrast: str = ""
    sigma_map: NDArray[np.float32] | None = None  # σ per voxel (image units), (X, Y, Z) or per frame


def noisy_copies(
    frame: NDArray[np.float32], cfg: RunConfig, rng: np.random.Generator,
) -> list[tuple[NDArray[np.float32], float | None]]:
    """The frame itself, or (``train.add_noise`` = (lo, hi)) ``noisy_copies`` Rician copies with σ drawn
    log-uniformly in [lo, hi] × the 99.5th percentile; each with its added fraction (None: as acquired)."""
    if cfg.train.add_noise is None:
        return [(frame, None)]
    lo, hi = cfg.train.add_noise
    ref = float(np.percentile(frame[frame > 0], 99.5)) if np.any(frame > 0) else 1.0
    out = []
    for _ in range(cfg.train.noisy_copies):
        frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        out.append((rician(frame, frac * ref, rng), frac))
    return out


def build(
    scans: list[Scan], cfg: RunConfig, *, fit: Any = None,
) -> tuple[list[TrainVolume], dict[str, Any]]:
    """Training volumes for every frame (and noisy copy) of ``scans``, and a summary for the model metadata.

    Args:
        fit: ``fit(frame, sigma, use_vst=, coils=, slice_axis=) -> NoiseDomain`` (default: the noise policy's
            :func:`~c2s_cli.noise.policy.fit_frame`, the whole-scan σ of each frame, i.e. its mode "none", or the σ /
            map given: training volumes keep the fit the shipped weights were made with).
    """
    from c2s_cli.noise.policy import fit_frame

    fit = fit or fit_frame
    rng = np.random.default_rng(cfg.train.seed)
    volumes, records = [], []
    n = cfg.noise
    for scan in scans:
        frames = [scan.data] if scan.data.ndim == 3 else [scan.data[..., t] for t in range(scan.data.shape[3])]
        for t, frame in enumerate(frames):
            smap = scan.sigma_map if scan.sigma_map is None or scan.sigma_map.ndim == 3 else scan.sigma_map[..., t]
            for data_c, frac in noisy_copies(frame, cfg, rng):
                # a σ map describes the acquired noise; synthetic copies carry their own, scalar σ
                m = smap if frac is None else None
                dom = fit(data_c, n.sigma if m is None else None, use_vst=n.vst, coils=n.coils,
                          slice_axis=scan.slice_axis, sigma_map=m)
                gn = []
                for g in scan.guides:
                    gt = g if g.ndim == 3 else g[..., t]
                    gn.append(fit(gt, None, use_vst=n.vst, coils=n.coils, slice_axis=scan.slice_axis).forward(gt))
                volumes.append(make_train_volume(data_c, dom, slice_axis=scan.slice_axis, planes=cfg.train.planes,
                                                 name=f"{scan.name}[{t}]", guides=gn))
                records.append({"input": scan.name, "frame": t, "shape": list(data_c.shape),
                                "sigma": round(dom.sigma, 6), "sigma_method": dom.method,
                                "sigma_d": round(dom.sigma_d, 6), "added_noise": frac, "contrast": scan.contrast})
    sig = [r["sigma_d"] for r in records]
    return volumes, {"volumes": len(records), "sigma_d_range": [min(sig), max(sig)], "items": records}
