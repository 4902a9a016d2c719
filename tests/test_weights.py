"""The shipped weights: registered SHA-256, metadata, found by name, and they denoise (zero-shot) a phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from c2s_cli.checkpoint import read_header, resolve_model, sha256
from c2s_cli.errors import UsageError

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
REGISTRY = json.loads((WEIGHTS / "registry.json").read_text())


def test_registry_lists_default_and_every_file() -> None:
    assert "default" in REGISTRY
    assert sorted(REGISTRY) == sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))
    readme = (WEIGHTS / "README.md").read_text()
    for name, entry in REGISTRY.items():
        assert entry["sha256"] in readme, f"weights/README.md lacks the SHA-256 of {name}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_model(name: str) -> None:
    from c2s_bench.phantoms import head_phantom, rician

    from c2s_cli import Denoiser

    path, expected = resolve_model(name)
    assert expected == REGISTRY[name]["sha256"] == sha256(path)
    assert path.stat().st_size == REGISTRY[name]["bytes"]
    meta, _ = read_header(path)
    assert meta["format_version"] == "1" and meta["c2s_version"]
    cfg = json.loads(meta["config"])
    assert cfg["noise"]["vst"] is True
    assert cfg["model"]["context"] == {"default": 2, "hq": 2, "series": 2, "series-context": 2, "wide": 1}[name]  # default, hq: two neighbours each side since 2026-12-02
    # series-context: the start model of the series mode, with its context channels (prediction, shell mean, 2
    # neighbours); it denoises a series (here 4 repeats of the phantom, without training on it), never one volume
    assert cfg["model"].get("volumes", 0) == (4 if name == "series-context" else 0)
    clean = head_phantom((64, 64, 6), seed=1)
    den = Denoiser(name, "cpu")
    if cfg["model"].get("volumes", 0):
        reps = np.stack([rician(clean, 0.08, seed=2 + k) for k in range(4)], -1)
        noisy = reps[..., 0]
        out = den.denoise_series(reps, steps=0)[..., 0]
        with pytest.raises(UsageError, match="series start model"):
            den.denoise(noisy)
    else:
        noisy = rician(clean, 0.08, seed=2)
        out = den.denoise(noisy)
    mask = clean > 0.05 * clean.max()

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(clean.max() ** 2 / np.mean((a[mask] - clean[mask]) ** 2)))

    assert np.isfinite(out).all() and out.shape == noisy.shape
    assert psnr(out) > psnr(noisy) + 2.0, (psnr(noisy), psnr(out))  # measured: +3.0 (default), +2.9 dB (wide)


def test_series_mode_starts_from_the_model_the_registry_names(tmp_path: Path) -> None:
    """``default``'s series (context) mode trains from ``series-context`` (its registry entry says so; checked against
    its SHA-256): with no training steps its output is exactly that of ``series-context``'s own series mode, and not
    that of the default's weights given as a path (a path names no start model: it starts from itself); the
    training steps default to 200 from it, 400 from a context-free start."""
    import shutil

    from c2s_bench.phantoms import head_phantom, rician

    from c2s_cli import Denoiser
    from c2s_cli.records import DenoiseReport

    assert REGISTRY["default"]["series_start"] == "series-context" and "series_start" not in REGISTRY["series-context"]
    clean = 1000.0 * head_phantom((32, 32, 6), seed=1)
    series = np.stack([rician(clean * (1 - 0.1 * k), 40.0, seed=k) for k in range(4)], -1).astype(np.float32)
    copy = tmp_path / "mine.safetensors"
    shutil.copy(WEIGHTS / "default.safetensors", copy)
    outs, reports = {}, {}
    for name in ("default", "series-context", str(copy)):
        reports[name] = DenoiseReport()
        outs[name] = Denoiser(name, "cpu").denoise_series(series, steps=0, sigma=40.0, report=reports[name])
    np.testing.assert_array_equal(outs["default"], outs["series-context"])
    assert not np.allclose(outs["default"], outs[str(copy)], atol=1e-3)
    assert reports["default"].series_start == {"model": "series-context",
                                               "sha256": REGISTRY["series-context"]["sha256"]}
    assert reports[str(copy)].series_start == {"model": "mine", "sha256": REGISTRY["default"]["sha256"]}
    assert reports["default"].series_steps == 0  # as given; when not given, by the start model:
    from c2s_cli.series import STEPS_FRESH_START, STEPS_TRAINED_START, default_steps

    assert default_steps(4) == STEPS_TRAINED_START == 200 and default_steps(0) == STEPS_FRESH_START == 400
