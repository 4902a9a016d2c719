from __future__ import annotations

import numpy as np
import pytest
import torch

from c2s_cli.config import ModelConfig
from c2s_cli.infer import denoise_array, denoise_frame, denoise_network_units
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.model import Precond

SMALL = ModelConfig(channels=(8, 16, 16), emb_dim=16)


def net_units(m: Precond, x: np.ndarray, sigma_d: float, *, axes: tuple[int, ...] = (2,), **kw: object) -> np.ndarray:
    """The production loop (:func:`denoise_frame`) on a network-unit volume: an identity domain of noise σ_d."""
    if len(axes) == 1:
        return denoise_network_units(m, x, sigma_d, slice_axis=axes[0], **kw)  # type: ignore[arg-type]
    return denoise_frame(m, x, NoiseDomain.identity(sigma_d), axes=axes, passthrough=False, **kw)  # type: ignore[arg-type]


def test_shapes_and_dtype_any_size() -> None:
    torch.manual_seed(0)
    m = Precond(SMALL).eval()
    for h, w in [(32, 32), (37, 50), (5, 9)]:
        y = m(torch.rand(2, 3, h, w), torch.tensor([0.1, 0.2]))
        assert y.shape == (2, 1, h, w) and y.dtype == torch.float32


def test_small_sigma_is_identity() -> None:
    """c_skip → 1 and c_out → 0 as σ → 0: D(x, σ) → centre slice, whatever the (random) weights."""
    torch.manual_seed(1)
    m = Precond(SMALL).eval()
    x = torch.rand(3, 3, 24, 24)
    out = m(x, torch.full((3,), 1e-4))
    torch.testing.assert_close(out, x[:, 1:2], atol=1e-3, rtol=0)
    far = m(x, torch.full((3,), 1.0))
    assert (far - x[:, 1:2]).abs().max() > 1e-2


def test_guides_are_not_rescaled() -> None:
    """The preconditioning scales the noisy target channels by c_in(σ) but passes guide channels as they are: the
    network's input equals [c_in·x_target, guide]."""
    torch.manual_seed(5)
    cfg = ModelConfig(channels=(8, 16), emb_dim=16, guides=1, context=0)
    m = Precond(cfg).eval()
    assert cfg.in_channels == 2
    seen: list[torch.Tensor] = []
    handle = m.net.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    x = torch.rand(1, 2, 16, 16) * 3
    sigma = 0.7
    y = m(x, torch.tensor([sigma]))
    handle.remove()
    assert y.shape == (1, 1, 16, 16)
    c_in = 1 / np.sqrt(sigma**2 + cfg.sigma_data**2)
    torch.testing.assert_close(seen[0][:, 1], x[:, 1])  # the guide, untouched
    torch.testing.assert_close(seen[0][:, 0], x[:, 0] * c_in)  # the target, scaled


def test_inference_independent_of_batch_size_and_deterministic(phantom: np.ndarray) -> None:
    torch.manual_seed(2)
    m = Precond(SMALL).eval()
    x = phantom.astype(np.float32)
    a = net_units(m, x, 0.05, batch_size=1)
    b = net_units(m, x, 0.05, batch_size=7)  # 7 does not divide 16 slices, and crosses the slab-cache chunks
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(b, net_units(m, x, 0.05, batch_size=7))  # deterministic
    assert np.abs(a - x).max() > 1e-3  # the network changed something
    # image units through the VST domain: the same invariance, and 40 slices cross the 32-slice normalisation chunk
    data = np.concatenate([x, x[:, :, ::-1], x[:, :, :8]], axis=2) * 1000 + 20
    one = denoise_array(m, data, 20.0, batch_size=1)
    np.testing.assert_allclose(denoise_array(m, data, 20.0, batch_size=5), one, atol=1e-3, rtol=1e-5)
    np.testing.assert_allclose(denoise_array(m, data, 20.0, batch_size=33), one, atol=1e-3, rtol=1e-5)


def test_zeros_and_saturation_pass_through(phantom: np.ndarray) -> None:
    torch.manual_seed(3)
    m = Precond(SMALL).eval()
    data = phantom * 1000 + 50
    data[:5] = 0.0
    data[10:12, 10:12] = data.max()  # saturated plateau (16 × 2 × 2 = 64 voxels > 10)
    out = denoise_array(m, data, 20.0)
    assert np.all(out[:5] == 0)
    np.testing.assert_array_equal(out[10:12, 10:12], data[10:12, 10:12])
    assert np.all(np.isfinite(out))


def test_attention_variant_runs() -> None:
    m = Precond(ModelConfig(channels=(8, 16), emb_dim=16, attention=True, attention_heads=2))
    y = m(torch.rand(1, 3, 16, 16), torch.tensor([0.3]))
    assert y.shape == (1, 1, 16, 16)
    assert torch.isfinite(y).all()


def test_pixel_unshuffle_variant_any_size_and_identity_limit() -> None:
    """unshuffle = 2 runs the U-Net on 2×2 sub-images: any H, W still works and σ → 0 still gives the centre slice."""
    torch.manual_seed(4)
    m = Precond(ModelConfig(channels=(8, 16), emb_dim=16, unshuffle=2)).eval()
    assert m.net.multiple == 4
    for h, w in [(32, 32), (37, 50), (5, 9)]:
        x = torch.rand(2, 3, h, w)
        assert m(x, torch.tensor([0.1, 0.2])).shape == (2, 1, h, w)
        torch.testing.assert_close(m(x, torch.full((2,), 1e-4)), x[:, 1:2], atol=1e-3, rtol=0)


