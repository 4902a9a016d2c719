"""c2s_cli.series: 4-D series with the other volumes as context (issue 31).

Properties: neighbours are the nearest in q-space (antipodal directions coincide, b = 0 volumes are each other's
nearest) or in time; pools are the rest of the shell; the widened network computes exactly the shipped one until
trained; in training only the target's slices are re-corrupted (the context keeps its own, independent noise, which
keeps GDSM exact); the context's fast path equals the target domain's own map; the prediction from the other volumes
does not carry the target's noise; with no training the series mode is the volume-by-volume result, bit for bit; a
short training is deterministic and one-line errors come before any compute.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from c2s_bench.phantoms import head_phantom, rician
from c2s_cli import series
from c2s_cli.config import GDSMConfig, ModelConfig
from c2s_cli.errors import UsageError
from c2s_cli.losses import GDSMLoss
from c2s_cli.model import Precond
from c2s_cli.noise.domain import NoiseDomain


def _table() -> tuple[np.ndarray, np.ndarray]:
    bvals = np.array([0, 1000, 1000, 1000, 0, 2000, 2000, 5, 1020], np.float64)
    bvecs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-0.99, 0.141, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1],
                      [0, 0, 0], [0, 0.995, 0.0998]], np.float64)
    return bvals, bvecs


def test_shells_and_pools() -> None:
    bvals, _ = _table()
    sh = series.shells(bvals)
    assert sh[0] == sh[4] == sh[7] == 0  # b ≤ 50: b = 0
    assert sh[1] == sh[2] == sh[3] == sh[8] != sh[5] == sh[6] != 0  # 1020 joins the 1000 shell
    pools = series.pools(len(bvals), bvals)
    assert sorted(pools[0].tolist()) == [4, 7] and sorted(pools[1].tolist()) == [2, 3, 8]
    assert all(t not in p for t, p in enumerate(pools))
    assert sorted(series.pools(4)[2].tolist()) == [0, 1, 3]  # no table: the whole series but itself


def test_neighbours_in_q_space_and_in_time() -> None:
    bvals, bvecs = _table()
    nb = series.neighbours(len(bvals), 2, bvals, bvecs)
    assert nb.shape == (9, 2)
    assert set(nb[0].tolist()) == {4, 7}  # the b = 0 volumes are each other's nearest
    assert nb[1, 0] == 3  # −x is x (antipodal symmetry), nearer than y
    assert nb[2, 0] == 8  # y at b 1000 nearest to y at b 1020
    assert nb[5, 0] == 1  # x at b 2000: x at b 1000 is nearer than z at b 2000
    assert all(t not in row for t, row in enumerate(nb))
    assert series.neighbours(6, 4)[2].tolist() == [1, 3, 0, 4]  # time: t − 1, t + 1, t − 2, t + 2
    assert series.neighbours(3, 5)[0].tolist() == [1, 2, 1, 2, 1]  # fewer volumes than k: repeated
    with pytest.raises(ValueError, match="at least 2"):
        series.neighbours(1, 2)


def test_widened_network_is_the_shipped_one_until_trained() -> None:
    torch.manual_seed(0)
    base = Precond(ModelConfig(context=1, channels=(8, 16), emb_dim=16)).eval()
    for p in base.parameters():  # FiLM starts at zero: make every path count
        p.data.add_(0.05 * torch.randn_like(p))
    wide = series.widen(base, 3).eval()
    assert wide.cfg.volumes == 3 and wide.cfg.in_channels == base.cfg.in_channels + 3
    x = torch.rand(2, 3, 24, 24)
    sigma = torch.tensor([0.1, 0.2])
    with torch.no_grad():
        ref = base(x, sigma)
        a = wide(torch.cat([x, torch.rand(2, 3, 24, 24)], 1), sigma)
        b = wide(torch.cat([x, 10 * torch.rand(2, 3, 24, 24)], 1), sigma)
    assert torch.equal(a, b) and torch.allclose(a, ref, atol=1e-6)
    # a start model already trained with context (scripts/train_series_start.py): more volumes get zero weights after
    # its own, so its output with its own context is unchanged; the same count is a copy; fewer is refused
    for p in wide.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    ctx = torch.rand(2, 3, 24, 24)
    wider = series.widen(wide, 5).eval()
    same = series.widen(wide, 3).eval()
    with torch.no_grad():
        ref = wide(torch.cat([x, ctx], 1), sigma)
        c = wider(torch.cat([x, ctx, torch.rand(2, 2, 24, 24)], 1), sigma)
        d = same(torch.cat([x, ctx], 1), sigma)
    assert not torch.allclose(ref, a, atol=1e-3)  # the context now counts
    assert torch.allclose(c, ref, atol=1e-6) and torch.equal(d, ref)
    with pytest.raises(ValueError, match="series_neighbours"):
        series.widen(wide, 1)


def test_only_the_target_slices_are_recorrupted() -> None:
    """GDSM with context: x_t = y + τ·n on the 2·context + 1 target slices; the context channels reach the network
    as observed (their noise is independent of the target's), scaled by c_in like the target."""
    torch.manual_seed(0)
    net = series.widen(Precond(ModelConfig(context=1, channels=(8, 16), emb_dim=16)), 2)
    seen = {}

    def spy(module, args):  # type: ignore[no-untyped-def]
        seen["inp"] = args[0].detach().clone()

    net.net.register_forward_pre_hook(spy)
    y = torch.rand(4, 3 + 2, 16, 16)
    sd = torch.full((4,), 0.1)
    GDSMLoss(GDSMConfig())(net, y, sd, torch.ones(4, 1, 16, 16), generator=torch.Generator().manual_seed(1))
    inp = seen["inp"]
    c_in = inp[:, 3:] / y[:, 3:]  # the same factor on both context channels of a sample
    assert torch.allclose(c_in, c_in[:, :1, :1, :1].expand_as(c_in), rtol=1e-5)
    target_scaled = inp[:, :3] / c_in[:, :1, :1, :1].unsqueeze(1)[:, 0]
    assert (target_scaled - y[:, :3]).abs().mean() > 0.01  # the target slices were re-corrupted
    lo, hi = 1 / np.sqrt(2 * 0.1**2 + 0.5**2), 1 / np.sqrt(0.1**2 + 0.5**2)  # c_in at σ_t in [σ_d, √2·σ_d] (T = 1)
    assert all(lo - 1e-5 <= float(v) <= hi + 1e-5 for v in c_in[:, 0, 0, 0])


def _series(t: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    clean = head_phantom((40, 40, 8), seed=seed) * 1000
    rng = np.random.default_rng(seed)
    weights = 0.5 + 0.5 * rng.random(t)  # a low-rank series: the same anatomy at T intensities
    stack = np.stack([clean * w for w in weights], 3)
    noisy = np.stack([rician(stack[..., k], 30.0, seed=100 + k) for k in range(t)], 3)
    return stack.astype(np.float32), noisy.astype(np.float32)


def test_context_fast_path_and_prediction() -> None:
    _, noisy = _series()
    frames = [noisy[..., k] for k in range(noisy.shape[3])]
    doms = [NoiseDomain.fit(f, 30.0) for f in frames]  # one σ: the shared (fast) path
    ctx = series.SeriesContext(frames, doms, series.neighbours(10, 2), series.pools(10))
    assert ctx.shared
    fast = ctx(3)
    slow = series.SeriesContext(frames, [NoiseDomain.fit(f, 30.0 + 1e-9 * k) for k, f in enumerate(frames)],
                                series.neighbours(10, 2), series.pools(10))
    assert not slow.shared
    for a, b in zip(fast, slow(3)):
        assert np.allclose(a, b, atol=1e-4)
    assert np.allclose(fast[2], doms[3].forward(frames[2]), atol=1e-5)  # neighbour t − 1 in t's units
    # the prediction from the others: much closer to the clean target than the noisy target is, and it does not
    # follow the target's own noise (another noise draw of the target moves it by a fifth of σ at most, the target
    # itself by about σ: only the block weights, p numbers over N voxels, see it)
    clean, _ = _series()
    obj = clean[..., 3] > 200
    pred = doms[3].inverse(fast[0])
    assert np.sqrt(np.mean((pred - clean[..., 3])[obj] ** 2)) < 0.6 * np.sqrt(np.mean((noisy[..., 3] - clean[..., 3])[obj] ** 2))
    other = list(frames)
    other[3] = rician(clean[..., 3], 30.0, seed=999).astype(np.float32)
    moved = series.SeriesContext(other, doms, series.neighbours(10, 2), series.pools(10))(3)[0]
    assert np.abs(doms[3].inverse(moved) - pred)[obj].mean() < 0.2 * 30.0
    assert np.abs(other[3] - frames[3])[obj].mean() > 0.7 * 30.0


def test_denoise_series_without_training_is_volume_by_volume(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from c2s_cli.api import Denoiser

    _, noisy = _series(t=4)
    den = Denoiser(str(tiny_model), "cpu")
    ref = den.denoise(noisy, self_similarity=False)
    out = den.denoise_series(noisy, steps=0, floor_spread=0.0, self_similarity=False)
    assert out.shape == noisy.shape and np.array_equal(out, ref)
    # with the self-similarity blend (the default): one SURE fit per shell (no gradient table: one for the series),
    # NL radius 1 (config.SERIES_SELF_SIMILARITY)
    from c2s_cli.records import DenoiseReport

    rep = DenoiseReport()
    blended = den.denoise_series(noisy, steps=0, floor_spread=0.0, report=rep)
    assert len(rep.blends) == 1 and rep.blends[0].radius == 1 and 0.0 <= rep.blends[0].weight <= 0.5
    assert not np.array_equal(blended, out) or rep.blends[0].weight == 0.0
    rep3 = DenoiseReport()
    den.denoise_series(noisy, steps=0, bvals=np.array([0, 1000, 1000, 1000.0]),
                       bvecs=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]), report=rep3)
    assert len(rep3.blends) == 2  # b 0 and b 1000
    # the series mode's inverse averages over the estimate's uncertainty at the Rician floor (FLOOR_SPREAD): the same
    # values well above the floor, small positive ones instead of exact zeros at it
    soft = den.denoise_series(noisy, steps=0, self_similarity=False)
    high = ref > 10 * den.fit_noise(noisy).domains[0].sigma
    np.testing.assert_allclose(soft[high], ref[high], rtol=2e-3)
    floor = (ref == 0) & (noisy > 0)  # estimates at the floor (zeros of the input pass through unchanged)
    assert floor.sum() > 100 and np.mean(soft[floor] == 0) < 0.05  # (only estimates > 2.3 σ below the floor stay 0)


def test_denoise_series_trains_deterministically(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from c2s_cli.api import Denoiser
    from c2s_cli.records import DenoiseReport

    _, noisy = _series(t=4)
    bvals = np.array([0, 1000, 1000, 1000.0])
    bvecs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    den = Denoiser(str(tiny_model), "cpu")
    rep = DenoiseReport()
    a = den.denoise_series(noisy, bvals=bvals, bvecs=bvecs, steps=3, report=rep)
    b = den.denoise_series(noisy, bvals=bvals, bvecs=bvecs, steps=3)
    assert np.array_equal(a, b) and np.isfinite(a).all()
    assert not np.array_equal(a, den.denoise_series(noisy, bvals=bvals, bvecs=bvecs, steps=0))
    assert len(rep.domains) == 4 and rep.seconds["training"] > 0
    with pytest.raises(UsageError, match="4-D") as e:
        den.denoise_series(noisy[..., 0], steps=0)
    assert e.value.param == "series_mode"
    with pytest.raises(UsageError, match="bvals") as e:
        den.denoise_series(noisy, bvals=bvals[:3], steps=0)
    assert e.value.param == "bvals"
    with pytest.raises(UsageError, match="series_neighbours"):
        den.denoise_series(noisy, neighbours=20, steps=0)


def test_subspace_projection_applies_to_diffusion_series_only(tiny_model) -> None:  # type: ignore[no-untyped-def]
    """With a gradient table the context mode projects on the series' subspace (SUBSPACE_WEIGHT, recorded) and
    ``subspace_weight=0`` gives the estimate without it; without a table nothing is projected (recorded as 0); a
    weight outside [0, 1] is a usage error naming the parameter, raised before any compute."""
    from c2s_cli.api import Denoiser
    from c2s_cli.records import DenoiseReport

    _, noisy = _series(t=4)
    bvals = np.array([0, 1000, 1000, 1000.0])
    bvecs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    den = Denoiser(str(tiny_model), "cpu")
    rep, rep0, rep_t = DenoiseReport(), DenoiseReport(), DenoiseReport()
    on = den.denoise_series(noisy, bvals=bvals, bvecs=bvecs, steps=0, self_similarity=False, report=rep)
    off = den.denoise_series(noisy, bvals=bvals, bvecs=bvecs, steps=0, self_similarity=False, subspace_weight=0,
                             report=rep0)
    assert rep.series_subspace_weight == series.SUBSPACE_WEIGHT == 1.0 and rep0.series_subspace_weight == 0.0
    assert not np.array_equal(on, off) and np.isfinite(on).all()
    den.denoise_series(noisy, steps=0, self_similarity=False, report=rep_t)
    assert rep_t.series_subspace_weight == 0.0
    with pytest.raises(UsageError, match="series_subspace_weight") as e:
        den.denoise_series(noisy, bvals=bvals, bvecs=bvecs, steps=0, subspace_weight=1.5)
    assert e.value.param == "series_subspace_weight"


def test_a_start_model_with_context_channels(tmp_path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    """A start model already trained with context (scripts/train_series_start.py) is used as it is by the series
    mode (with 0 steps: its own output), refuses fewer neighbours than it takes, and is no volume-by-volume model."""
    from c2s_cli.api import Denoiser
    from c2s_cli.checkpoint import load_model, save_model

    base, cfg, _ = load_model(tiny_model)
    ctx_model = series.widen(base, 4)
    torch.manual_seed(3)
    for p in ctx_model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    path = tmp_path / "start.safetensors"
    save_model(path, ctx_model.state_dict(), dataclasses.replace(cfg, model=ctx_model.cfg),
               {"training": {"description": "tests"}})
    _, noisy = _series(t=5)
    den = Denoiser(str(path), "cpu")
    a = den.denoise_series(noisy, steps=0)
    wider = den.denoise_series(noisy, steps=0, neighbours=3)  # one more neighbour: a zero-weight channel
    plain = Denoiser(str(tiny_model), "cpu").denoise_series(noisy, steps=0)
    assert np.isfinite(a).all() and np.allclose(a, wider, atol=1e-4) and not np.allclose(a, plain, atol=1e-3)
    with pytest.raises(UsageError, match="series_neighbours") as e:
        den.denoise_series(noisy, steps=0, neighbours=1)
    assert e.value.param == "series_neighbours"
    with pytest.raises(UsageError, match="series start model") as e:
        den.denoise(noisy)
    assert e.value.param == "model"
    # a file, one volume: refused before the noise fit (no compute), nothing written; from the CLI one line naming
    # --model with the usage exit code
    import nibabel as nib

    from conftest import c2s, one_error_line

    src, out = tmp_path / "one.nii.gz", tmp_path / "out.nii.gz"
    nib.save(nib.Nifti1Image(noisy[..., 0], np.eye(4)), str(src))

    def no_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the noise was fitted before the refusal")

    den.fit_noise = no_fit  # type: ignore[method-assign]
    with pytest.raises(UsageError, match="series start model"):
        den.denoise_file(src, out)
    assert not out.exists()
    r = c2s("denoise", str(src), "-o", str(out), "--model", str(path))
    one_error_line(r, 2, "--model", "series start model")
    assert not out.exists()


def _write_series(tmp_path, with_table: str = "both"):  # type: ignore[no-untyped-def]
    import nibabel as nib

    _, noisy = _series(t=4)
    src = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(noisy, np.diag([2.0, 2.0, 2.0, 1.0])), str(src))
    if with_table in ("both", "bval"):
        (tmp_path / "dwi.bval").write_text("0 1000 1000 1000\n")
    if with_table in ("both", "bvec"):
        (tmp_path / "dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    return src


def test_cli_context_mode_reads_the_gradient_table(tmp_path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    import json

    from conftest import c2s, one_error_line

    src = _write_series(tmp_path)
    before = src.read_bytes()
    out = tmp_path / "out.nii.gz"
    r = c2s("denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--series-mode", "context",
            "--series-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["series_mode"] == "context"
    from c2s_cli.checkpoint import sha256

    assert rec["series_context"] == {"neighbours_in": "q-space (.bval / .bvec)", "training_steps": 2,
                                     "floor_spread": 0.5, "prediction_weight": 0.0, "subspace_weight": 1.0,
                                     "start_model": {"model": tiny_model.stem, "sha256": sha256(tiny_model)}}
    import nibabel as nib

    assert nib.load(str(out)).shape == (40, 40, 8, 4) and src.read_bytes() == before
    # the noise map, as dwidenoise -noise gives it: the σ used per voxel and volume
    smap = tmp_path / "sigma.nii.gz"
    r = c2s("denoise", str(src), "-o", str(tmp_path / "o3.nii.gz"), "--model", str(tiny_model), "--series-mode",
            "context", "--series-steps", "0", "--save-sigma-map", str(smap))
    assert r.returncode == 0, r.stderr
    sig = np.asarray(nib.load(str(smap)).dataobj)
    assert sig.shape == (40, 40, 8, 4) and np.all(sig > 0) and 15 < float(np.median(sig)) < 60  # true σ 30
    (tmp_path / "dwi.bvec").unlink()
    r = c2s("denoise", str(src), "-o", str(tmp_path / "o2.nii.gz"), "--model", str(tiny_model), "--series-mode",
            "context")
    one_error_line(r, 4, "dwi.bvec: missing")
    assert not (tmp_path / "o2.nii.gz").exists()


def test_cli_context_mode_on_a_dicom_dwi_series(tmp_path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    """A classic DICOM DWI series: the gradient table comes from its diffusion attributes (recorded), and the derived
    series has every input instance's counterpart with the same diffusion attributes."""
    import json

    import pydicom
    from conftest import c2s
    from pydicom.uid import generate_uid

    from c2s_bench.phantoms import make_series

    _, noisy = _series(t=4)
    uid, src = generate_uid(), tmp_path / "dwi"
    bvals, bvecs = [0.0, 1000.0, 1000.0, 1000.0], [[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]
    for t in range(4):
        make_series(src / f"v{t}", np.rint(noisy[..., t]), series_uid=uid, shuffle_seed=t)
        for p in (src / f"v{t}").iterdir():
            ds = pydicom.dcmread(p)
            ds.InstanceNumber = int(ds.InstanceNumber) + 100 * t
            ds.add_new(0x00189087, "FD", bvals[t])
            ds.add_new(0x00189089, "FD", bvecs[t])
            ds.save_as(p)
    out = tmp_path / "out"
    r = c2s("denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--series-mode", "context",
            "--series-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["series_context"]["neighbours_in"] == "q-space (DICOM DiffusionBValue / DiffusionGradientOrientation)"
    got = sorted((float(d[0x00189087].value), tuple(d[0x00189089].value))
                 for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in out.rglob("*") if p.is_file()))
    assert got == sorted((b, tuple(g)) for b, g in zip(bvals, bvecs) for _ in range(8))


def test_cli_series_mode_auto(tmp_path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    """The default (auto): context for a diffusion series with its gradient table, volumes for a series without one
    (fMRI) and when an option the context mode cannot take is given; --series-mode volumes is the way back."""
    import json

    from conftest import c2s

    runs = iter(range(100))

    def mode(src, *extra):  # type: ignore[no-untyped-def]
        r = c2s("denoise", str(src), "-o", str(tmp_path / f"o{next(runs)}.nii.gz"), "--model",
                str(tiny_model), "--json", *extra, env={"C2S_SERIES_STEPS": "2"})
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])["series_mode"]

    def info(src):  # type: ignore[no-untyped-def]
        r = c2s("info", str(src), "--json", "--no-noise")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["series"]

    dwi = _write_series(tmp_path)
    assert info(dwi) == {"volumes": 4, "c2s_denoise_uses": "context", "gradient_table": ".bval / .bvec",
                         "shells": {"0": 1, "1000": 3}}
    assert mode(dwi) == "context"
    assert mode(dwi, "--series-mode", "volumes") == "volumes"
    assert mode(dwi, "--planes", "axial,coronal") == "volumes"
    (tmp_path / "dwi.bval").unlink()
    assert info(dwi)["c2s_denoise_uses"] == "refuses" and "dwi.bval: missing" in info(dwi)["reason"]
    (tmp_path / "dwi.bvec").unlink()
    assert mode(dwi) == "volumes"
    assert info(dwi) == {"volumes": 4, "c2s_denoise_uses": "volumes"}


def test_cli_context_mode_refuses_what_it_cannot_do(tmp_path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    from conftest import c2s, one_error_line

    src = _write_series(tmp_path, "none")
    for extra, needle in ((["--planes", "axial,coronal"], "planes is not available"), (["--tta", "2"], "tta is not"),
                          (["--series-mode", "both"], "--series-mode must be")):
        args = ["--series-mode", "context", *extra] if extra[0] != "--series-mode" else extra
        r = c2s("denoise", str(src), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tiny_model), *args)
        one_error_line(r, 2, needle)


def test_local_predictions_are_unbiased() -> None:
    """Noiseless low-rank frames are predicted exactly from the others; with noise, the errors-in-variables weights
    keep the contrast (slope of the prediction against the clean frame ≈ 1), where ordinary least squares shrinks it."""
    rng = np.random.default_rng(0)
    basis = rng.random((3, 16, 16, 16)).astype(np.float32) * 10
    mix = rng.random((12, 3)).astype(np.float32)
    clean = np.einsum("tk,kxyz->txyz", mix, basis)
    valid = np.ones(clean.shape[1:], bool)
    pred = series.local_predictions(clean, valid, np.zeros(12), block=8)
    assert np.abs(pred - clean).max() < 2e-3 * np.abs(clean).max()
    noisy = clean + rng.standard_normal(clean.shape).astype(np.float32)
    pred = series.local_predictions(noisy, valid, np.ones(12), block=8)
    c = clean[5] - clean[5].mean()
    slope = float((c * (pred[5] - pred[5].mean())).sum() / (c * c).sum())
    assert abs(slope - 1) < 0.05
    assert np.mean((pred[5] - clean[5]) ** 2) < 0.5 * np.mean((noisy[5] - clean[5]) ** 2)


def test_series_strength_is_passed_and_checked(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from c2s_cli.api import Denoiser

    _, noisy = _series(t=4)
    den = Denoiser(str(tiny_model), "cpu")
    assert np.array_equal(den.denoise_series(noisy, steps=0, strength=0.7, floor_spread=0.0, self_similarity=False),
                          den.denoise(noisy, strength=0.7, self_similarity=False))
    with pytest.raises(UsageError, match="strength") as e:
        den.denoise_series(noisy, steps=0, strength=0)
    assert e.value.param == "strength"


def _directional_series(rng: np.random.Generator, n: int, shape: tuple[int, int, int], seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """A shell of ``n`` directions: base·(1 + 0.25·cos(2θ + φ)) with a per-voxel orientation φ (X, Y, Z, n), and its
    base (X, Y, Z): rank 3 across the volumes, plus the offset."""
    base = 400.0 + 200.0 * head_phantom(shape, seed=seed)
    theta = np.linspace(0, np.pi, n, endpoint=False)
    phi = rng.random(shape) * np.pi
    clean = np.stack([base * (1 + 0.25 * np.cos(2 * theta[k] + phi)) for k in range(n)], 3).astype(np.float32)
    return clean, base


def test_match_variance_undoes_shrinkage_only() -> None:
    """A shell whose estimate was shrunk towards its mean (×0.6) gets the data's directional spread back (ratio to
    the true spread ≈ 1) with its mean unchanged; a shell without directional signal is left nearly as it is (α
    clipped at 1: it never shrinks and puts no noise back); a group too small for MP-PCA is left bit for bit."""
    rng = np.random.default_rng(3)
    n, shape, sigma = 24, (32, 32, 12), 20.0
    clean, base = _directional_series(rng, n, shape, seed=1)
    flat = np.repeat(base[..., None], n, 3).astype(np.float32)
    for truth, expect_gain in ((clean, True), (flat, False)):
        noisy = np.stack([rician(truth[..., k], sigma, seed=10 + k) for k in range(n)], 3).astype(np.float32)
        frames = [noisy[..., k] for k in range(n)]
        doms = [NoiseDomain.fit(f, sigma) for f in frames]
        ctx = series.SeriesContext(frames, doms, series.neighbours(n, 2), series.pools(n))
        mean = truth.mean(3, keepdims=True)
        residual = 0.15 * sigma * rng.standard_normal(truth.shape)  # what a denoiser leaves of the noise
        shrunk = (mean + 0.6 * (truth - mean) + residual).astype(np.float32)
        out = series.match_variance(shrunk.copy(), ctx, [np.arange(n)])
        inner = (slice(4, -4), slice(4, -4), slice(2, -2))
        np.testing.assert_allclose(out.mean(3)[inner], shrunk.mean(3)[inner], rtol=0.01)
        spread = float(np.sqrt(np.mean(out[inner].var(3))))
        if expect_gain:
            ratio = spread / float(np.sqrt(np.mean(truth[inner].var(3))))
            assert 0.9 < ratio < 1.1, ratio  # 0.6 before
        else:
            assert spread < 1.02 * float(np.sqrt(np.mean(shrunk[inner].var(3))))  # α = 1: no noise put back
    small = series.match_variance(shrunk.copy(), ctx, [np.arange(4)])
    np.testing.assert_array_equal(small, shrunk)


def test_many_volumes_take_the_leave_one_out_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EIV_MAX_VOLUMES the closed-form leave-one-out prediction: exact on noiseless low-rank frames (with an
    offset: the constant row), unbiased with noise, within 25 % of the per-target regression's error, and a fresh
    noise draw of the target moves it by a fifth of σ at most (the regression's test bound; the target moves by ~1.1 σ)."""
    rng = np.random.default_rng(1)
    t = series.EIV_MAX_VOLUMES + 8
    basis = rng.random((3, 16, 16, 16)).astype(np.float32) * 10
    clean = np.einsum("tk,kxyz->txyz", rng.random((t, 3)).astype(np.float32), basis) + 5.0
    valid = np.ones(clean.shape[1:], bool)
    pred = series.local_predictions(clean, valid, np.zeros(t), block=8)
    assert np.abs(pred - clean).max() < 2e-3 * np.abs(clean).max()
    noisy = clean + rng.standard_normal(clean.shape).astype(np.float32)
    pred = series.local_predictions(noisy, valid, np.ones(t), block=8)
    c = clean[5] - clean[5].mean()
    assert abs(float((c * (pred[5] - pred[5].mean())).sum() / (c * c).sum()) - 1) < 0.05
    err = np.sqrt(np.mean((pred - clean) ** 2))
    with monkeypatch.context() as m:
        m.setattr(series, "EIV_MAX_VOLUMES", t)  # the per-target regression on the same series
        eiv = np.sqrt(np.mean((series.local_predictions(noisy, valid, np.ones(t), block=8) - clean) ** 2))
    assert err < 1.25 * eiv and err < 0.5
    other = noisy.copy()
    other[5] = clean[5] + rng.standard_normal(clean[5].shape).astype(np.float32)
    moved = series.local_predictions(other, valid, np.ones(t), block=8)[5]
    assert np.abs(moved - pred[5]).mean() < 0.2 and np.abs(other[5] - noisy[5]).mean() > 1.0  # 0.15 σ measured


@pytest.mark.parametrize("t", [12, series.EIV_MAX_VOLUMES + 4])
def test_predictions_do_not_depend_on_the_units(t: int) -> None:
    """The prediction is equivariant to the data's units: the frames ×c with noise variance ×c² (signed data
    without the VST, e.g. complex, whose noise variance is σ², not 1) give c × the prediction. Before the fix the
    noise threshold assumed unit variance, so a scan in image units kept its noise components (measured on the DWI
    phantom without the VST: b0 −1.8 dB)."""
    rng = np.random.default_rng(2)
    basis = rng.random((3, 16, 16, 8)).astype(np.float32) * 10
    clean = np.einsum("tk,kxyz->txyz", rng.random((t, 3)).astype(np.float32), basis) + 5.0
    noisy = clean + rng.standard_normal(clean.shape).astype(np.float32)
    valid = np.ones(clean.shape[1:], bool)
    unit = series.local_predictions(noisy, valid, np.ones(t), block=8)
    scaled = series.local_predictions(noisy * 40.0, valid, np.full(t, 40.0 ** 2), block=8)
    np.testing.assert_allclose(scaled / 40.0, unit, atol=1e-3 * np.abs(unit).max())


def test_local_rank_counts_the_components_above_the_noise() -> None:
    """Blocks whose frames mix 1 or 3 components (plus an offset: the constant row) get ranks 2 and 4 in noise of
    σ 1 and of σ 30 alike (the units do not matter), pure noise gets the constant alone, a block with no valid voxel
    0."""
    rng = np.random.default_rng(3)
    t = 20
    shape = (16, 8, 8)
    clean = np.full((t,) + shape, 50.0, np.float32)
    for lo, k in ((0, 1), (8, 3)):
        basis = rng.random((k, 8, 8, 8)).astype(np.float32) * 40
        clean[:, lo:lo + 8] += np.einsum("tk,kxyz->txyz", rng.random((t, k)).astype(np.float32), basis)
    valid = np.ones(shape, bool)
    for s in (1.0, 30.0):
        noisy = (clean + rng.standard_normal(clean.shape).astype(np.float32)) * s
        rank = series.local_rank(noisy, valid, np.full(t, s * s), block=8)
        assert rank.shape == shape and rank.dtype == np.int16
        assert set(np.unique(rank[:8])) == {2} and set(np.unique(rank[8:])) == {4}, (s, np.unique(rank))
    flat = rng.standard_normal((t,) + shape).astype(np.float32) + 50.0
    assert set(np.unique(series.local_rank(flat, valid, np.ones(t), block=8))) == {1}
    valid[8:] = False
    assert set(np.unique(series.local_rank(flat, valid, np.ones(t), block=8)[8:])) == {0}


def test_cli_rank_map(tmp_path, tiny_model) -> None:  # type: ignore[no-untyped-def]
    """--save-rank-map writes the context mode's rank map as a 3-D NIfTI on the 4-D input's grid; volume by volume
    there is none, and asking for it is refused before the compute (nothing written)."""
    import nibabel as nib
    from conftest import c2s, one_error_line

    src = _write_series(tmp_path)
    out, rank = tmp_path / "o.nii.gz", tmp_path / "rank.nii.gz"
    r = c2s("denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--save-rank-map", str(rank),
            env={"C2S_SERIES_STEPS": "2"})
    assert r.returncode == 0, r.stderr
    img, ref = nib.load(str(rank)), nib.load(str(src))
    assert img.shape == ref.shape[:3] and np.allclose(img.affine, ref.affine)
    values = np.asarray(img.dataobj)
    assert values.min() >= 0 and values.max() <= 5 and values.max() >= 1  # 4 volumes and the constant row
    out2, rank2 = tmp_path / "o2.nii.gz", tmp_path / "rank2.nii.gz"
    one_error_line(c2s("denoise", str(src), "-o", str(out2), "--model", str(tiny_model), "--series-mode", "volumes",
                       "--save-rank-map", str(rank2)), 2, "--save-rank-map", "volume by volume")
    assert not out2.exists() and not rank2.exists()


def test_offset_grids_lower_the_prediction_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The predictions of PREDICTION_GRIDS (4) offset block grids are averaged: on a noisy low-rank series whose size is
    not a multiple of the block (partial blocks at every border), the average is finite everywhere and closer to the
    clean frames than one grid's, and a fresh noise draw of the target still barely moves its prediction."""
    rng = np.random.default_rng(5)
    t = 12
    basis = rng.random((3, 20, 18, 13)).astype(np.float32) * 10
    clean = np.einsum("tk,kxyz->txyz", rng.random((t, 3)).astype(np.float32), basis) + 3.0
    valid = np.ones(clean.shape[1:], bool)
    assert series.PREDICTION_GRIDS == 4
    noisy = clean + rng.standard_normal(clean.shape).astype(np.float32)
    pred = series.local_predictions(noisy, valid, np.ones(t), block=8)
    assert np.all(np.isfinite(pred))
    four = np.sqrt(np.mean((pred - clean) ** 2))
    other = noisy.copy()
    other[5] = clean[5] + rng.standard_normal(clean[5].shape).astype(np.float32)
    moved = series.local_predictions(other, valid, np.ones(t), block=8)[5]
    assert np.abs(moved - pred[5]).mean() < 0.2
    monkeypatch.setattr(series, "PREDICTION_GRIDS", 1)
    one = np.sqrt(np.mean((series.local_predictions(noisy, valid, np.ones(t), block=8) - clean) ** 2))
    assert four < one, (four, one)


@pytest.mark.parametrize("shape", [(16, 8, 8), (13, 10, 7)])
def test_blocks_cut_and_join_are_exact_inverse_copies(shape: tuple[int, int, int]) -> None:
    """_Blocks.cut takes every block³ block (zero-padded to whole blocks) in C order of the block grid, voxels in
    C order inside the block, for any leading axes; join puts (blocks, T, block³) back on the (T, X, Y, Z) grid."""
    rng = np.random.default_rng(0)
    t, b = 3, 4
    stab = rng.standard_normal((t, *shape)).astype(np.float32)
    bl = series._Blocks(stab, np.ones(shape, bool), np.ones(t), b, 1.0)
    cut = bl.cut(stab)
    padded = np.pad(stab, [(0, 0)] + [(0, (-n) % b) for n in shape])
    grid = [range(0, n, b) for n in padded.shape[1:]]
    blocks = [padded[:, i:i + b, j:j + b, k:k + b].reshape(t, -1) for i in grid[0] for j in grid[1] for k in grid[2]]
    np.testing.assert_array_equal(cut, np.stack(blocks))
    np.testing.assert_array_equal(bl.cut(stab[0]), np.stack(blocks)[:, 0])
    np.testing.assert_array_equal(bl.join(cut), stab)
    assert bl.join(cut).flags.c_contiguous and bl.join(cut).dtype == np.float32
    # a, the model's rows: the frames × the valid mask, then the constant row √(mean noise variance)
    assert bl.a.dtype == np.float64 and bl.a.shape == (len(blocks), t + 1, b**3)


def test_prediction_weight_moves_the_estimate_towards_the_prediction_in_network_units() -> None:
    """denoise_frame's ``context_weight`` w: f = D + w·(P − D) in network units, P the first context channel. Without
    the VST (network units are image units / scale) the output is linear in w: w = 1 gives P itself (whatever the
    network), w = 0.5 the mean of w = 0 and w = 1; w = 0 is the plain output bit for bit; refusals name the
    parameter."""
    from c2s_cli.infer import denoise_frame

    torch.manual_seed(0)
    base = Precond(ModelConfig(context=1, channels=(8, 16), emb_dim=16)).eval()
    for p in base.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    model = series.widen(base, 2).eval()
    rng = np.random.default_rng(0)
    data = (rng.random((12, 10, 6)) * 50 + 10).astype(np.float32)
    dom = NoiseDomain(sigma=2.0, scale=25.0, use_vst=False)
    unit = NoiseDomain.identity(1.0)
    pred = (rng.random(data.shape) * 2).astype(np.float32)  # network units
    guides = [(pred, unit), (rng.random(data.shape).astype(np.float32), unit)]
    run = lambda w: denoise_frame(model, data, dom, guides=guides, context_weight=w, passthrough=False)  # noqa: E731
    plain = denoise_frame(model, data, dom, guides=guides, passthrough=False)
    assert np.array_equal(run(0.0), plain)
    np.testing.assert_allclose(run(1.0), dom.inverse(pred), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(run(0.5), (plain + run(1.0)) / 2, rtol=1e-5, atol=1e-4)
    assert not np.allclose(plain, run(1.0), atol=1e-2)
    with pytest.raises(ValueError, match="context_weight"):
        run(1.5)
    with pytest.raises(ValueError, match="context_weight"):
        denoise_frame(base, data, dom, context_weight=0.2)
    with pytest.raises(ValueError, match="series_prediction_weight"):
        series.SeriesConfig(prediction_weight=-0.1).validate()


def test_project_subspace_removes_what_lies_outside_the_series_subspace() -> None:
    """An estimate = the clean directional series + independent residual noise per volume (what a denoiser leaves):
    projected on the noisy series' local subspace (w = 1) it keeps the signal (the clean series is nearly a fixed
    point) and loses most of the residual; w = 0.5 lies between; w = 0 changes nothing; a weight outside [0, 1] is
    refused."""
    rng = np.random.default_rng(5)
    n, shape, sigma = 24, (32, 32, 12), 20.0
    clean, _ = _directional_series(rng, n, shape, seed=2)
    noisy = np.stack([rician(clean[..., k], sigma, seed=40 + k) for k in range(n)], 3).astype(np.float32)
    frames = [noisy[..., k] for k in range(n)]
    doms = [NoiseDomain.fit(f, sigma) for f in frames]
    ctx = series.SeriesContext(frames, doms, series.neighbours(n, 2), series.pools(n))
    estimate = (clean + 0.3 * sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    inner = (slice(4, -4), slice(4, -4), slice(2, -2))

    def rmse(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean((x - clean)[inner] ** 2)))

    np.testing.assert_array_equal(series.project_subspace(estimate.copy(), ctx, 0.0), estimate)
    full = series.project_subspace(estimate.copy(), ctx, 1.0)
    half = series.project_subspace(estimate.copy(), ctx, 0.5)
    assert rmse(full) < 0.5 * rmse(estimate), (rmse(full), rmse(estimate))  # 0.3 σ before
    assert rmse(full) < rmse(half) < rmse(estimate)
    assert rmse(series.project_subspace(clean.copy(), ctx, 1.0)) < 0.1 * sigma  # the signal is kept
    with pytest.raises(ValueError, match="series_subspace_weight"):
        series.project_subspace(estimate.copy(), ctx, 1.5)
