"""File I/O: the only part of c2s that reads or writes scans."""

from __future__ import annotations

from pathlib import Path

from c2s_cli.errors import InputError
from c2s_cli.io.nifti import is_nifti, read_nifti
from c2s_cli.volume import Volume


def looks_like_dicom(path: Path) -> bool:
    """A folder (assumed to hold DICOM), a .dcm file, or a file with the DICM preamble marker."""
    if path.is_dir():
        return True
    if path.suffix.lower() in {".dcm", ".ima"}:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read_volume(path: Path, *, series: str | None = None) -> tuple[Volume, list[str]]:
    """Read a NIfTI file, a DICOM file or a DICOM folder. Returns the volume and warnings."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if is_nifti(path):
        return read_nifti(path), []
    if looks_like_dicom(path):
        from c2s_cli.io.dicom import read_dicom

        return read_dicom(path, series)
    raise InputError(f"{path}: unknown format (expected .nii, .nii.gz, a DICOM file or a DICOM folder)")
