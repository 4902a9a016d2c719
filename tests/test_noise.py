from __future__ import annotations

import numpy as np
import pytest

from c2s_bench.phantoms import head_phantom, rician, zero_filled_rician
from c2s_cli.noise import vst
from c2s_cli.noise.estimate import estimate_noise


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return head_phantom((128, 128, 24), seed=0)


@pytest.mark.parametrize("snr", [3, 10, 30])
def test_estimators_on_known_sigma(clean: np.ndarray, snr: int) -> None:
    sigma = 1.0 / snr  # WM ≈ 1
    y = rician(clean, sigma, seed=snr)
    est = estimate_noise(y)
    assert abs(est.sigma_object / sigma - 1) <= 0.05
    assert est.sigma_background is not None and abs(est.sigma_background / sigma - 1) <= 0.03
    assert est.method == "background" and 0.9 <= est.ratio <= 1.1
    assert abs(est.background_acf) < 0.05
    assert est.warnings == ()


@pytest.mark.parametrize("snr", [3, 10, 30])
def test_skull_stripped(clean: np.ndarray, snr: int) -> None:
    sigma = 1.0 / snr
    y = np.where(clean > 0, rician(clean, sigma, seed=10 + snr), 0)
    est = estimate_noise(y)
    assert abs(est.sigma_object / sigma - 1) <= 0.05
    assert est.sigma_background is None and est.background_status.startswith("unavailable")
    assert est.method == "object" and est.sigma == est.sigma_object


def test_fine_texture_keeps_the_background_estimate(clean: np.ndarray) -> None:
    """Texture at the voxel scale inflates the object (wavelet) estimate; with a white background the lower,
    background estimate is used (conservative: it cannot over-smooth) and the disagreement is reported."""
    texture = 1 + 0.08 * np.random.default_rng(5).standard_normal(clean.shape)
    y = rician(clean * texture, 0.05, seed=6)
    est = estimate_noise(y)
    assert est.ratio > 1.1
    assert est.method == "background" and abs(est.sigma / 0.05 - 1) <= 0.03
    assert any("texture" in w for w in est.warnings)


def test_sum_of_squares_is_flagged_and_handled(clean: np.ndarray) -> None:
    y = rician(clean, 0.1, seed=4, coils=4)
    est = estimate_noise(y)
    assert est.ratio < 0.8 and abs(est.background_acf) < 0.05
    assert any("non-central χ" in w for w in est.warnings)
    est4 = estimate_noise(y, coils=4)
    assert abs(est4.sigma_background / 0.1 - 1) <= 0.06
    assert 0.9 <= est4.ratio <= 1.1


def test_correlated_noise_is_flagged(clean: np.ndarray) -> None:
    est = estimate_noise(zero_filled_rician(clean, 0.1, seed=2))
    assert est.ratio < 0.8 and est.background_acf > 0.15
    assert any("correlated" in w for w in est.warnings)


def test_scale_equivariance_and_quantisation(clean: np.ndarray) -> None:
    y = rician(clean, 0.1, seed=7)
    a = estimate_noise(y)
    b = estimate_noise(y * 37.0)
    assert b.sigma_object == pytest.approx(37.0 * a.sigma_object, rel=5e-3)
    assert b.sigma_background == pytest.approx(37.0 * a.sigma_background, rel=5e-3)
    # uint16 storage with σ = 12 units
    q = np.rint(y * 120.0).astype(np.uint16)
    c = estimate_noise(q)
    assert abs(c.sigma_object / 12.0 - 1) <= 0.03 + abs(a.sigma_object / 0.1 - 1)
    assert abs(c.sigma / 12.0 - 1) <= 0.03


@pytest.mark.parametrize("nu", [0, 0.5, 1, 2, 3, 5, 10, 30])
def test_vst_stabilises(nu: float) -> None:
    rng = np.random.default_rng(int(nu * 10))
    n = 400_000
    z = np.abs(nu + rng.standard_normal(n) + 1j * rng.standard_normal(n))
    assert 0.97 <= vst.forward(z, 1.0).std() <= 1.03


