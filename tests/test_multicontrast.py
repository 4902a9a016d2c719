"""Multi-contrast C2S: a guide contrast as extra input channels (not re-corrupted), loss on the target only."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from c2s_bench.phantoms import head_phantom, rician
from conftest import c2s
from c2s_cli.checkpoint import load_model
from c2s_cli.config import ModelConfig, RunConfig, TrainConfig
from c2s_cli.data import make_train_volume
from c2s_cli.infer import denoise_frame
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.loop import train


def _two_contrasts() -> tuple[np.ndarray, np.ndarray]:
    t1 = head_phantom((64, 64, 12), seed=0)
    # a second contrast of the same anatomy: inverted tissue ordering, same edges
    t2 = np.where(t1 > 0, 1.3 - t1, 0).astype(np.float32)
    return t1, t2


def test_guided_beats_single_contrast(tmp_path: Path) -> None:
    target_clean, guide_clean = _two_contrasts()
    target = rician(target_clean, 0.15, seed=1)  # very noisy target
    guide = rician(guide_clean, 0.02, seed=2)  # clean-ish guide
    scores = {}
    for k in (0, 1):
        torch.manual_seed(0)
        cfg = RunConfig(model=ModelConfig(channels=(16, 32, 48), emb_dim=32, guides=k),
                        train=TrainConfig(steps=300, batch_size=8, patch_size=32, val_fraction=0.0, augment=False,
                                          lr=2e-3))
        norm = NoiseDomain.fit(target, 0.15, use_vst=True)
        gdom = NoiseDomain.fit(guide, 0.02, use_vst=True)
        gn = [gdom.forward(guide)] if k else None
        tv = make_train_volume(target, norm, slice_axis=2, planes=("axial",), name="t", guides=gn)
        (tmp_path / f"r{k}").mkdir()
        train(cfg, [tv], tmp_path / f"m{k}.safetensors", tmp_path / f"r{k}", data_summary={})
        model, _, _ = load_model(tmp_path / f"m{k}.safetensors")
        out = denoise_frame(model, target, norm, guides=[(guide, gdom)] if k else None)
        m = target_clean > 0
        scores[k] = 10 * np.log10(1 / np.mean((out[m] - target_clean[m]) ** 2))
    print(f"single-contrast {scores[0]:.2f} dB, guided {scores[1]:.2f} dB")
    assert scores[1] > scores[0] + 1.0, scores


def test_cli_guides_metadata_and_refusals(tmp_path: Path) -> None:
    target_clean, guide_clean = _two_contrasts()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    paths = {}
    for name, vol, s in (("t", target_clean, 0.1), ("g", guide_clean, 0.03)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(rician(vol * 1000, s * 1000, seed=3), aff), str(paths[name]))
    model = tmp_path / "mc.safetensors"
    r = c2s("train", str(paths["t"]), "--guide", str(paths["g"]), "--guide-names", "T2", "-o", str(model),
            "--steps", "3", "--channels", "8,16", "--patch-size", "32", "--guide-dropout", "0.2")
    assert r.returncode == 0, r.stderr
    info = json.loads(c2s("info", str(model), "--json").stdout)
    assert info["guides"] == ["T2"] and info["config"]["model"]["guides"] == 1
    assert info["config"]["train"]["guide_dropout"] == 0.2
    r = c2s("denoise", str(paths["t"]), "--guide", str(paths["g"]), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model))
    assert r.returncode == 0, r.stderr
    r = c2s("denoise", str(paths["t"]), "-o", str(tmp_path / "o2.nii.gz"), "--model", str(model))
    assert r.returncode == 2 and r.stderr.count("c2s: error: --guide: model") == 1 and "needs 1 guide" in r.stderr
    # a guide on another grid is refused (no silent resampling)
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 12), np.float32) + 1, np.diag([1.0, 1.0, 3.0, 1.0])), str(tmp_path / "x.nii.gz"))
    r = c2s("denoise", str(paths["t"]), "--guide", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o3.nii.gz"),
            "--model", str(model))
    assert r.returncode == 4 and "voxel grid" in r.stderr
    single = tmp_path / "single.safetensors"
    assert c2s("train", str(paths["t"]), "-o", str(single), "--steps", "2", "--channels", "8,16",
               "--patch-size", "32").returncode == 0
    r = c2s("denoise", str(paths["t"]), "--guide", str(paths["g"]), "-o", str(tmp_path / "o4.nii.gz"), "--model", str(single))
    assert r.returncode == 2 and "single-contrast" in r.stderr
