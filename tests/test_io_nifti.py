from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from c2s_cli.errors import InputError
from c2s_cli.io import read_volume
from c2s_cli.io.nifti import write_nifti


def test_round_trip_keeps_header(noisy_nifti: Path, tmp_path: Path) -> None:
    vol, _ = read_volume(noisy_nifti)
    assert vol.data.dtype == np.float32 and vol.data.shape == (96, 96, 16)
    out = tmp_path / "out.nii.gz"
    write_nifti(vol, vol.data * 0.5, out)
    a, b = nib.load(str(noisy_nifti)), nib.load(str(out))
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    assert int(b.header["sform_code"]) == 4 and int(b.header["qform_code"]) == 1
    np.testing.assert_allclose(b.header.get_zooms(), a.header.get_zooms())
    assert b.header.get_xyzt_units() == ("mm", "sec")
    assert b.header.get_dim_info() == (0, 1, 2)
    assert b.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(b.dataobj), vol.data * 0.5, rtol=1e-6)
    assert b"c2s" in b.header["descrip"].item()


def test_dtype_input_rounds_and_clips(noisy_nifti: Path, tmp_path: Path) -> None:
    vol, _ = read_volume(noisy_nifti)
    data = vol.data.copy()
    data[0, 0, 0] = 1e6  # beyond int16
    out = tmp_path / "out.nii"
    clipped = write_nifti(vol, data + 0.4, out, dtype="input")
    img = nib.load(str(out))
    assert clipped == 1
    assert img.get_data_dtype() == np.int16
    slope, inter = img.header.get_slope_inter()
    assert slope in (None, 1.0) and inter in (None, 0.0)
    raw = np.asarray(img.dataobj)
    assert raw[0, 0, 0] == 32767
    np.testing.assert_array_equal(raw[1:], np.rint(vol.data[1:] + 0.4).astype(np.int16))


def test_4d_and_nifti2(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((8, 9, 10, 3)).astype(np.float32)
    img = nib.Nifti2Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.5  # TR
    p = tmp_path / "four.nii"
    nib.save(img, str(p))
    vol, _ = read_volume(p)
    assert vol.data.shape == (8, 9, 10, 3)
    out = tmp_path / "four_out.nii.gz"
    write_nifti(vol, vol.data, out)
    back = nib.load(str(out))
    assert isinstance(back, nib.Nifti2Image)
    assert back.shape == (8, 9, 10, 3)
    assert back.header.get_zooms()[3] == pytest.approx(2.5)
    np.testing.assert_allclose(np.asarray(back.dataobj), data)


def test_refuses_2d_and_complex(tmp_path: Path) -> None:
    p2 = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(p2))
    with pytest.raises(InputError, match="3D or 4D"):
        read_volume(p2)
    pc = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.complex64), np.eye(4)), str(pc))
    with pytest.raises(InputError, match="complex"):
        read_volume(pc)


def test_truncated_file_is_refused(noisy_nifti: Path, tmp_path: Path) -> None:
    raw = noisy_nifti.read_bytes()
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="trunc.nii.gz"):
        read_volume(bad)


def test_parallel_gzip_output_equals_nibabel_serial(noisy_nifti: Path, tmp_path: Path) -> None:
    """c2s compresses .nii.gz on several threads: the uncompressed bytes are exactly those nibabel would write."""
    import gzip

    vol, _ = read_volume(noisy_nifti)
    par, ser = tmp_path / "par.nii.gz", tmp_path / "ser.nii"
    write_nifti(vol, vol.data * 0.5, par, threads=2)
    write_nifti(vol, vol.data * 0.5, ser)  # .nii: written by nib.save
    assert gzip.decompress(par.read_bytes()) == ser.read_bytes()
    np.testing.assert_array_equal(np.asarray(nib.load(str(par)).dataobj), np.asarray(nib.load(str(ser)).dataobj))


def test_dtype_input_keeps_precision_of_scaled_integers(tmp_path: Path) -> None:
    """A quantitative-map-like int16 volume with scl_slope 0.001: --dtype input must not quantise the output to the
    input's 0.001 steps, let alone to {0, 1, 2} (issue 18)."""
    from c2s_cli.io.nifti import read_nifti, write_nifti

    rng = np.random.default_rng(0)
    values = rng.uniform(0.2, 2.5, (16, 16, 4)).astype(np.float32)  # e.g. T2* in s, or a fraction map
    img = nib.Nifti1Image(np.rint(values / 0.001).astype(np.int16), np.eye(4))
    img.header.set_slope_inter(0.001, 0.0)
    src = tmp_path / "qmap.nii.gz"
    nib.save(img, str(src))
    vol = read_nifti(src)
    denoised = vol.data + np.float32(0.0004)  # a change smaller than the input's step
    out = tmp_path / "o.nii.gz"
    assert write_nifti(vol, denoised, out, dtype="input") == 0
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.int16
    got = np.asarray(back.dataobj, dtype=np.float64)
    step = (denoised.max() - denoised.min()) / 65535
    assert np.abs(got - denoised).max() <= step  # full int16 resolution over the output range
    assert np.abs(got / 0.001 - np.rint(got / 0.001)).max() > 0.2  # not quantised to the input's 0.001 steps