def test_vst_scale_equivariance() -> None:
    z = np.linspace(0, 200, 1001)
    np.testing.assert_allclose(vst.forward(z, 7.5), vst.forward(z / 7.5, 1.0), rtol=1e-6, atol=1e-6)
    e = np.linspace(0, 40, 101)
    np.testing.assert_allclose(vst.inverse(e, 7.5), 7.5 * vst.inverse(e, 1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nu", [0.5, 1, 2, 3, 5, 10])
def test_exact_unbiased_inverse(nu: float) -> None:
    rng = np.random.default_rng(100 + int(nu * 10))
    z = np.abs(nu + rng.standard_normal((4000, 64)) + 1j * rng.standard_normal((4000, 64)))
    est = vst.inverse(vst.forward(z, 1.0).mean(axis=1), 1.0)
    assert abs(est.mean() - nu) <= 0.05
    # plain averaging of magnitudes is biased at low SNR: the inverse is what removes it
    if nu <= 1:
        assert z.mean() - nu > 0.3


def test_nc_chi_vst() -> None:
    rng = np.random.default_rng(0)
    for nu in (0.0, 2.0, 10.0):
        ch = rng.standard_normal((4, 2, 200_000))
        ch[0, 0] += nu
        z = np.sqrt((ch**2).sum(axis=(0, 1)))
        assert 0.97 <= vst.forward(z, 1.0, coils=4).std() <= 1.03


@pytest.mark.parametrize("coils", [1, 4])
def test_vst_fast_lookup_matches_the_tables(coils: int) -> None:
    """forward/inverse use a uniform resampling of the tables (float32, O(1) per voxel): they must agree with plain
    linear interpolation of the tables, slope-1 extension above them included."""
    t = vst._table(coils)
    z = np.linspace(0, 1.3 * t.z[-1], 100_001)
    ref = np.where(z > t.z[-1], t.f[-1] + z - t.z[-1], np.interp(z, t.z, t.f))
    assert np.abs(vst.forward(z, 1.0, coils) - ref).max() < 1e-4
    e = np.linspace(t.ef[0] - 1, 1.3 * t.ef[-1], 100_001)
    ref_nu = np.maximum(np.where(e > t.ef[-1], t.nu[-1] + e - t.ef[-1], np.interp(e, t.ef, t.nu)), 0)
    err = np.abs(vst.inverse(e, 1.0, coils) - ref_nu)
    assert err.max() < 0.01  # the steep start of the inverse (ν < 1)
    assert err[ref_nu > 1].max() < 1e-4
    assert vst.forward(np.array([-5.0]), 2.0, coils)[0] == pytest.approx(t.f[0] * 1.0, abs=1e-6)
    # scalars keep their shape; NaN and ±inf propagate as values, never as table indices
    assert vst.forward(3.0, 1.0, coils).shape == () and vst.inverse(np.float32(5.0), 1.0, coils).shape == ()
    out = vst.inverse(np.array([np.nan, np.inf, -np.inf, 5.0]), 1.0, coils)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0 and np.isfinite(out[3])


def test_degenerate_sigma_is_refused_not_turned_into_nan() -> None:
    """A σ estimate or a user σ so small that the normalised volume overflows is refused with a named error (the
    fuzz campaign's last exit-1 case: a mutated volume whose estimate was 4e-41)."""
    import pytest

    from c2s_cli.noise.domain import NoiseDomain, NoiseEstimateError
    from c2s_cli.noise.estimate import NoiseEstimate

    data = np.full((24, 24, 6), 500.0, np.float32)
    data[::3] = 1036.0
    with pytest.raises(NoiseEstimateError, match="implausibly small"):
        NoiseDomain.fit(data, estimate=NoiseEstimate(sigma=4e-41, method="object"))
    with pytest.raises(ValueError, match="sigma = .* too small"):
        NoiseDomain.fit(data, 1e-38)


def test_a_partly_zeroed_background_is_used_and_its_artefacts_do_not_pass_for_coils() -> None:
    """Issue 29: a background half zeroed by the scanner still gives an estimate (before: "masked", and the scan was
    refused or guessed); where what is left reads above the object it is called artefact, not non-central χ."""
    from c2s_bench.phantoms import smooth_phantom

    from c2s_cli.noise.synth import rician

    clean = smooth_phantom((128, 128, 16))
    rng = np.random.default_rng(3)
    noisy = rician(clean, 30.0, rng)
    outside = clean == 0
    half = outside & (np.arange(128)[:, None, None] < 64)
    white = rician(clean, 30.0, rng)
    est = estimate_noise(np.where(half, 0, white).astype(np.float32))
    assert est.background_status == "available (partly zeroed)" and abs(est.sigma_background / 30 - 1) < 0.1
    louder = np.where(outside, rician(clean, 45.0, rng), noisy)
    est = estimate_noise(np.where(half, 0, louder).astype(np.float32))
    assert est.method == "object" and any("partly zeroed" in w for w in est.warnings)
    assert not any("non-central" in w for w in est.warnings)


def test_inverse_with_spread_is_the_plain_inverse_above_the_floor_and_positive_at_it() -> None:
    """``spread`` averages the exact unbiased inverse over the estimate's uncertainty: well above the Rician floor
    it is the plain inverse (the inverse is linear there), at and below the floor it is small and positive instead
    of exactly 0, monotone in the estimate, and 0 keeps the plain inverse bit for bit."""
    floor = float(vst.expected(0.0, 1.0))
    e = np.linspace(floor - 1.0, floor + 12.0, 400).astype(np.float32)
    plain = vst.inverse(e, 2.0)
    np.testing.assert_array_equal(vst.inverse(e, 2.0, spread=0.0), plain)
    soft = vst.inverse(e, 2.0, spread=0.3)
    high = e > floor + 6
    np.testing.assert_allclose(soft[high], plain[high], rtol=2e-3)
    assert np.all(plain[e <= floor] == 0) and np.all(soft > 0)
    assert np.all(np.diff(soft) >= -1e-5)
    at_floor = float(vst.inverse(np.float32(floor), 1.0, spread=0.3))
    assert 0.05 < at_floor < 1.0  # a fraction of σ, not 0 and not the Rician mean of pure noise (1.25 σ)
    from c2s_cli.noise.domain import NoiseDomain

    d = NoiseDomain(sigma=2.0, scale=1.0, use_vst=True, floor_spread=0.3)
    np.testing.assert_array_equal(d.inverse(e), soft)


@pytest.mark.parametrize("spread", [0.3, 0.5, 1.5])
def test_the_tabulated_averaged_inverse_equals_the_quadrature(spread: float) -> None:
    """``inverse(spread=s)`` looks up one table of g(e) = Σ w_k·max(EUI(e + s·u_k), 0); it equals the nine lookups
    of the Gauss–Hermite quadrature to 1e-5 σ everywhere (far below the floor, where every node clamps, in the
    table, past its end on the slope-1 extension and far past it) except where a node reaches the first steps of
    the table, the inverse's square-root kink at the Rician floor: there to 3e-3 σ (the interpolation of g between
    grid points; the quadrature itself is coarser there); NaN stays NaN."""
    base = vst._uniform(1, "inverse")
    top = base.x0 + (base.ys.size - 1) / base.inv_h
    e = np.concatenate([np.linspace(base.x0 - 10, top + 10, 200001), [base.x0, top, top + 1e3]]).astype(np.float32)
    nodes, weights = np.polynomial.hermite_e.hermegauss(9)
    quad = np.zeros(e.shape, np.float64)
    for u, w in zip(nodes, weights / weights.sum()):
        quad += w * np.maximum(base(e + np.float32(spread * u)).astype(np.float64), 0)
    got = vst.inverse(e, 1.0, spread=spread)
    kink = np.abs(e - base.x0) <= spread * np.abs(nodes).max() + 1e-3
    assert kink.sum() > 100 and (~kink).sum() > 10000
    np.testing.assert_allclose(got[~kink], quad[~kink], rtol=1e-6, atol=1e-5)  # rtol: float32 far past the table
    np.testing.assert_allclose(got[kink], quad[kink], rtol=0, atol=3e-3)
    assert np.isnan(vst.inverse(np.float32(np.nan), 1.0, spread=spread))
    with pytest.raises(ValueError, match="spread"):
        vst.inverse(e, 1.0, spread=-0.1)
