"""c2s_cli.distill and ``c2s train --distill-planes``: the stage that distils the model's 3-plane average into its
one-pass network (stage 3 of the shipped default), as an objective of the one training loop.

Properties: the teacher is the multi-plane mean in each plane layout (whatever the slice axis); the objective is the
equation on the pairs it draws; a tiny run writes a loadable model whose metadata names its start model and the
distillation; without a start model or a matching volume it is one line before any training.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import c2s
from c2s_cli.checkpoint import load_model
from c2s_cli.config import PLANES, ModelConfig, RunConfig, TrainConfig
from c2s_cli.data import make_train_volume, plane_axes
from c2s_cli.distill import PlaneDistillation, teacher
from c2s_cli.infer import denoise_frame
from c2s_cli.model import Precond
from c2s_cli.noise.domain import NoiseDomain

ROOT = Path(__file__).resolve().parent.parent


def _volume(seed: int = 0, slice_axis: int = 2):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = (0.5 + 0.1 * rng.standard_normal((20, 24, 16))).astype(np.float32)
    return make_train_volume(x, NoiseDomain.identity(0.05), slice_axis=slice_axis, planes=PLANES, name="v")


@pytest.mark.parametrize("axis", [2, 1])
def test_teacher_is_the_plane_mean_in_every_layout(axis: int) -> None:
    v = _volume(1, axis)
    torch.manual_seed(0)
    model = Precond(ModelConfig(channels=(8, 16), emb_dim=16, context=2)).eval()
    out = teacher(model, v, tta=1)
    x = np.moveaxis(v.planes[0], 0, axis)
    dom = NoiseDomain.identity(0.05)
    views = [denoise_frame(model, x, dom, axes=(a,), passthrough=False) for a in (0, 1, 2)]
    mean = np.mean(views, axis=0)
    for p, arr in zip(PLANES, out):
        np.testing.assert_allclose(arr, np.moveaxis(mean, plane_axes(axis)[p], 0), atol=1e-5)
    assert not np.allclose(views[0], views[2], atol=1e-4)  # the planes differ, so the mean is not one of them


def test_the_objective_is_the_equation_on_its_pairs() -> None:
    """λ · Σ mask·(D(y, σ_d) − T)² / σ_d² / Σ mask, on the pairs drawn with the loop's generator."""
    torch.manual_seed(0)
    cfg = RunConfig(model=ModelConfig(channels=(8, 16), emb_dim=16, context=2),
                    train=TrainConfig(patch_size=16, distill_planes=0.5))
    model = Precond(cfg.model).eval()
    v = _volume(2)
    obj = PlaneDistillation([v], [teacher(model, v, tta=1)], cfg)
    got = obj(model, torch.Generator().manual_seed(3), 4)
    yd, td, sd, md = obj.pairs.sample_pairs(4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        d = model(yd, sd)
    want = 0.5 * float((md * (d - td) ** 2 / sd.reshape(-1, 1, 1, 1) ** 2).sum() / md.sum())
    assert float(got) == pytest.approx(want, rel=1e-5) and want > 0


def test_tiny_distillation_run_through_c2s_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vol = np.zeros((40, 40, 24), np.float32)
    vol[8:32, 8:32, :] = 400.0
    noisy = np.abs(vol + 20 * rng.standard_normal(vol.shape)).astype(np.float32)
    a, b = tmp_path / "mni152_tiny.nii.gz", tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(noisy, np.eye(4)), str(a))
    nib.save(nib.Nifti1Image(noisy[::-1].copy(), np.eye(4)), str(b))
    out = tmp_path / "d.safetensors"
    common = ("--steps", "3", "--batch-size", "2", "--patch-size", "32", "--val-fraction", "0", "--device", "cpu",
              "--distill-tta", "1")
    r = c2s("train", str(a), str(b), "-o", str(out), "--init", "default", "--distill-planes", "1", *common)
    assert r.returncode == 0, r.stderr
    model, cfg, meta = load_model(out)
    d = meta["training"]["distill"]
    assert d["volumes"] == 1 and d["lam"] == 1.0 and d["match"] == "mni152" and cfg.train.distill_planes == 1.0
    assert meta["training"]["init"]["model"] == "default" and len(meta["training"]["init"]["sha256"]) == 64
    start, _, _ = load_model(ROOT / "weights" / "default.safetensors")
    diffs = [float((x - y).abs().max()) for x, y in zip(model.state_dict().values(), start.state_dict().values())]
    assert 0 < max(diffs) < 0.05  # three steps: close to the start model, but trained
    r = c2s("train", str(a), "-o", str(tmp_path / "e.safetensors"), "--distill-planes", "1", *common)
    assert r.returncode == 2 and "--distill-planes" in r.stderr and "init" in r.stderr
    r = c2s("train", str(b), "-o", str(tmp_path / "f.safetensors"), "--init", "default", "--distill-planes", "1",
            *common)
    assert r.returncode == 2 and "--distill-match" in r.stderr and not (tmp_path / "f.safetensors").exists()
