from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import make_series
from c2s_cli.errors import InputError
from c2s_cli.io import read_volume
from c2s_cli.io.dicom import list_series
from c2s_cli.io.dicom_write import write_dicom_series


def _world(ds: pydicom.Dataset, i: float, j: float) -> np.ndarray:
    """RAS world position of column i, row j of a DICOM image, from its own tags (LPS → RAS)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps = np.asarray(ds.ImagePositionPatient, float) + i * dc * iop[:3] + j * dr * iop[3:]
    return lps * np.array([-1, -1, 1])


def test_read_sorts_by_position_and_rescales(dicom_series: Path) -> None:
    vol, warnings = read_volume(dicom_series)
    assert warnings == []
    assert vol.data.shape == (96, 96, 16)
    files = [pydicom.dcmread(p) for p in sorted(dicom_series.iterdir())]
    for ds in files:
        # find the slice this file landed in by its world position
        target = _world(ds, 3, 5)
        k = int(np.argmin([np.linalg.norm(vol.affine @ [3, 5, kk, 1] - np.r_[target, 1]) for kk in range(16)]))
        np.testing.assert_allclose(vol.affine @ [3, 5, k, 1], np.r_[target, 1], atol=1e-4)
        np.testing.assert_allclose(vol.data[:, :, k], ds.pixel_array.T * 2.0 + 10.0)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 3.0), atol=1e-6)


def test_signed_series(tmp_path: Path, phantom: np.ndarray) -> None:
    stored = np.rint(phantom * 2000 - 500)
    make_series(tmp_path / "s", stored, signed=True, slope=0.5, intercept=-3)
    vol, _ = read_volume(tmp_path / "s")
    assert vol.data.min() < 0
    np.testing.assert_allclose(vol.data, stored * 0.5 - 3, atol=1e-4)


def test_written_series_is_derived_with_new_uids(dicom_series: Path, tmp_path: Path) -> None:
    vol, _ = read_volume(dicom_series)
    out = tmp_path / "out"
    out.mkdir()
    denoised = vol.data * 0.9 + 1.3
    clipped = write_dicom_series(vol, denoised, out, derivation="test derivation", software_version="c2s test")
    assert clipped == 0
    src = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in dicom_series.iterdir())}
    outs = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert len(outs) == len(src)
    series_uids = {str(d.SeriesInstanceUID) for d in outs}
    sops = [str(d.SOPInstanceUID) for d in outs]
    assert len(series_uids) == 1 and series_uids.isdisjoint({str(d.SeriesInstanceUID) for d in src.values()})
    assert len(set(sops)) == len(sops) and set(sops).isdisjoint(src)
    for d in outs:
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        ref = d.SourceImageSequence[0]
        s = src[str(ref.ReferencedSOPInstanceUID)]
        assert ref.ReferencedSOPClassUID == s.SOPClassUID
        assert list(d.ImageType) == ["DERIVED", "SECONDARY", "M", "ND"]
        for tag in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID",
                    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                    "InstanceNumber", "RescaleSlope", "RescaleIntercept", "BitsStored", "PixelRepresentation",
                    "WindowCenter", "WindowWidth", "RepetitionTime", "EchoTime"):
            assert d[tag].value == s[tag].value, tag
        assert d[0x00191010].value == "private-keep-me"
        assert d.SeriesNumber == s.SeriesNumber + 1000
        assert d.SeriesDescription == "T2 TSE test c2s"
        assert "test derivation" in d.DerivationDescription
        assert d.ContributingEquipmentSequence[0].Manufacturer == "c2s"
    back, _ = read_volume(out)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)
    # quantisation step of the stored values is RescaleSlope = 2
    assert np.max(np.abs(back.data - denoised)) <= 1.0 + 1e-4


def test_clipping_is_counted(dicom_series: Path, tmp_path: Path) -> None:
    vol, _ = read_volume(dicom_series)
    out = tmp_path / "o"
    out.mkdir()
    data = vol.data.copy()
    data[0, 0, 0] = -100.0  # below intercept 10 → stored < 0 for unsigned
    data[1, 1, 1] = 2 * 5000 + 10  # beyond 12 bits
    assert write_dicom_series(vol, data, out) == 2


def test_several_series_need_a_choice(tmp_path: Path, phantom: np.ndarray) -> None:
    stored = np.rint(phantom * 1000)
    make_series(tmp_path / "mix" / "a", stored, series_number=3)
    make_series(tmp_path / "mix" / "b", stored[:, :, :8], series_number=7)
    with pytest.raises(InputError, match="2 series found.*--series") as exc:
        read_volume(tmp_path / "mix")
    assert "#3" in str(exc.value) and "#7" in str(exc.value)
    vol, _ = read_volume(tmp_path / "mix", series="7")
    assert vol.data.shape[2] == 8
    infos, _ = list_series(tmp_path / "mix")
    assert [i.number for i in infos] == [3, 7]
    with pytest.raises(InputError, match="matches no series"):
        read_volume(tmp_path / "mix", series="99")


def test_gap_and_duplicates_are_refused(tmp_path: Path, phantom: np.ndarray) -> None:
    stored = np.rint(phantom[:, :, :5] * 1000)
    make_series(tmp_path / "gap", stored, positions=[0, 3, 6, 12, 15])
    with pytest.raises(InputError, match="spacing is not constant"):
        read_volume(tmp_path / "gap")
    make_series(tmp_path / "dup", stored, positions=[0, 3, 3, 6, 9])
    with pytest.raises(InputError, match="same slice position"):
        read_volume(tmp_path / "dup")


def test_non_images_and_junk_are_skipped(dicom_series: Path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = FileDataset("sr.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    sr.Modality = "SR"
    sr.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    sr.SOPClassUID = meta.MediaStorageSOPClassUID
    sr.save_as(dicom_series / "report.dcm", enforce_file_format=True)
    (dicom_series / "notes.txt").write_text("not dicom")
    vol, warnings = read_volume(dicom_series)
    assert vol.data.shape[2] == 16
    assert any("SR" in w for w in warnings) and any("not readable DICOM" in w for w in warnings)


def test_single_file_and_compressed(tmp_path: Path, phantom: np.ndarray) -> None:
    stored = np.rint(phantom[:, :, :1] * 1000)
    paths = make_series(tmp_path / "one", stored)
    vol, _ = read_volume(paths[0])
    assert vol.data.shape == (96, 96, 1)
    ds = pydicom.dcmread(paths[0])
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    vol2, w2 = read_volume(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(vol2.data, vol.data)
    assert vol2.meta["transfer_syntax"] == "RLE Lossless" and vol2.meta["lossy"] is False and not w2
    # a source that went through lossy compression earlier is flagged, and warned about once
    ds = pydicom.dcmread(paths[0])
    ds.LossyImageCompression = "01"
    ds.save_as(tmp_path / "lossy.dcm")
    vol3, w3 = read_volume(tmp_path / "lossy.dcm")
    assert vol3.meta["lossy"] is True and sum("lossy" in w for w in w3) == 1


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_any_source_syntax_is_written_as_explicit_little_endian(name: str, tmp_path: Path) -> None:
    """Big-endian and implicit-VR sources (pydicom's test files) give derived instances in Explicit VR Little Endian
    with the same header values and the new pixels (issue 18: big endian failed after the compute)."""
    from pydicom.data import get_testdata_file

    from c2s_cli.io import read_volume

    src = Path(get_testdata_file(name))
    vol, _ = read_volume(src)
    out = tmp_path / "o"
    out.mkdir()
    new = (vol.data * 0.5 + 7).astype(np.float32)
    write_dicom_series(vol, new, out)
    a, b = pydicom.dcmread(src), pydicom.dcmread(out / name)
    assert b.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    for tag in ("PatientName", "StudyInstanceUID", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns",
                "BitsStored", "PixelRepresentation"):
        assert b.get(tag) == a.get(tag), tag
    back, _ = read_volume(out / name)
    np.testing.assert_allclose(back.data, np.rint(new), atol=0.5 + 1e-3)


def _four_d(folder: Path, phantom: np.ndarray, n_vols: int, tag: str | None) -> np.ndarray:
    """A classic series of ``n_vols`` volumes at the same positions, told apart by ``tag`` (None: nothing)."""
    from pydicom.uid import generate_uid

    uid = generate_uid()
    vols = [np.rint(phantom[:, :, :4] * (1000 - 150 * t) + 20 * t) for t in range(n_vols)]
    for t, v in enumerate(vols):
        make_series(folder / f"v{t}", v, series_uid=uid, shuffle_seed=t)
        for p in (folder / f"v{t}").iterdir():
            ds = pydicom.dcmread(p)
            if tag == "TemporalPositionIdentifier":
                ds.TemporalPositionIdentifier = t + 1
                ds.InstanceNumber = int(ds.InstanceNumber) + 100 * t  # as scanners number dynamics
            elif tag == "EchoNumbers":
                ds.EchoNumbers = t + 1
                ds.EchoTime = 10.0 * (t + 1)
            elif tag == "b-value":
                ds.add_new(0x00189087, "FD", [0.0, 500.0, 1000.0][t])
                ds.add_new(0x00189089, "FD", [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]][t])
            elif tag == "InstanceNumber":
                ds.InstanceNumber = int(ds.InstanceNumber) + 100 * t
            ds.save_as(p)
    return np.stack(vols, axis=-1)


@pytest.mark.parametrize("tag, by", [("TemporalPositionIdentifier", "TemporalPositionIdentifier"),
                                     ("EchoNumbers", "EchoNumbers"), ("b-value", "DiffusionBValue and gradient"),
                                     ("InstanceNumber", "InstanceNumber order")])
def test_4d_classic_series(tag: str, by: str, tmp_path: Path, phantom: np.ndarray) -> None:
    """Several instances per slice position: grouped into volumes by the attribute that varies (issue 18), each
    volume exactly the known one, and written back instance by instance."""
    known = _four_d(tmp_path / "s", phantom, 3, tag)
    vol, _ = read_volume(tmp_path / "s")
    assert vol.data.shape == (96, 96, 4, 3) and vol.meta["volumes"] == 3 and vol.meta["volumes_by"] == by
    np.testing.assert_array_equal(vol.data, known)
    out = tmp_path / "o"
    out.mkdir()
    write_dicom_series(vol, vol.data + 5, out)
    assert len(list(out.iterdir())) == 12
    back, _ = read_volume(out)
    np.testing.assert_array_equal(back.data, known + 5)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)


def test_ambiguous_4d_series_is_refused(tmp_path: Path, phantom: np.ndarray) -> None:
    _four_d(tmp_path / "s", phantom, 2, None)  # the same InstanceNumbers, nothing else differs
    with pytest.raises(InputError, match="nothing tells the volumes apart.*TemporalPositionIdentifier"):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless", "JPEG2000Lossless"])
def test_compressed_sources_are_written_as_explicit_little_endian(syntax: str, tmp_path: Path,
                                                                  phantom: np.ndarray) -> None:
    """A compressed source decodes, and its derived copy is Explicit VR Little Endian with the new pixels."""
    stored = np.rint(phantom[:, :, :2] * 1000)
    paths = make_series(tmp_path / "s", stored)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(getattr(pydicom.uid, syntax))
        ds.save_as(p)
    vol, _ = read_volume(tmp_path / "s")
    out = tmp_path / "o"
    out.mkdir()
    write_dicom_series(vol, vol.data + 3, out)
    for p in out.iterdir():
        assert pydicom.dcmread(p).file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    back, _ = read_volume(out)
    np.testing.assert_array_equal(back.data, vol.data + 3)


def test_complex_component_from_the_header() -> None:
    """The part of complex data a header says it holds, from each vendor's convention; None where it says nothing
    (the letters of ImageType count only from its third value, so ORIGINAL / PRIMARY never read as parts)."""
    import pydicom

    from c2s_cli.io.dicom import complex_component

    def header(**kw: object) -> pydicom.Dataset:
        ds = pydicom.Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    assert complex_component(header(ImageType=["ORIGINAL", "PRIMARY", "P", "ND"])) == "phase"  # Siemens
    assert complex_component(header(ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "NORM"])) == "magnitude"
    assert complex_component(header(ImageType=["ORIGINAL", "PRIMARY", "R", "ND"])) == "real"
    assert complex_component(header(ImageType=["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"])) == "phase"  # Philips
    assert complex_component(header(ImageType=["ORIGINAL", "PRIMARY", "I"])) == "imaginary"
    assert complex_component(header(ComplexImageComponent="PHASE", ImageType=["ORIGINAL", "PRIMARY"])) == "phase"
    ge = header(Manufacturer="GE MEDICAL SYSTEMS", ImageType=["ORIGINAL", "PRIMARY", "OTHER"])
    ge.add_new(0x0043102F, "SS", 1)
    assert complex_component(ge) == "phase"
    assert complex_component(header(ImageType=["ORIGINAL", "PRIMARY", "OTHER"])) is None
    assert complex_component(header(ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])) is None
    assert complex_component(header()) is None
