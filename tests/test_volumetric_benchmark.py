"""c2s_bench.volumetric (the experiment) and c2s_bench.models.volumetric (its network): the 3-D candidate inflated from the 2.5-D network (issue 20).

Properties: before training, the inflated network equals the 2.5-D one slice by slice (whichever levels get
through-plane taps, for a random untrained network and random through-plane edges); the GDSM loss on 3-D blocks is
the equation on every voxel, zero outside the mask, its noise from the generator; the block sampler's masks cover
exactly the voxels it copied; the tail of a slab-wise denoise equals a single pass; a tiny run writes a c2s model
file through c2s train's pre-flight.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from c2s_cli.config import PLANES, GDSMConfig, ModelConfig
from c2s_cli.data import make_train_volume
from c2s_cli.infer import denoise_network_units
from c2s_cli.losses import GDSMLoss
from c2s_cli.model import Precond
from c2s_cli.noise.domain import NoiseDomain

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vol():  # type: ignore[no-untyped-def]
    import c2s_bench.volumetric

    return c2s_bench.volumetric


def _net(context: int = 2) -> Precond:
    torch.manual_seed(0)
    net = Precond(ModelConfig(context=context, channels=(8, 16, 16), emb_dim=16)).eval()
    with torch.no_grad():  # FiLM starts at zero; give it weight so that the embedding's path is checked too
        for m in net.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features != m.in_features:
                m.weight.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("z_levels", [(), (2,), (0, 1, 2)])
@pytest.mark.parametrize("context", [1, 2])
def test_inflated_network_equals_the_2p5d_network_slice_by_slice(vol, z_levels, context) -> None:  # type: ignore[no-untyped-def]
    net = _net(context)
    rng = np.random.default_rng(1)
    x = (0.4 + 0.2 * rng.standard_normal((20, 27, 9))).astype(np.float32)  # odd sizes: the in-plane padding path
    want = denoise_network_units(net, x, 0.1, slice_axis=2)
    net3 = vol.Precond3D(net, z_levels).eval()
    with torch.no_grad():
        got = net3(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 2, 0)))[None, None], torch.tensor([0.1]))
    got = np.moveaxis(got[0, 0].numpy(), 0, 2)
    assert np.abs(got - want).max() < 1e-5 * np.abs(want).max()
    # and the through-plane taps it adds are there and zero
    taps = [m.weight for m in net3.modules()
            if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] == 3 and m is not net3.net.first]
    # level i: its down block's convolutions (level 0's first is the slice-mixing one) and its up block's (none at
    # the bottom, level 2 of these three)
    assert len(taps) == sum((1 if i == 0 else 2) + (2 if i < 2 else 0) for i in z_levels)
    assert all(float(t[:, :, [0, 2]].abs().max()) == 0 for t in taps)


def test_a_trained_through_plane_tap_changes_the_output(vol) -> None:  # type: ignore[no-untyped-def]
    """The check above is not vacuous: once a through-plane tap is non-zero the 3-D output leaves the 2.5-D one."""
    net3 = vol.Precond3D(_net(), (2,)).eval()
    x = torch.rand(1, 1, 9, 16, 16)
    with torch.no_grad():
        before = net3(x, torch.tensor([0.1]))
        conv = next(m for m in net3.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] == 3)
        conv.weight[:, :, 0] += 1.0
        after = net3(x, torch.tensor([0.1]))
    assert float((after - before).abs().max()) > 1e-4


def test_gdsm_loss_on_3d_blocks_is_the_equation_on_every_voxel(vol) -> None:  # type: ignore[no-untyped-def]
    """c2s_cli.losses.GDSMLoss on (B, 1, D, H, W) blocks: the paper's loss with every voxel re-corrupted and every voxel
    a target, computed by hand from the same draws; zero outside the mask; the noise comes from the generator."""
    net3 = vol.Precond3D(_net(), (2,)).eval()
    y = torch.rand(2, 1, 6, 16, 16)
    mask = torch.zeros_like(y)
    mask[:, :, 1:5, 2:14, 2:14] = 1
    sd = torch.tensor([0.05, 0.1])
    cfg = GDSMConfig(tau_max=2.0)
    loss = GDSMLoss(cfg)
    with torch.no_grad():
        a = loss(net3, y, sd, mask, generator=torch.Generator().manual_seed(3))
        b = loss(net3, y, sd, mask, generator=torch.Generator().manual_seed(3))
        c = loss(net3, y, sd, mask, generator=torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(3)
        s = sd.reshape(2, 1, 1, 1, 1)
        tau = (1.0 - torch.rand((2, 1, 1, 1, 1), generator=g)) * 2.0 * s
        x_t = y + tau * torch.randn(y.shape, generator=g)
        gamma = tau**2 / (tau**2 + s**2)
        want = (tau**2 + s**2) ** -1.0 / gamma * mask * (
            gamma * net3(x_t, torch.sqrt(s**2 + tau**2).reshape(2)) + (1 - gamma) * x_t - y) ** 2
    assert a.shape == y.shape
    torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-7)
    assert float(a[mask == 0].abs().max()) == 0 and float(a.sum()) > 0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_block_sampler_masks_cover_what_it_copied(vol) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    x = (0.5 + 0.1 * rng.standard_normal((20, 24, 10))).astype(np.float32)
    x[:3] = 0  # exact zeros are not valid voxels
    tv = make_train_volume(x, NoiseDomain.identity(0.05), slice_axis=2, planes=PLANES, name="v")
    s = vol.BlockSampler([tv], depth=16, patch=32, invert=0.5)
    y, sd, m = s.sample(8, torch.Generator().manual_seed(0))
    assert y.shape == (8, 1, 16, 32, 32) and m.shape == y.shape and sd.shape == (8,)
    assert float(y[m == 0].abs().max()) == 0  # nothing outside the copied block (or the zeroed voxels)
    assert all(float(m[b].sum()) > 0.05 * m[b].numel() for b in range(8))  # every block holds data
    assert float(sd.min()) >= 0.05 * 0.75 and float(sd.max()) <= 0.05 * 1.25  # the gain scales the noise level


def test_slabwise_denoise_equals_one_pass_when_the_halo_covers_the_receptive_field(vol) -> None:  # type: ignore[no-untyped-def]
    net3 = vol.Precond3D(_net(context=1), (2,)).eval()
    rng = np.random.default_rng(4)
    x = np.abs(1.0 + 0.1 * rng.standard_normal((24, 24, 40))).astype(np.float32)
    one = vol.denoise3d(net3, x, slab=64)
    slabs = vol.denoise3d(net3, x, slab=8)  # halo 16 > the through-plane reach (1 + 2 + 2 slices)
    assert np.abs(one - slabs).max() < 1e-5 * np.abs(one).max()


@pytest.mark.parametrize("kz", [1, 3, 5])
def test_conv_slices_is_the_z_replicate_padded_3d_convolution(vol, kz) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(kz)
    conv = torch.nn.Conv3d(4, 6, (kz, 3, 3), padding=(0, 1, 1))
    x = torch.randn(2, 4, 7, 10, 12)  # (B, C, D, H, W)
    r = kz // 2
    want = conv(torch.nn.functional.pad(x, (0, 0, 0, 0, r, r), mode="replicate") if r else x)
    slices = x.permute(0, 2, 1, 3, 4).reshape(14, 4, 10, 12)  # (B·D, C, H, W)
    got = vol.conv_slices(conv, slices, 7).reshape(2, 7, 6, 10, 12).permute(0, 2, 1, 3, 4)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_tiny_run_writes_a_c2s_model_file_and_refuses_unsafe_outputs(vol, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib

    from c2s_cli.checkpoint import read_header

    rng = np.random.default_rng(0)
    x = np.zeros((40, 40, 24), np.float32)
    x[8:32, 8:32, :] = 400.0
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.abs(x + 20 * rng.standard_normal(x.shape)).astype(np.float32), np.eye(4)), str(src))
    out = tmp_path / "cand.safetensors"
    argv = ["volumetric.py", "train", str(src), "-o", str(out), "--z-levels", "0", "--steps", "2", "--depth", "8",
            "--patch", "32", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    vol.main()
    meta, _ = read_header(out)
    assert meta["format"] == "c2s-model" and json.loads(meta["volumetric"])["z_levels"] == [0]
    net3 = vol.load_candidate(out)
    assert net3.net.z_levels == (0,)
    # the pre-flight of c2s train: an existing output only with --force, never an input
    before = out.read_bytes()
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="exists"):
        vol.main()
    assert out.read_bytes() == before
    src_bytes = src.read_bytes()
    monkeypatch.setattr(sys, "argv", [*argv[:4], str(src), *argv[5:], "--force"])
    with pytest.raises(SystemExit):
        vol.main()
    assert src.read_bytes() == src_bytes
