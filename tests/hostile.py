"""A small corpus of hostile inputs, generated on the fly (used by test_hostile.py and c2s_bench/fuzz.py).

Each builder writes its case under ``root`` and returns the path to give to ``c2s denoise`` plus the exit code and a
fragment the one-line error must contain (exit 0: accepted, fragment expected among the warnings).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from conftest import make_series
from c2s_bench.phantoms import head_phantom, rician


def _phantom() -> np.ndarray:
    return np.rint(rician(head_phantom((48, 48, 8), seed=0) * 1000, 40, seed=1))


def _nifti(root: Path, data: np.ndarray, name: str = "x.nii.gz") -> Path:
    p = root / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    return p


def zero_byte(root: Path) -> tuple[Path, int, str]:
    p = root / "empty.nii.gz"
    p.write_bytes(b"")
    return p, 4, "empty.nii.gz"


def truncated_nifti(root: Path) -> tuple[Path, int, str]:
    p = _nifti(root, _phantom().astype(np.int16))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) * 2 // 3])
    return p, 4, "x.nii.gz"


def nifti_2d(root: Path) -> tuple[Path, int, str]:
    return _nifti(root, np.ones((20, 20), np.float32)), 4, "3D or 4D"


def absurd_dims(root: Path) -> tuple[Path, int, str]:
    p = _nifti(root, np.ones((4, 4, 4), np.float32), "huge.nii")
    raw = bytearray(p.read_bytes())
    raw[40:56] = struct.pack("<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[0..7]
    p.write_bytes(bytes(raw))
    return p, 4, "implausible size"


def nan_voxels(root: Path) -> tuple[Path, int, str]:
    d = _phantom().astype(np.float32)
    d[3, 3, 3] = np.nan
    d[4, 4, 4] = np.inf
    return _nifti(root, d), 4, "NaN"


def all_zero(root: Path) -> tuple[Path, int, str]:
    return _nifti(root, np.zeros((32, 32, 8), np.float32)), 4, "all zeros"


def negative(root: Path) -> tuple[Path, int, str]:
    return _nifti(root, (_phantom() - 500).astype(np.float32)), 4, "negative"


def complex_data(root: Path) -> tuple[Path, int, str]:
    return _nifti(root, _phantom().astype(np.complex64)), 4, "complex"


def dicom_no_pixels(root: Path) -> tuple[Path, int, str]:
    import pydicom

    make_series(root / "s", _phantom()[:, :, :3])
    for p in (root / "s").iterdir():
        ds = pydicom.dcmread(p)
        del ds.PixelData
        del ds.Rows
        ds.save_as(p)
    return root / "s", 4, "without Rows"  # an MR image object without its image: damaged, named, refused


def non_image_mixed(root: Path) -> tuple[Path, int, str]:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    make_series(root / "s", _phantom())
    for modality, cls in (("SR", "1.2.840.10008.5.1.4.1.1.88.22"), ("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3"),
                          ("PR", "1.2.840.10008.5.1.4.1.1.11.1")):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = cls
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(modality, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Modality, ds.SOPClassUID, ds.SOPInstanceUID = modality, cls, meta.MediaStorageSOPInstanceUID
        ds.save_as(root / "s" / f"{modality}.dcm", enforce_file_format=True)
    return root / "s", 0, "skipped non-image DICOM objects"


def localizer_mixed(root: Path) -> tuple[Path, int, str]:
    import pydicom

    uid = "1.2.826.0.1.3680043.8.498.77"
    make_series(root / "s", _phantom(), series_uid=uid)
    make_series(root / "loc", _phantom()[:, :, :2], series_uid=uid, oblique=False)
    for i, p in enumerate(sorted((root / "loc").iterdir())):
        ds = pydicom.dcmread(p)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(root / "s" / f"loc{i}.dcm")
    return root / "s", 0, "localizer"


def other_geometry(root: Path) -> tuple[Path, int, str]:
    uid = "1.2.826.0.1.3680043.8.498.78"
    make_series(root / "s", _phantom(), series_uid=uid)
    make_series(root / "s" / "other", _phantom()[:24, :24, :3], series_uid=uid)
    return root / "s", 4, "mixes 2 geometries"


def duplicate_positions(root: Path) -> tuple[Path, int, str]:
    make_series(root / "s", _phantom()[:, :, :4], positions=[0, 3, 3, 6])
    return root / "s", 4, "same slice position"


def missing_slice(root: Path) -> tuple[Path, int, str]:
    make_series(root / "s", _phantom()[:, :, :5], positions=[0, 3, 6, 12, 15])
    return root / "s", 4, "missing slices"


def unsupported_syntax(root: Path) -> tuple[Path, int, str]:
    import pydicom
    from pydicom.encaps import encapsulate

    make_series(root / "s", _phantom()[:, :, :2])
    for p in (root / "s").iterdir():
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder for images
        ds.PixelData = encapsulate([b"\xff\x0a" + b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds.save_as(p)
    return root / "s", 4, "cannot decode"


def rgb(root: Path) -> tuple[Path, int, str]:
    import pydicom

    make_series(root / "s", _phantom()[:, :, :2])
    for p in (root / "s").iterdir():
        ds = pydicom.dcmread(p)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.save_as(p)
    return root / "s", 4, "SamplesPerPixel"


def symlink_loop(root: Path) -> tuple[Path, int, str]:
    make_series(root / "s", _phantom())
    os.symlink(root / "s", root / "s" / "loop")
    return root / "s", 0, ""


def non_utf8_name(root: Path) -> tuple[Path, int, str]:
    name = os.fsdecode(b"scan_\xff\xfe.nii.gz")
    p = root / name
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), str(p))
    return p, 4, "3D or 4D"


CASES: dict[str, Callable[[Path], tuple[Path, int, str]]] = {
    f.__name__: f
    for f in (zero_byte, truncated_nifti, nifti_2d, absurd_dims, nan_voxels, all_zero, negative, complex_data,
              dicom_no_pixels, non_image_mixed, localizer_mixed, other_geometry, duplicate_positions, missing_slice,
              unsupported_syntax, rgb, symlink_loop, non_utf8_name)
}
