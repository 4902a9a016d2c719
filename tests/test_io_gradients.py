"""Gradient tables: FSL sidecars and the diffusion attributes of DICOM series (standard, Siemens, Siemens CSA, GE,
Philips), read from the first header of each volume."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest

from c2s_bench.phantoms import make_series
from c2s_cli.errors import InputError
from c2s_cli.io import read_volume
from c2s_cli.io.gradients import dicom_gradient_table, read_gradient_table

NIBABEL_DWI = Path(__import__("nibabel").__file__).parent / "nicom" / "tests" / "data"
BVALS = [0.0, 1000.0, 1000.0, 2000.0]
BVECS = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, -1.0, 0.0]]


def _siemens_mosaics(folder: Path) -> Path:
    """nibabel's two real Siemens DWI mosaics (b 0 and b 1000 of one series, MIT licence; real headers, their pixel
    data blanked to zeros) decompressed into ``folder``."""
    names = ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz")
    if not all((NIBABEL_DWI / n).is_file() for n in names):
        pytest.skip("nibabel's test data (real Siemens DWI mosaics) are not installed")
    folder.mkdir()
    for n in names:
        (folder / n[:-3]).write_bytes(gzip.decompress((NIBABEL_DWI / n).read_bytes()))
    return folder


def test_real_siemens_mosaics(tmp_path: Path) -> None:
    """Real Siemens DWI headers: 2 mosaic volumes; b-values and direction from (0019,100C/E), and the same from
    the CSA header when those elements are gone (older software writes them only there)."""
    folder = _siemens_mosaics(tmp_path / "s")
    vol, _ = read_volume(folder)
    assert vol.data.ndim == 4 and vol.data.shape[3] == 2
    bvals, bvecs, source = dicom_gradient_table(vol.source, 2)
    np.testing.assert_array_equal(bvals, [0.0, 1000.0])
    np.testing.assert_allclose(bvecs, [[0, 0, 0], [0.99997449, 0.00505012, -0.00505012]], atol=1e-7)
    assert source == "Siemens (0019,100C) / (0019,100E)"
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        for e in (0x0019100C, 0x0019100E):
            if e in ds:
                del ds[e]
        ds.save_as(p)
    vol, _ = read_volume(folder)
    bvals, bvecs, source = dicom_gradient_table(vol.source, 2)
    np.testing.assert_array_equal(bvals, [0.0, 1000.0])
    np.testing.assert_allclose(bvecs[1], [0.99997449, 0.00505012, -0.00505012], atol=1e-7)
    assert source == "Siemens CSA header"


def _tag_standard(ds: pydicom.Dataset, t: int) -> None:
    ds.add_new(0x00189087, "FD", BVALS[t])
    ds.add_new(0x00189089, "FD", BVECS[t])


def _tag_siemens(ds: pydicom.Dataset, t: int) -> None:
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", str(int(BVALS[t])))
    if BVALS[t] > 0:
        block.add_new(0x0E, "FD", BVECS[t])


def _tag_ge(ds: pydicom.Dataset, t: int) -> None:
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [int(BVALS[t]) + 1_000_000_000, 8, 0, 0])
    acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    for e, v in zip((0xBB, 0xBC, 0xBD), BVECS[t]):
        acq.add_new(e, "DS", str(v))


def _tag_philips(ds: pydicom.Dataset, t: int) -> None:
    ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", BVALS[t])
    mr = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    for e, v in zip((0xB0, 0xB1, 0xB2), BVECS[t]):
        mr.add_new(e, "FL", v)


def _dwi_series(folder: Path, phantom: np.ndarray, tag) -> Path:  # type: ignore[no-untyped-def]
    """A classic 4-volume series (InstanceNumber tells the volumes apart, as for vendors' private diffusion tags)."""
    from pydicom.uid import generate_uid

    uid = generate_uid()
    for t in range(4):
        make_series(folder / f"v{t}", np.rint(phantom[:, :, :3] * (1000 - 200 * t)), series_uid=uid, shuffle_seed=t)
        for p in (folder / f"v{t}").iterdir():
            ds = pydicom.dcmread(p)
            ds.InstanceNumber = int(ds.InstanceNumber) + 100 * t
            if tag is not None:
                tag(ds, t)
            ds.save_as(p)
    return folder


@pytest.mark.parametrize("tag, source", [
    (_tag_standard, "DICOM DiffusionBValue / DiffusionGradientOrientation"),
    (_tag_siemens, "Siemens (0019,100C) / (0019,100E)"),
    (_tag_ge, "GE (0043,1039) / (0019,10BB-BD)"),
    (_tag_philips, "Philips (2001,1003) / (2005,10B0-B2)"),
])
def test_vendor_diffusion_tags(tag, source: str, tmp_path: Path, phantom: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Each vendor's place for the b-value and direction gives the table volume by volume, in the series' order
    (GE's 10⁹ offset removed; a b = 0 volume without a direction gets the zero vector)."""
    vol, _ = read_volume(_dwi_series(tmp_path / "s", phantom, tag))
    assert vol.data.shape[3] == 4
    bvals, bvecs, got = dicom_gradient_table(vol.source, 4)
    np.testing.assert_allclose(bvals, BVALS)
    np.testing.assert_allclose(bvecs, BVECS, atol=1e-6)
    assert got == source


def test_not_a_diffusion_series(tmp_path: Path, phantom: np.ndarray) -> None:
    vol, _ = read_volume(_dwi_series(tmp_path / "s", phantom, None))
    assert vol.data.shape[3] == 4 and dicom_gradient_table(vol.source, 4) is None


def test_damaged_b_values_are_one_line_errors(tmp_path: Path, phantom: np.ndarray) -> None:
    def words(ds: pydicom.Dataset, t: int) -> None:
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "LO", "high")

    vol, _ = read_volume(_dwi_series(tmp_path / "a", phantom, words))
    with pytest.raises(InputError, match=r"b-value or direction \(Siemens .*\) is not numbers") as e:
        dicom_gradient_table(vol.source, 4)
    assert e.value.param == "bvals"

    def negative(ds: pydicom.Dataset, t: int) -> None:
        ds.add_new(0x00189087, "FD", -5.0 if t == 2 else BVALS[t])

    vol, _ = read_volume(_dwi_series(tmp_path / "b", phantom, negative))
    with pytest.raises(InputError, match="non-negative"):
        dicom_gradient_table(vol.source, 4)


def test_fsl_sidecars_either_layout(tmp_path: Path) -> None:
    """3 rows × T (FSL, dcm2niix) or T rows × 3: the same table; a count that is not one per volume is refused."""
    (tmp_path / "a.bval").write_text("0 1000 2000 1000\n")
    (tmp_path / "rows.bvec").write_text("0 1 0 0\n0 0 1 0.6\n0 0 0 0.8\n")
    (tmp_path / "cols.bvec").write_text("0 0 0\n1 0 0\n0 1 0\n0 0.6 0.8\n")
    for name in ("rows", "cols"):
        b, g = read_gradient_table(tmp_path / "a.bval", tmp_path / f"{name}.bvec", 4)
        np.testing.assert_array_equal(b, [0, 1000, 2000, 1000])
        np.testing.assert_array_equal(g, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]])
    with pytest.raises(InputError, match="one per volume"):
        read_gradient_table(tmp_path / "a.bval", tmp_path / "rows.bvec", 5)


def test_a_b0_without_direction_may_be_nan(tmp_path: Path) -> None:
    """dipy's small_64D writes NaN as the b = 0 volume's direction: that is the zero vector; NaN for a
    diffusion-weighted volume is refused, naming the volume."""
    (tmp_path / "a.bval").write_text("0 1000 1000 1000\n")
    (tmp_path / "ok.bvec").write_text("nan 1 0 0\nnan 0 1 0\nnan 0 0 1\n")
    (tmp_path / "bad.bvec").write_text("0 nan 0 0\n0 nan 1 0\n0 nan 0 1\n")
    b, g = read_gradient_table(tmp_path / "a.bval", tmp_path / "ok.bvec", 4)
    np.testing.assert_array_equal(g, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(InputError, match="volume 1") as exc:
        read_gradient_table(tmp_path / "a.bval", tmp_path / "bad.bvec", 4)
    assert exc.value.param == "bvecs"
