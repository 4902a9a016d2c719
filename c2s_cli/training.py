"""The training entry point's library side: read the inputs into a training set, resolve a start model, evaluate
against a clean reference. ``c2s train`` is a thin layer over these and :func:`c2s_cli.train.train`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from c2s_cli.config import RunConfig
from c2s_cli.errors import UsageError
from c2s_cli.io import read_volume


def load_training_set(
    items: Sequence[tuple[Path, str | None]], cfg: RunConfig, guides: Sequence[Path] = (),
    on_warning: Callable[[str], None] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Read every input (and its K guides, in input order) and build the training volumes (:mod:`c2s_cli.dataset`).

    Returns the volumes and the data summary recorded in the model's metadata.
    """
    from c2s_cli.api import fit_domain
    from c2s_cli.dataset import Scan, build
    from c2s_cli.pipeline import read_guide

    k = cfg.model.guides
    if len(guides) != k * len(items):
        raise UsageError(f"guides: the model takes {k} guide contrast(s) per input: give {k * len(items)}, got "
                         f"{len(guides)}", param="guides")
    scans = []
    for i, (p, s) in enumerate(items):
        vol, warnings = read_volume(p, series=s)
        for w in warnings:
            if on_warning:
                on_warning(f"{p}: {w}")
        scans.append(Scan(p.name, vol.data, vol.slice_axis, [read_guide(g, vol) for g in guides[i * k : (i + 1) * k]],
                          vol.meta.get("series_description", "")))
    return build(scans, cfg, fit=fit_domain)


def resolve_init(spec: str) -> tuple[Any, dict[str, str]]:
    """A start model for fine-tuning (name or path), checked against its registry like ``--model``; returns the
    model and its provenance: the file **name** (never a host path) and its SHA-256."""
    from c2s_cli.checkpoint import load_model, resolve_model, sha256

    path, expected = resolve_model(spec)
    model = load_model(path, expected_sha256=expected)[0]
    name = spec if expected is not None else path.name
    return model, {"model": name, "sha256": expected or sha256(path)}


def init_config(spec: str) -> RunConfig:
    """The config of a start model, from its header only (no weights loaded)."""
    from c2s_cli.checkpoint import check_meta, read_header, resolve_model

    path, _ = resolve_model(spec)
    return check_meta(path, read_header(path)[0])


def reference_evaluator(
    item: tuple[Path, str | None], reference: Path, cfg: RunConfig,
) -> tuple[Callable[[Any], float], float]:
    """PSNR (dB, data range = the reference's 99.5th percentile, inside reference > 0) of the first input denoised
    by a model, on up to 8 central slices; the noise domain is fitted once on the whole first frame, as at inference.

    Returns the evaluator and the PSNR of the noisy input.
    """
    from c2s_cli.api import fit_domain
    from c2s_cli.infer import denoise_frame
    from c2s_cli.pipeline import same_grid

    vol, _ = read_volume(item[0], series=item[1])
    ref, _ = read_volume(reference)
    same_grid(ref, vol, reference, "reference")
    ax = vol.slice_axis
    data = vol.data if vol.data.ndim == 3 else vol.data[..., 0]
    clean_all = ref.data if ref.data.ndim == 3 else ref.data[..., 0]
    n = data.shape[ax]
    sel = np.arange(max(0, n // 2 - 4), min(n, n // 2 + 4))
    noisy = np.take(data, sel, axis=ax)
    clean = np.take(clean_all, sel, axis=ax)
    dom = fit_domain(data, cfg.noise.sigma, use_vst=cfg.noise.vst, coils=cfg.noise.coils, slice_axis=ax)
    peak = float(np.percentile(clean[clean > 0], 99.5))
    mask = clean > 0

    def psnr(x: np.ndarray) -> float:
        return float(10 * np.log10(peak**2 / np.mean((x[mask] - clean[mask]) ** 2)))

    def evaluate(model: Any) -> float:
        return psnr(denoise_frame(model, noisy, dom, axes=(ax,)))

    return evaluate, psnr(noisy)
