"""scripts/distill_planes.py: the stage that distils the model's 3-plane average into its one-pass network.

Properties: the teacher is the multi-plane mean in each plane layout (whatever the slice axis), and a tiny run writes a
loadable model whose metadata names its start model and the distillation. (The teacher and the input are drawn
together by ``PatchSampler.sample_pairs``, tested in test_train.py.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from c2s_cli.checkpoint import load_model
from c2s_cli.config import PLANES, ModelConfig
from c2s_cli.data import make_train_volume, plane_axes
from c2s_cli.infer import denoise_frame
from c2s_cli.model import Precond
from c2s_cli.noise.domain import NoiseDomain

ROOT = Path(__file__).resolve().parent.parent


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("distill_planes", ROOT / "scripts" / "distill_planes.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _volume(seed: int = 0, slice_axis: int = 2):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = (0.5 + 0.1 * rng.standard_normal((20, 24, 16))).astype(np.float32)
    return make_train_volume(x, NoiseDomain.identity(0.05), slice_axis=slice_axis, planes=PLANES, name="v")


@pytest.mark.parametrize("axis", [2, 1])
def test_teacher_is_the_plane_mean_in_every_layout(axis: int) -> None:
    mod = _script()
    v = _volume(1, axis)
    torch.manual_seed(0)
    model = Precond(ModelConfig(channels=(8, 16), emb_dim=16, context=2)).eval()
    out = mod.teacher(model, v, tta=1, bf16=False)
    x = np.moveaxis(v.planes[0], 0, axis)
    dom = NoiseDomain.identity(0.05)
    views = [denoise_frame(model, x, dom, axes=(a,), passthrough=False) for a in (0, 1, 2)]
    mean = np.mean(views, axis=0)
    for p, arr in zip(PLANES, out):
        np.testing.assert_allclose(arr, np.moveaxis(mean, plane_axes(axis)[p], 0), atol=1e-5)
    assert not np.allclose(views[0], views[2], atol=1e-4)  # the planes differ, so the mean is not one of them


def test_tiny_run_writes_a_model_that_records_its_stage(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    mod = _script()
    lam = 1.0
    rng = np.random.default_rng(0)
    vol = np.zeros((40, 40, 24), np.float32)
    vol[8:32, 8:32, :] = 400.0
    noisy = np.abs(vol + 20 * rng.standard_normal(vol.shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(noisy, np.eye(4)), str(tmp_path / "mni152_tiny.nii.gz"))
    nib.save(nib.Nifti1Image(noisy[::-1].copy(), np.eye(4)), str(tmp_path / "other.nii.gz"))
    out = tmp_path / "d.safetensors"
    monkeypatch.setattr(sys, "argv", ["distill_planes.py", str(tmp_path / "mni152_tiny.nii.gz"),
                                      str(tmp_path / "other.nii.gz"), "--init", "default", "-o", str(out),
                                      "--steps", "3", "--lam", str(lam), "--teacher-tta", "1", "--threads", "1",
                                      "--teacher-cache", str(tmp_path / "t.npz")])
    mod.main()
    model, cfg, meta = load_model(out)
    d = meta["training"]["distill"]
    assert d["volumes"] == 1 and d["steps"] == 3 and d["lam"] == lam
    assert meta["training"]["init"]["model"] == "default" and len(meta["training"]["init"]["sha256"]) == 64
    assert cfg.model.context == 2 and cfg.train.steps == 3
    # three steps at a small learning rate: close to the start model, but trained
    start, _, _ = load_model(ROOT / "weights" / "default.safetensors")
    diffs = [float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), start.state_dict().values())]
    assert 0 < max(diffs) < 0.05
    # the output is not overwritten without --force, and a teacher cache is only reused for the model that made it
    argv = list(sys.argv)
    with pytest.raises(SystemExit, match="exists; pass --force"):
        mod.main()
    before = (tmp_path / "other.nii.gz").read_bytes()
    monkeypatch.setattr(sys, "argv", [*argv, "--force", "-o", str(tmp_path / "other.nii.gz")])
    with pytest.raises(SystemExit, match="is the input"):
        mod.main()
    assert (tmp_path / "other.nii.gz").read_bytes() == before
    monkeypatch.setattr(sys, "argv", [*argv, "-o", str(tmp_path / "d2.safetensors"), "--init", str(out)])
    with pytest.raises(SystemExit, match="made by another model"):
        mod.main()
    assert not (tmp_path / "d2.safetensors").exists()