def test_dihedral_transforms_invert_on_non_square_slices() -> None:
    from c2s_cli.infer import _dihedral

    x = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    seen = set()
    for t in range(8):
        y = _dihedral(x, t)
        assert y.shape == ((2, 3, 7, 5) if t & 4 else (2, 3, 5, 7))
        np.testing.assert_array_equal(_dihedral(y, t, inverse=True), x)
        seen.add(y.tobytes())
    assert len(seen) == 8  # eight distinct transforms


def test_tta_is_the_mean_over_transformed_volumes(phantom: np.ndarray) -> None:
    """--tta N equals averaging N separate runs on flipped / transposed copies of the volume, each mapped back."""
    from c2s_cli.infer import _dihedral

    torch.manual_seed(4)
    m = Precond(SMALL).eval()
    x = phantom[:, :40].astype(np.float32)  # non-square slices (96 × 40)
    plain = net_units(m, x, 0.1, batch_size=3)
    np.testing.assert_allclose(net_units(m, x, 0.1, batch_size=3, tta=1), plain, atol=0)
    for n in (2, 8):
        manual = np.zeros_like(x)
        for t in range(n):
            xt = np.moveaxis(_dihedral(np.moveaxis(x, 2, 0), t), 0, 2)
            yt = net_units(m, np.ascontiguousarray(xt), 0.1, batch_size=3)
            manual += np.moveaxis(_dihedral(np.moveaxis(yt, 2, 0), t, inverse=True), 0, 2)
        manual /= n
        got = net_units(m, x, 0.1, batch_size=5, tta=n)
        np.testing.assert_allclose(got, manual, atol=1e-5)
        np.testing.assert_allclose(net_units(m, x, 0.1, batch_size=1, tta=n), got, atol=1e-5)  # batch-invariant
        assert np.abs(got - plain).max() > 1e-4  # a random network is not flip-equivariant: TTA changes the output
    with pytest.raises(ValueError, match="tta"):
        net_units(m, x, 0.1, tta=3)
    with pytest.raises(ValueError, match="tta"):
        denoise_array(m, x * 100 + 10, 2.0, tta=0)


def test_views_average_in_image_units(phantom: np.ndarray) -> None:
    """View aggregation: each plane's prediction goes through the (VST) inverse, and the views are averaged there."""
    torch.manual_seed(6)
    m = Precond(SMALL).eval()
    data = phantom[:40, :40].astype(np.float32) * 1000 + 30
    dom = NoiseDomain.fit(data, 25.0, use_vst=True)
    per_axis = [dom.inverse(net_units(m, dom.forward(data), dom.sigma_d, axes=(a,))) for a in (2, 0, 1)]
    expected = np.mean(per_axis, axis=0)
    got = denoise_frame(m, data, dom, axes=(2, 0, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    single = denoise_frame(m, data, dom, axes=(2,))
    assert np.abs(got - single).max() > 1e-2  # the other planes did contribute
    np.testing.assert_allclose(single, per_axis[0], rtol=1e-6, atol=1e-3)
    # TTA views are averaged in the same domain: tta=2 = the mean of the plain and the flipped image-unit estimates
    from c2s_cli.infer import _dihedral

    flipped = np.moveaxis(_dihedral(np.moveaxis(data, 2, 0), 1), 0, 2)
    flip_est = np.moveaxis(_dihedral(np.moveaxis(denoise_frame(m, np.ascontiguousarray(flipped), dom, passthrough=False),
                                                 2, 0), 1, inverse=True), 0, 2)
    tta2 = denoise_frame(m, data, dom, tta=2, passthrough=False)
    np.testing.assert_allclose(tta2, (denoise_frame(m, data, dom, passthrough=False) + flip_est) / 2, rtol=1e-5, atol=1e-3)


def test_normalised_slab_is_bounded_in_bytes_and_each_slice_normalised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slices normalised at a time are about 32 of 256² whatever the slice size (8 of 512², plus the context),
    and each slice is normalised once, not once per neighbour: both measured on NoiseDomain.forward's calls."""
    torch.manual_seed(6)
    m = Precond(ModelConfig(channels=(4, 8), emb_dim=8, context=2)).eval()
    calls: list[int] = []
    real = NoiseDomain.forward

    def spy(self: NoiseDomain, data: np.ndarray, sigma: object = None) -> np.ndarray:
        calls.append(int(np.shape(data)[0]))
        return real(self, data, sigma)  # type: ignore[arg-type]

    monkeypatch.setattr(NoiseDomain, "forward", spy)
    rng = np.random.default_rng(0)
    data = np.abs(100 + 10 * rng.standard_normal((40, 512, 512))).astype(np.float32)  # slices along axis 0
    denoise_frame(m, data, NoiseDomain(10.0, 200.0, True), axes=(0,))
    assert max(calls) <= 32 * 256 * 256 // (512 * 512) + 2 * 2  # 8 slices of 512² and their ± 2 neighbours
    assert sum(calls) <= 40 + len(calls) * 2 * 2  # each slice once, plus the neighbours shared at slab edges
    assert len(calls) >= 40 // 12  # and the volume went through in several slabs
