from __future__ import annotations

import numpy as np
import pytest
import torch

from c2s_cli.config import ModelConfig
from c2s_cli.infer import denoise_array, denoise_normalized
from c2s_cli.model import Precond

SMALL = ModelConfig(channels=(8, 16, 16), emb_dim=16)


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
    cfg = ModelConfig(channels=(8, 16), emb_dim=16, guides=1, context=0)
    m = Precond(cfg).eval()
    assert cfg.in_channels == 2
    y = m(torch.rand(1, 2, 16, 16), torch.tensor([0.1]))
    assert y.shape == (1, 1, 16, 16)


def test_inference_independent_of_batch_size_and_deterministic(phantom: np.ndarray) -> None:
    torch.manual_seed(2)
    m = Precond(SMALL).eval()
    x = phantom.astype(np.float32)
    a = denoise_normalized(m, x, 0.05, batch_size=1)
    b = denoise_normalized(m, x, 0.05, batch_size=7)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, denoise_normalized(m, x, 0.05, batch_size=7), atol=1e-6)


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
    with pytest.raises(AssertionError):
        assert torch.isnan(y).any()


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
    plain = denoise_normalized(m, x, 0.1, batch_size=3)
    np.testing.assert_allclose(denoise_normalized(m, x, 0.1, batch_size=3, tta=1), plain, atol=0)
    for n in (2, 8):
        manual = np.zeros_like(x)
        for t in range(n):
            xt = np.moveaxis(_dihedral(np.moveaxis(x, 2, 0), t), 0, 2)
            yt = denoise_normalized(m, np.ascontiguousarray(xt), 0.1, batch_size=3)
            manual += np.moveaxis(_dihedral(np.moveaxis(yt, 2, 0), t, inverse=True), 0, 2)
        manual /= n
        got = denoise_normalized(m, x, 0.1, batch_size=5, tta=n)
        np.testing.assert_allclose(got, manual, atol=1e-5)
        assert np.abs(got - plain).max() > 1e-4  # a random network is not flip-equivariant: TTA changes the output
    with pytest.raises(ValueError, match="tta"):
        denoise_normalized(m, x, 0.1, tta=3)
    with pytest.raises(ValueError, match="tta"):
        denoise_array(m, x * 100 + 10, 2.0, tta=0)
