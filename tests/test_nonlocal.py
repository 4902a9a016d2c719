"""The non-local-means channel (c2s_cli.model.nonlocal_means) and a model that reads it (ModelConfig.nonlocal_radius)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from c2s_cli.config import ModelConfig
from c2s_cli.model import Precond
from c2s_cli.model.nonlocal_means import nl_reach, nonlocal_means, nonlocal_means_centre, nonlocal_means_volume
from c2s_cli.model.precond import with_nonlocal

SMALL = ModelConfig(channels=(8, 16, 16), emb_dim=16)


def blocks(h: int = 32, w: int = 32) -> torch.Tensor:
    """A piecewise-constant slice: four flat rectangles (values 0.2 … 0.8)."""
    x = torch.full((h, w), 0.2)
    x[: h // 2, w // 2 :] = 0.5
    x[h // 2 :, : w // 3] = 0.8
    x[h // 2 :, w // 3 :] = 0.35
    return x


def test_flat_slices_stay_flat_and_output_is_a_convex_combination() -> None:
    flat = torch.full((2, 3, 20, 24), 0.37)
    torch.testing.assert_close(nonlocal_means(flat, 1, torch.tensor([0.05, 0.1]), 2), flat[:, 1:2])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g)
    out = nonlocal_means(x, 1, torch.tensor([0.05, 0.2]), 2)
    assert out.shape == (2, 1, 20, 24) and out.dtype == torch.float32
    # a weighted mean of the searched pixels (centre slice and its neighbours): never outside their range
    assert (out >= x.amin(dim=(1, 2, 3), keepdim=True) - 1e-6).all()
    assert (out <= x.amax(dim=(1, 2, 3), keepdim=True) + 1e-6).all()


def test_it_removes_most_of_the_noise_on_flat_regions_and_keeps_edges() -> None:
    clean = blocks().expand(3, -1, -1)[None].clone()  # 3 identical slices
    g = torch.Generator().manual_seed(1)
    sigma = 0.05
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    out = nonlocal_means(noisy, 1, torch.tensor([sigma]), 3)[0, 0]
    err_noisy = (noisy[0, 1] - clean[0, 1]).pow(2).mean()
    err = (out - clean[0, 1]).pow(2).mean()
    assert err < err_noisy / 4  # 147 candidates, most of them of the same flat region
    # the 0.35 → 0.8 edge (0.45, nine σ) survives: the two sides stay apart by more than 0.4
    row = out[24]
    assert row[: 32 // 3 - 2].mean() - row[32 // 3 + 2 :].mean() > 0.4


def test_batch_independent_deterministic_and_scale_covariant() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 5, 16, 18, generator=g)
    s = torch.tensor([0.05, 0.1, 0.2, 0.3])
    both = nonlocal_means(x, 2, s, 2)
    one = torch.cat([nonlocal_means(x[i : i + 1], 2, s[i : i + 1], 2) for i in range(4)])
    torch.testing.assert_close(both, one)
    torch.testing.assert_close(both, nonlocal_means(x, 2, s, 2), rtol=0, atol=0)
    # scaling the image and the noise std together scales the estimate (the weights depend on d / s² only)
    torch.testing.assert_close(nonlocal_means(3 * x, 2, 3 * s, 2), 3 * both, rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_refused() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="radius"):
        nonlocal_means(x, 1, torch.tensor([0.1]), 8)
    with pytest.raises(ValueError, match="centre"):
        nonlocal_means(x, 3, torch.tensor([0.1]), 2)
    with pytest.raises(ValueError, match="nonlocal_radius"):
        ModelConfig(nonlocal_radius=9).validate()


def test_a_model_with_the_channel_feeds_it_last_and_widening_changes_nothing_until_trained() -> None:
    torch.manual_seed(3)
    base = Precond(SMALL).eval()
    nl = with_nonlocal(base, 2).eval()
    assert nl.cfg.nonlocal_radius == 2 and nl.cfg.in_channels == SMALL.in_channels + 1
    x = torch.rand(2, 3, 24, 20)
    sigma = torch.tensor([0.1, 0.3])
    torch.testing.assert_close(nl(x, sigma), base(x, sigma), rtol=0, atol=1e-6)  # zero weights on the new channel
    seen: list[torch.Tensor] = []
    handle = nl.net.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    nl(x, sigma)
    handle.remove()
    c_in = (1 / torch.sqrt(sigma**2 + SMALL.sigma_data**2)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(seen[0][:, :3], c_in * x)
    want = nonlocal_means(c_in * x, 1, c_in.reshape(-1) * sigma, 2)  # of the scaled input, noise std c_in·σ
    torch.testing.assert_close(seen[0][:, 3:], want)
    with pytest.raises(ValueError, match="already"):
        with_nonlocal(nl, 2)


def test_the_channel_travels_through_a_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from c2s_cli.checkpoint import load_model, save_model
    from c2s_cli.config import RunConfig

    torch.manual_seed(4)
    nl = with_nonlocal(Precond(SMALL), 1)
    with torch.no_grad():
        nl.net.down[0].conv1.weight[:, -1].fill_(0.3)  # the channel now matters
    cfg = dataclasses.replace(RunConfig(), model=nl.cfg)
    save_model(tmp_path / "nl.safetensors", nl.state_dict(), cfg, {})
    back, back_cfg, _ = load_model(tmp_path / "nl.safetensors")
    assert back_cfg.model.nonlocal_radius == 1
    x, s = torch.rand(1, 3, 16, 16), torch.tensor([0.2])
    torch.testing.assert_close(back(x, s), nl.eval()(x, s))
    with torch.no_grad():
        nl.net.down[0].conv1.weight[:, -1].zero_()
    assert not np.allclose(back(x, s).detach().numpy(), nl(x, s).detach().numpy())  # the loaded weight is used


def _brute_volume(v: torch.Tensor, s: float, r: int, h: float) -> torch.Tensor:
    """The definition of nonlocal_means_volume, voxel by voxel: every offset of the (2r+1)² window in the slice and
    its neighbours (those that exist), 3×3 patches on the reflect-padded volume."""
    z, hh, ww = v.shape
    p = r + 1
    x = torch.nn.functional.pad(v[None], (p,) * 4, mode="reflect")[0].double()
    out = torch.empty(v.shape, dtype=torch.float64)
    for k in range(z):
        for i in range(hh):
            for j in range(ww):
                a = x[k, i + p - 1 : i + p + 2, j + p - 1 : j + p + 2]
                num = den = 0.0
                for dz in (-1, 0, 1):
                    if not 0 <= k + dz < z:
                        continue
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            b = x[k + dz, i + p + dy - 1 : i + p + dy + 2, j + p + dx - 1 : j + p + dx + 2]
                            d = float((a - b).pow(2).mean())
                            w = np.exp(-max(d - 2 * s * s, 0.0) / (h * h * s * s))
                            num += w * float(x[k + dz, i + p + dy, j + p + dx])
                            den += w
                out[k, i, j] = num / den
    return out.float()


@pytest.mark.parametrize("radius", [1, 2])
def test_the_volume_version_equals_its_definition_whatever_the_chunk(radius: int) -> None:
    g = torch.Generator().manual_seed(3)
    v = torch.rand(4, 9, 8, generator=g)
    want = _brute_volume(v, 0.3, radius, 1.0)
    for chunk in (1, 3, 8):
        torch.testing.assert_close(nonlocal_means_volume(v, 0.3, radius, 1.0, chunk=chunk), want, atol=1e-5, rtol=0)
    # and the slice version's weights: the centre slice of three, searched in all three (away from the borders,
    # where the slice version's patches are truncated instead of reflected)
    e = radius + 1
    torch.testing.assert_close(nonlocal_means_volume(v[:3], 0.3, radius, 0.8)[1, e:-e, e:-e],
                               nonlocal_means(v[None, :3], 1, torch.tensor([0.3]), radius)[0, 0, e:-e, e:-e],
                               atol=1e-5, rtol=0)


def _brute_volume_3d(v: torch.Tensor, s: float, r: int, h: float) -> torch.Tensor:
    """The definition of the 3×3×3-patch version, voxel by voxel: every offset of the (2r+1)² window in the slice
    and its two neighbours, 3×3×3 patches, on the volume reflect-padded in-plane and replicate-padded through-plane."""
    z, hh, ww = v.shape
    p = r + 1
    x = torch.nn.functional.pad(v[None], (p,) * 4, mode="reflect")[0].double()
    x = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]])
    out = torch.empty(v.shape, dtype=torch.float64)
    for k in range(z):
        for i in range(hh):
            for j in range(ww):
                kk, ii, jj = k + 2, i + p, j + p
                a = x[kk - 1 : kk + 2, ii - 1 : ii + 2, jj - 1 : jj + 2]
                num = den = 0.0
                for dz in (-1, 0, 1):
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            q = (kk + dz, ii + dy, jj + dx)
                            b = x[q[0] - 1 : q[0] + 2, q[1] - 1 : q[1] + 2, q[2] - 1 : q[2] + 2]
                            d = float((a - b).pow(2).mean())
                            w = np.exp(-max(d - 2 * s * s, 0.0) / (h * h * s * s))
                            num += w * float(x[q])
                            den += w
                out[k, i, j] = num / den
    return out.float()


@pytest.mark.parametrize("shape", [(5, 9, 8), (1, 7, 6), (2, 7, 7)])
def test_the_3d_patch_version_equals_its_definition_whatever_the_chunk(shape: tuple[int, int, int]) -> None:
    g = torch.Generator().manual_seed(4)
    v = torch.rand(*shape, generator=g)
    want = _brute_volume_3d(v, 0.3, 2, 1.0)
    for chunk in (1, 2, 8):
        torch.testing.assert_close(nonlocal_means_volume(v, 0.3, 2, 1.0, chunk=chunk, depth=3), want, atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("depth", [1, 3])
def test_the_one_slice_version_equals_the_volume_version(depth: int) -> None:
    g = torch.Generator().manual_seed(6)
    for z in (1, 2, 5):
        slabs = torch.rand(2, z, 11, 9, generator=g)
        for centre in range(z):
            want = torch.stack([nonlocal_means_volume(s, 0.3, 2, 1.0, depth=depth)[centre] for s in slabs])
            torch.testing.assert_close(nonlocal_means_centre(slabs, centre, 0.3, 2, 1.0, depth), want, atol=1e-6,
                                       rtol=0)
    for kwargs, name in (({"centre": 5}, "centre"), ({"depth": 2}, "depth"), ({"radius": 9}, "radius"),
                         ({"noise_std": 0.0}, "noise_std"), ({"slabs": slabs[0]}, "slabs")):
        args = {"slabs": slabs, "centre": 0, "noise_std": 0.3, "radius": 1, "h": 1.0, "depth": depth, **kwargs}
        with pytest.raises(ValueError, match=name):
            nonlocal_means_centre(**args)  # type: ignore[arg-type]


def test_a_slab_gives_the_volume_result_where_nl_reach_says() -> None:
    """infer's slabs rely on it: a slice's 3-D-patch estimate reads ±nl_reach(3) slices, no more."""
    g = torch.Generator().manual_seed(5)
    v = torch.rand(12, 10, 9, generator=g)
    whole = nonlocal_means_volume(v, 0.3, 2, 1.0, depth=3)
    reach = nl_reach(3)
    k = 6
    part = nonlocal_means_volume(v[k - reach : k + reach + 1], 0.3, 2, 1.0, depth=3)
    torch.testing.assert_close(part[reach], whole[k], atol=1e-6, rtol=0)
    short = nonlocal_means_volume(v[k - reach + 1 : k + reach], 0.3, 2, 1.0, depth=3)  # one slice too few
    assert not torch.allclose(short[reach - 1], whole[k], atol=1e-4)


def test_the_volume_version_refuses_what_it_cannot_take() -> None:
    v = torch.rand(3, 8, 8)
    for kwargs, name in (({"volume": v[0]}, "volume"), ({"noise_std": 0.0}, "noise_std"), ({"radius": 7}, "radius"),
                         ({"h": 0.0}, "h"), ({"depth": 2}, "depth")):
        args = {"volume": v, "noise_std": 0.1, "radius": 1, "h": 1.0, **kwargs}
        with pytest.raises(ValueError, match=name):
            nonlocal_means_volume(**args)  # type: ignore[arg-type]
