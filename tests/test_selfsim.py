"""The self-similarity blend: SURE's weight (c2s_cli.selfsim), its fit on a frame (c2s_cli.infer.self_similarity)
and what Denoiser.denoise does with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from c2s_cli.api import Denoiser
from c2s_cli.config import SELF_SIMILARITY, ModelConfig, SelfSimilarity
from c2s_cli.infer import denoise_frame, self_similarity
from c2s_cli.model import Precond
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.records import DenoiseReport
from c2s_cli.model.nonlocal_means import nonlocal_means_volume
from c2s_cli.selfsim import SureSums, sure_weight
from tests.conftest import rician


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A smooth image with texture, its Gaussian-noisy copy and a Rademacher probe (64×64×8)."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((64, 64, 8)), (3, 3, 1)) * 4 + 0.1 * rng.random((64, 64, 8))
    sigma = 0.08
    y = x + sigma * rng.standard_normal(x.shape)
    probe = rng.choice([-1.0, 1.0], size=x.shape)
    return x, y, probe, sigma


@pytest.mark.parametrize("seed", [0, 1])
def test_sure_weight_finds_the_blend_the_clean_image_would_choose(seed: int) -> None:
    # two linear estimators with different bias and variance; SURE sees only y, the oracle sees x
    x, y, probe, sigma = _scene(seed)
    d_of = lambda v: ndimage.gaussian_filter(v, (1.6, 1.6, 0), mode="wrap")  # noqa: E731
    nl_of = lambda v: ndimage.gaussian_filter(v, (0.6, 0.6, 0), mode="wrap")  # noqa: E731
    eps = 0.01 * sigma
    d, nl = d_of(y), nl_of(y)
    fit = sure_weight(y, d, nl, d_of(y + eps * probe), nl_of(y + eps * probe), probe, eps, sigma, 1.0, -np.inf)
    grid = np.linspace(0, 1, 201)
    oracle = grid[np.argmin([np.mean((d + a * (nl - d) - x) ** 2) for a in grid])]
    assert 0.05 < oracle < 0.95  # the case is one where blending pays
    assert abs(fit.weight - oracle) < 0.05
    assert fit.voxels == x.size
    # the divergence per voxel of a Gaussian filter: the kernel's centre weight (two 1-D kernels' product)
    centre = lambda s: ndimage.gaussian_filter1d(np.eye(1, 33, 16)[0], s)[16]  # noqa: E731
    assert fit.div_d == pytest.approx(centre(1.6) ** 2, rel=0.05)
    assert fit.div_nl == pytest.approx(centre(0.6) ** 2, rel=0.05)


@pytest.mark.parametrize("seed", [0, 1])
def test_sure_gain_is_the_fall_of_sure_and_ranks_variants_as_the_clean_image_does(seed: int) -> None:
    x, y, probe, sigma = _scene(seed)
    d_of = lambda v: ndimage.gaussian_filter(v, (1.6, 1.6, 0), mode="wrap")  # noqa: E731
    eps = 0.01 * sigma
    d = d_of(y)
    n = x.size
    fits, oracle = [], []
    for s_nl in (0.3, 1.2):  # two candidate second estimates, as the 3×3 and 3×3×3 NL variants
        nl_of = lambda v, s_nl=s_nl: ndimage.gaussian_filter(v, (s_nl, s_nl, 0), mode="wrap")  # noqa: E731
        nl = nl_of(y)
        fit = sure_weight(y, d, nl, d_of(y + eps * probe), nl_of(y + eps * probe), probe, eps, sigma, 1.0, -np.inf)
        a = fit.weight
        sure = lambda f, div: float(np.sum((f - y) ** 2) - n * sigma**2 + 2 * sigma**2 * div)  # noqa: E731
        by_definition = (sure(d, fit.div_d * n) - sure(d + a * (nl - d), ((1 - a) * fit.div_d + a * fit.div_nl) * n))
        assert fit.sure_gain == pytest.approx(by_definition / (n * sigma**2), rel=1e-6)
        fits.append(fit.sure_gain)
        oracle.append(float(np.mean((d - x) ** 2) - np.mean((d + a * (nl - d) - x) ** 2)) / sigma**2)
    # an unbiased estimate of the error removed (about 0.01–0.02 σ² per voxel here), within 0.002
    assert fits == pytest.approx(oracle, abs=0.002)
    assert np.argmax(fits) == np.argmax(oracle) and abs(oracle[0] - oracle[1]) > 0.008


def test_the_sums_add_up_part_by_part() -> None:
    x, y, probe, sigma = _scene(2)
    d_of = lambda v: ndimage.gaussian_filter(v, (1.6, 1.6, 0), mode="wrap")  # noqa: E731
    eps = 0.01 * sigma
    arrays = (y, d_of(y), x, d_of(y + eps * probe), x, probe)
    level = float(np.median(arrays[1]))
    whole = sure_weight(*arrays, eps, sigma, 1.0, level)
    sums = SureSums(level)
    for part in (slice(0, 3), slice(3, 8)):
        sums.add(*(a[..., part] for a in arrays))
    parts = sums.fit(eps, sigma, 1.0)
    assert parts.voxels == whole.voxels < x.size  # the mask level took some voxels out
    assert parts.raw == pytest.approx(whole.raw, rel=1e-9) and parts.div_d == pytest.approx(whole.div_d, rel=1e-9)


def test_sure_weight_clips_masks_and_refuses() -> None:
    x, y, probe, sigma = _scene(0)
    same = sure_weight(y, y, y, y, y, probe, 0.001, sigma, 0.5, -np.inf)  # NL = D: nothing to blend
    assert same.weight == 0.0
    noisy_nl = sure_weight(x, x, y, x, y + 0.001 * probe, probe, 0.001, sigma, 0.5, -np.inf)  # NL = the noise
    assert noisy_nl.weight == 0.0 and noisy_nl.raw < 0  # SURE says: never blend it in
    d = ndimage.gaussian_filter(y, (1.6, 1.6, 0))
    moved = ndimage.gaussian_filter(y + 0.001 * probe, (1.6, 1.6, 0))
    capped = sure_weight(y, d, x, moved, x, probe, 0.001, sigma, 0.2, -np.inf)  # NL = the clean image: a* ≈ 1
    assert capped.raw == pytest.approx(1.0, abs=0.1) and capped.weight == 0.2
    assert sure_weight(y, d, x, d, x, probe, 0.001, sigma, 0.5, 1e9).voxels == 0  # an empty object: no blend
    with pytest.raises(ValueError, match="one shape"):
        sure_weight(y, d, x[:-1], d, x, probe, 0.001, sigma, 0.5, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        sure_weight(y, d, x, d, x, probe, 0.0, sigma, 0.5, 0.0)
    with pytest.raises(ValueError, match="max_weight"):
        sure_weight(y, d, x, d, x, probe, 0.001, sigma, 1.5, 0.0)


def test_the_config_refuses_out_of_range_values() -> None:
    SELF_SIMILARITY.validate()
    for name, value in (("radius", 0), ("h", 0.0), ("depths", (2,)), ("depths", ()), ("depths", (3, 3)),
                        ("fit_slices", 0), ("epsilon", 0.0), ("max_weight", 2.0)):
        with pytest.raises(ValueError, match=f"SelfSimilarity.{name}"):
            dataclasses.replace(SelfSimilarity(), **{name: value}).validate()


@pytest.fixture(scope="module")
def scan(phantom: np.ndarray) -> np.ndarray:
    return rician(phantom * 1000, 40.0, seed=11).astype(np.float32)


def test_the_fit_is_deterministic_and_the_blend_is_what_it_says(tiny_model: Path, scan: np.ndarray) -> None:
    den = Denoiser(str(tiny_model), "cpu", precision="fp32")
    dom = den.fit_noise(scan).domains[0]
    fit = self_similarity(den.model, scan, dom, SELF_SIMILARITY)
    assert self_similarity(den.model, scan, dom, SELF_SIMILARITY) == fit
    assert 0.0 <= fit.weight <= SELF_SIMILARITY.max_weight and fit.voxels > 0
    assert (fit.radius, fit.h) == (SELF_SIMILARITY.radius, SELF_SIMILARITY.h)
    # one fit per NL variant from the same passes; the one SURE expects to remove the most error is kept
    assert [c[0] for c in fit.candidates] == list(SELF_SIMILARITY.depths)
    assert (fit.depth, fit.weight, fit.sure_gain) == max(fit.candidates, key=lambda c: c[2])
    for depth, weight, gain in fit.candidates:  # each as a fit of that variant alone (whose probe may span fewer
        # slices: its Monte-Carlo divergence differs a little)
        alone = self_similarity(den.model, scan, dom, dataclasses.replace(SELF_SIMILARITY, depths=(depth,)))
        assert alone.depth == depth and alone.candidates == ((depth, alone.weight, alone.sure_gain),)
        assert alone.weight == pytest.approx(weight, abs=0.01) and alone.sure_gain == pytest.approx(gain, rel=0.02)
    # the blend is D + a·(NL − D) in network units, then the inverse; NL of the whole frame (computed slab by slab
    # in denoise_frame, whatever the batch size); a = 0 gives the network's output alone
    plain = denoise_frame(den.model, scan, dom)
    assert np.array_equal(denoise_frame(den.model, scan, dom, blend=[dataclasses.replace(fit, weight=0.0)]), plain)
    half = dataclasses.replace(fit, weight=0.5)
    got = denoise_frame(den.model, scan, dom, blend=[half], passthrough=False)
    np.testing.assert_array_equal(got, denoise_frame(den.model, scan, dom, blend=[half], passthrough=False,
                                                     batch_size=3))
    z = dom.forward(scan)
    nl = np.moveaxis(nonlocal_means_volume(torch.from_numpy(np.moveaxis(z, 2, 0).copy()), dom.sigma_d,
                                           fit.radius, fit.h, depth=fit.depth).numpy(), 0, 2)
    d_net = dom.expected(denoise_frame(den.model, scan, dom, passthrough=False))  # D (expected inverts inverse)
    want = dom.inverse(d_net + 0.5 * (nl - d_net))
    inside = scan > 200
    np.testing.assert_allclose(got[inside], want[inside], rtol=2e-3)


def test_denoise_applies_it_to_plain_models_and_records_the_weight(tiny_model: Path, scan: np.ndarray) -> None:
    den = Denoiser(str(tiny_model), "cpu", precision="fp32")
    rep = DenoiseReport()
    on = den.denoise(scan, report=rep)
    off_rep = DenoiseReport()
    off = den.denoise(scan, self_similarity=False, report=off_rep)
    assert len(rep.blends) == 1 and not off_rep.blends and "self-similarity" in rep.seconds
    assert rep.blends[0].weight > 0  # an untrained network: the NL estimate is worth blending in
    assert not np.array_equal(on, off)
    # 4-D: one fit per volume
    rep4 = DenoiseReport()
    den.denoise(np.stack([scan, scan * 1.2], axis=3), report=rep4)
    assert len(rep4.blends) == 2
    # --planes: one fit per plane
    rep3 = DenoiseReport()
    den.denoise(scan, planes=("axial", "coronal", "sagittal"), report=rep3)
    assert len(rep3.blends) == 3 and len({b.raw for b in rep3.blends}) == 3  # fitted along each axis


def test_guides_enter_as_channels_and_an_nl_channel_model_is_refused(scan: np.ndarray) -> None:
    torch.manual_seed(0)
    model = Precond(ModelConfig(channels=(8, 8), emb_dim=8, guides=1)).eval()
    dom = NoiseDomain.fit(scan)
    with pytest.raises(ValueError, match="expects 1"):
        self_similarity(model, scan, dom, SELF_SIMILARITY)
    guide = (scan[::-1].copy(), NoiseDomain.fit(scan[::-1].copy()))
    fit = self_similarity(model, scan, dom, SELF_SIMILARITY, guides=[guide])
    assert 0.0 <= fit.weight <= SELF_SIMILARITY.max_weight and fit.voxels > 0
    out = denoise_frame(model, scan, dom, guides=[guide], blend=[fit])
    assert out.shape == scan.shape and np.isfinite(out).all()
    with pytest.raises(ValueError, match="NL channel"):
        self_similarity(Precond(ModelConfig(channels=(8, 8), emb_dim=8, nonlocal_radius=1)), scan, dom,
                        SELF_SIMILARITY)


def test_slices_smaller_than_the_search_window_are_not_blended(tiny_model: Path) -> None:
    """A 2×9 or 3×3 slice cannot hold NL's ±2-pixel search: the fit says weight 0 (no voxels) and the network's
    output is returned, instead of an error from the NL estimate."""
    den = Denoiser(str(tiny_model), "cpu", precision="fp32")
    rng = np.random.default_rng(0)
    for shape in ((2, 9, 4), (3, 3, 1)):
        scan = (rng.random(shape) * 100 + 50).astype(np.float32)
        rep = DenoiseReport()
        out = den.denoise(scan, sigma=10.0, report=rep)
        assert rep.blends and all(b.weight == 0.0 and b.voxels == 0 for b in rep.blends)
        np.testing.assert_array_equal(out, den.denoise(scan, sigma=10.0, self_similarity=False))

