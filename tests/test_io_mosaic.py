"""Siemens mosaic DICOM (issue 18): detection, exact unpacking, geometry as dcm2niix computes it, derived mosaics."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import c2s
from c2s_cli.io import read_volume
from c2s_cli.io.mosaic import mosaic_of, pack, unpack

MOSAIC = Path(__file__).parent / "data" / "siemens_pasl_mosaic"


def test_real_mosaic_series_is_a_4d_volume() -> None:
    vol, _ = read_volume(MOSAIC)
    assert vol.data.shape == (72, 72, 20, 2)
    assert vol.meta["layout"] == "mosaic" and vol.meta["volumes"] == 2 and vol.meta["volumes_by"] == "AcquisitionNumber"
    assert vol.spacing == pytest.approx((3.0, 3.0, 6.0), abs=1e-4)
    one, _ = read_volume(MOSAIC / "pasl_0001.dcm")  # one file: one 3-D volume
    assert one.data.shape == (72, 72, 20)
    np.testing.assert_array_equal(one.data, vol.data[..., 0])
    # each volume is its tiles: slice k of the volume is tile (k // 5, k % 5) of the 360 × 360 mosaic
    raw = pydicom.dcmread(MOSAIC / "pasl_0001.dcm").pixel_array
    np.testing.assert_array_equal(one.data[:, :, 7], raw[72:144, 144:216].T)


def test_unpacking_known_content_is_exact(tmp_path: Path) -> None:
    """A mosaic of known content (the real file's header, synthetic pixels) unpacks to exactly the known volume, and
    packing it back gives the mosaic (unused tiles zero)."""
    ds = pydicom.dcmread(MOSAIC / "pasl_0001.dcm")
    m = mosaic_of(ds)
    assert m is not None and (m.n, m.grid, m.rows, m.cols) == (20, 5, 72, 72)
    known = np.random.default_rng(0).integers(1, 4000, (72, 72, 20)).astype(np.float32)
    mosaic = pack(known, m)
    assert mosaic.shape == (360, 360) and np.all(mosaic[288:, 288:] == 0)  # 25 tiles, 20 used
    np.testing.assert_array_equal(unpack(mosaic, m), known)
    ds.PixelData = mosaic.astype(np.uint16).tobytes()
    folder = tmp_path / "m"
    folder.mkdir()
    ds.save_as(folder / "x.dcm")
    vol, _ = read_volume(folder)
    np.testing.assert_array_equal(vol.data, known)


def test_mosaic_geometry_matches_dcm2niix(tmp_path: Path) -> None:
    tool = shutil.which("dcm2niix")
    if tool is None:
        pytest.skip("dcm2niix not installed")
    subprocess.run([tool, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(MOSAIC)], capture_output=True, check=True)
    ref = nib.load(str(tmp_path / "ref.nii"))
    vol, _ = read_volume(MOSAIC)
    assert ref.shape == vol.data.shape
    data = ref.get_fdata()
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    back = nib.affines.apply_affine(np.linalg.inv(vol.affine), nib.affines.apply_affine(ref.affine, ijk))
    assert np.abs(back - np.rint(back)).max() < 1e-3  # voxel centres coincide (< 1e-3 voxel)
    b = np.rint(back).astype(int)
    for t in range(2):  # dcm2niix flips the rows; through world coordinates every voxel agrees
        np.testing.assert_array_equal(data[..., t].reshape(-1), vol.data[b[:, 0], b[:, 1], b[:, 2], t])


def test_denoise_mosaic_to_nifti_and_to_derived_mosaics(tiny_model: Path, tmp_path: Path) -> None:
    r = c2s("denoise", str(MOSAIC), "-o", str(tmp_path / "asl.nii.gz"), "--model", str(tiny_model), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert len(rec["noise"]) == 2  # each volume its own noise estimate
    img = nib.load(str(tmp_path / "asl.nii.gz"))
    vol, _ = read_volume(MOSAIC)
    assert img.shape == (72, 72, 20, 2)
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
    out = tmp_path / "asl_c2s"
    r = c2s("denoise", str(MOSAIC), "-o", str(out), "--model", str(tiny_model))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pasl_0001.dcm", "pasl_0051.dcm"]  # one derived mosaic per input file
    for name in names:
        src, der = pydicom.dcmread(MOSAIC / name), pydicom.dcmread(out / name)
        assert (der.Rows, der.Columns) == (src.Rows, src.Columns) and "MOSAIC" in der.ImageType
        assert der.ImageType[0] == "DERIVED" and der.ImagePositionPatient == src.ImagePositionPatient
        assert der[0x0029, 0x1010].value == src[0x0029, 0x1010].value  # the CSA header travels with the mosaic
    back, _ = read_volume(out)
    assert back.data.shape == (72, 72, 20, 2) and back.meta["layout"] == "mosaic"
    np.testing.assert_allclose(back.data, np.asarray(img.dataobj), atol=0.5 + 1e-3)  # the same pixels, rounded
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
