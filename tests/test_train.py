from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from c2s_bench.phantoms import head_phantom, rician
from c2s_cli.checkpoint import load_model
from c2s_cli.config import GDSMConfig, ModelConfig, RunConfig, TrainConfig
from c2s_cli.data import make_train_volume
from c2s_cli.infer import denoise_array
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.estimate import estimate_noise
from c2s_cli.loop import train
from c2s_cli.model import Precond


def _volume(y: np.ndarray, sigma: float, planes: tuple[str, ...]):  # type: ignore[no-untyped-def]
    norm = NoiseDomain.fit(y, sigma, use_vst=True)
    return make_train_volume(y, norm, slice_axis=2, planes=planes, name="phantom")


def test_smoke_and_resume(tmp_path: Path) -> None:
    clean = head_phantom((48, 48, 12), seed=1)
    y = rician(clean, 0.1, seed=2)
    cfg = RunConfig(
        model=ModelConfig(channels=(8, 16), emb_dim=16),
        train=TrainConfig(steps=6, batch_size=2, patch_size=32, log_every=2, checkpoint_every=3, val_fraction=0.2),
    )
    run = tmp_path / "run"
    run.mkdir()
    res = train(cfg, [_volume(y, 0.1, ("axial", "coronal"))], tmp_path / "m.safetensors", run, data_summary={"volumes": 1})
    assert res.steps == 6 and np.isfinite(res.loss)
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 6
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4, 6]
    _, cfg2, meta = load_model(tmp_path / "m.safetensors")
    assert cfg2 == cfg and meta["training"]["steps"] == 6
    # resume to 10 steps: the step count continues
    cfg10 = RunConfig(cfg.model, cfg.gdsm, cfg.noise, TrainConfig(**{**cfg.train.__dict__, "steps": 10}))
    res2 = train(cfg10, [_volume(y, 0.1, ("axial", "coronal"))], tmp_path / "m2.safetensors", run,
                 data_summary={"volumes": 1}, resume=True)
    assert res2.steps == 10
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats][-2:] == [8, 10]


def test_training_is_deterministic(tmp_path: Path) -> None:
    clean = head_phantom((40, 40, 8), seed=1)
    y = rician(clean, 0.1, seed=2)
    cfg = RunConfig(model=ModelConfig(channels=(8, 16), emb_dim=16),
                    train=TrainConfig(steps=4, batch_size=2, patch_size=24, val_fraction=0.0))
    outs = []
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
        train(cfg, [_volume(y, 0.1, ("axial",))], tmp_path / f"m{i}.safetensors", tmp_path / f"r{i}", data_summary={})
        outs.append(load_model(tmp_path / f"m{i}.safetensors")[0].state_dict())
    for k in outs[0]:
        torch.testing.assert_close(outs[0][k], outs[1][k])


def test_end_to_end_improves_psnr(tmp_path: Path) -> None:
    """A short self-supervised run on a noisy phantom alone clearly beats the noisy input."""
    torch.manual_seed(0)
    clean = head_phantom((80, 80, 20), seed=0)
    sigma = 0.08
    y = rician(clean, sigma, seed=1)
    est = estimate_noise(y).sigma
    cfg = RunConfig(
        model=ModelConfig(channels=(16, 32, 48), emb_dim=32),
        gdsm=GDSMConfig(),
        train=TrainConfig(steps=150, batch_size=8, patch_size=40, planes=("axial", "coronal", "sagittal"),
                          val_fraction=0.0, log_every=50),
    )
    (tmp_path / "run").mkdir()
    train(cfg, [_volume(y, est, cfg.train.planes)], tmp_path / "m.safetensors", tmp_path / "run", data_summary={})
    model, _, _ = load_model(tmp_path / "m.safetensors")
    out = denoise_array(model, y, est)
    mask = clean > 0

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a[mask] - clean[mask]) ** 2)))

    gain = psnr(out) - psnr(y)
    print(f"PSNR noisy {psnr(y):.2f} → denoised {psnr(out):.2f} (+{gain:.2f} dB)")
    assert gain > 1.5


def test_contrast_inversion_augmentation() -> None:
    """--invert p: a patch becomes 1 − y (network units) with probability p; σ_d only follows the intensity gain."""
    from c2s_cli.data import PatchSampler, TrainVolume

    v = 0.2
    vol = np.full((6, 40, 40), v, np.float32)
    tv = TrainVolume([vol], [np.ones(vol.shape, bool)], [[]], 0.05, "flat")

    def ratios(invert: float) -> np.ndarray:
        s = PatchSampler([tv], patch=32, context=1, augment=True, invert=invert)
        y, sd, _ = s.sample(400, torch.Generator().manual_seed(0))
        return (y[:, 1].mean((1, 2)) / sd).numpy() * 0.05  # the value before the random gain

    np.testing.assert_allclose(ratios(0.0), v, rtol=1e-5)
    np.testing.assert_allclose(ratios(1.0), 1 - v, rtol=1e-5)
    half = ratios(0.5)
    inverted = np.isclose(half, 1 - v, rtol=1e-5)
    assert np.all(inverted | np.isclose(half, v, rtol=1e-5))
    assert 0.4 < inverted.mean() < 0.6  # 400 draws: binomial sd 0.025


