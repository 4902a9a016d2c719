"""The training set: noisy frames (optionally with synthetic noise) → fitted noise domains → training volumes.

Arrays in, training volumes out; reading files is the caller's (``c2s_cli.training``). Every frame gets its own
:class:`~c2s_cli.noise.domain.NoiseDomain`, and guides the same convention as at inference. With a σ map the
training volume is in the map's unit-σ domain, so the GDSM re-corruption (uniform τ there) is τ scaled by the local
σ in image units, under which the loss stays exact per voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.config import RunConfig
from c2s_cli.data import TrainVolume, make_train_volume
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.synth import rician


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