@pytest.mark.parametrize("invert", [0.0, 1.0])
def test_paired_targets_are_cropped_and_augmented_with_the_input(invert: float) -> None:
    """sample_pairs: the target of each patch goes through the input's crop, rotation, flip, inversion and gain, and
    the draws are those of sample() (targets take no random numbers)."""
    from c2s_cli.config import PLANES
    from c2s_cli.data import PatchSampler

    rng = np.random.default_rng(0)
    x = (0.5 + 0.1 * rng.standard_normal((20, 24, 16))).astype(np.float32)
    v = make_train_volume(x, NoiseDomain.identity(0.05), slice_axis=2, planes=PLANES, name="v")
    # target = 2 × the volume + 0.1: whatever the draw, it is 2 × the input's centre slice + 0.1 × the sign and gain
    sampler = PatchSampler([v], patch=16, context=2, augment=True, invert=invert,
                           targets=[[2 * p + 0.1 for p in v.planes]])
    y, t, sd, m = sampler.sample_pairs(32, torch.Generator().manual_seed(3))
    gain = sd.numpy() / 0.05
    assert np.all((gain >= 0.75) & (gain <= 1.25)) and gain.std() > 0.05
    sign = -1.0 if invert else 1.0  # inverted: input 1 − x, target 1 − (2x + 0.1), i.e. 2·input − 1.1
    expected = 2 * y[:, 2].numpy() + (sign * 0.1 - (1.0 if invert else 0.0)) * gain[:, None, None]
    np.testing.assert_allclose(t[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert float(m.mean()) > 0.9
    y2, sd2, m2 = sampler.sample(32, torch.Generator().manual_seed(3))
    assert torch.equal(y, y2) and torch.equal(sd, sd2) and torch.equal(m, m2)
    with pytest.raises(ValueError, match="targets"):
        PatchSampler([v], patch=16, context=2, augment=True).sample_pairs(2, torch.Generator())


def test_one_loop_takes_objectives_without_gdsm() -> None:
    """Issue 30: the research peers train through the one loop with their own objective (gdsm=False): each step
    calls the objective once, draws nothing for GDSM, and the EMA weights move; without objectives it refuses."""
    clean = head_phantom((32, 32, 8), seed=1)
    vol = _volume(rician(clean, 0.1, seed=2), 0.1, ("axial",))
    cfg = RunConfig(model=ModelConfig(channels=(8, 16), emb_dim=16),
                    train=TrainConfig(steps=4, batch_size=2, patch_size=16, val_fraction=0.0, log_every=2))
    calls = []
    x = torch.rand(2, 3, 16, 16)

    def objective(net, gen, batch):  # type: ignore[no-untyped-def]
        calls.append(batch)
        return ((net(x, torch.full((2,), 0.1)) - 0.5) ** 2).mean()

    class NoDraw:
        def sample(self, *a):  # type: ignore[no-untyped-def]
            raise AssertionError("GDSM batch drawn with gdsm=False")

    torch.manual_seed(0)
    start = [p.detach().clone() for p in Precond(cfg.model).parameters()]  # what train() builds after the same seed
    res = train(cfg, [vol], None, None, data_summary={}, objectives=[objective], sampler=NoDraw(), gdsm=False)
    assert calls == [2, 2, 2, 2]
    assert any(not torch.equal(a, b) for a, b in zip(start, res.model.parameters()))
    with pytest.raises(ValueError, match="needs objectives"):
        train(cfg, [vol], None, None, data_summary={}, gdsm=False)


def test_an_interrupted_run_continues_exactly(tmp_path: Path) -> None:
    """Issue 32 (training for hours, in pieces): a run stopped after its checkpoint at step 4 and resumed ends with
    the same EMA weights as the run that was never stopped (optimizer, EMA, sampler RNG in the state)."""
    clean = head_phantom((40, 40, 8), seed=1)
    y = rician(clean, 0.1, seed=2)
    cfg = RunConfig(model=ModelConfig(channels=(8, 16), emb_dim=16),
                    train=TrainConfig(steps=8, batch_size=2, patch_size=24, val_fraction=0.0, log_every=1,
                                      checkpoint_every=4))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = train(cfg, [_volume(y, 0.1, ("axial",))], tmp_path / "a.safetensors", tmp_path / "a", data_summary={})

    def stop(rec: dict) -> None:  # type: ignore[type-arg]
        if rec["step"] == 5:  # after the checkpoint at step 4: step 5 is lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, [_volume(y, 0.1, ("axial",))], tmp_path / "b.safetensors", tmp_path / "b", data_summary={},
              on_log=stop)
    assert not (tmp_path / "b.safetensors").exists()
    resumed = train(cfg, [_volume(y, 0.1, ("axial",))], tmp_path / "b.safetensors", tmp_path / "b", data_summary={},
                    resume=True)
    assert resumed.steps == whole.steps == 8  # (the logged running loss restarts with the process: not compared)
    a, b = load_model(tmp_path / "a.safetensors")[0].state_dict(), load_model(tmp_path / "b.safetensors")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
