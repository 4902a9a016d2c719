"""File I/O: the only part of c2s that reads or writes scans.

``read_volume`` and its mirror ``write_volume`` (NIfTI → NIfTI, DICOM → NIfTI, DICOM → derived DICOM series);
``check_writable`` is the dry run of ``write_volume`` that the pipeline runs before any compute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError, UsageError
from c2s_cli.io.atomic import atomic_path, regular_input
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
    if not regular_input(path):
        raise InputError(f"{path}: not a regular file or folder (a FIFO, device or socket); give a scan file")
    if is_nifti(path):
        return read_nifti(path), []
    if looks_like_dicom(path):
        from c2s_cli.io.dicom import read_dicom

        return read_dicom(path, series)
    raise InputError(f"{path}: unknown format (expected .nii, .nii.gz, a DICOM file or a DICOM folder)")


def output_kind(vol: Volume, dst: Path) -> str:
    """What ``write_volume`` writes for ``vol`` at ``dst``: "nifti" or "dicom" (a series folder).

    Raises:
        UsageError: the output type does not fit the input (a NIfTI input needs a .nii / .nii.gz output).
    """
    if is_nifti(dst):
        return "nifti"
    if vol.kind == "dicom":
        if dst.suffix.lower() in (".dcm", ".ima", ".gz", ".nii", ".png", ".json"):
            raise UsageError(f"output {dst}: a DICOM series is written to a folder (or a .nii / .nii.gz file)",
                             param="output")
        return "dicom"
    raise UsageError(f"output {dst}: a NIfTI input needs a .nii or .nii.gz output", param="output")


def check_writable(vol: Volume, dst: Path, *, uid_seed: str = "") -> None:
    """Everything ``write_volume`` needs that can be known before the compute: the output type fits the input, a
    NIfTI header can be made from the geometry, a derived DICOM instance can be encoded (a dry run on one)."""
    kind = output_kind(vol, dst)
    if kind == "dicom":
        from c2s_cli.io.dicom_write import check_dicom_writable

        check_dicom_writable(vol, uid_seed=uid_seed)
    elif vol.kind != "nifti":
        aff = vol.affine
        if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise InputError(f"{vol.path}: its geometry gives a singular voxel-to-world matrix (zero or missing pixel "
                             "spacing?); it cannot be written as NIfTI")


def write_volume(
    vol: Volume,
    data: NDArray[np.float32],
    dst: Path,
    *,
    dtype: str = "float32",
    note: str = "c2s",
    derivation: str = "c2s denoising",
    software_version: str = "c2s",
    uid_seed: str = "",
    threads: int | None = None,
) -> int:
    """Write ``data`` (``vol``'s shape, image units) as ``vol``'s derived copy at ``dst``, atomically.

    NIfTI input → NIfTI with the input's header; DICOM input → NIfTI (``.nii[.gz]``) or a derived series folder.
    ``dtype`` ("float32" or "input") applies to NIfTI outputs of NIfTI inputs. Returns the voxels clipped to the
    output's stored range.
    """
    kind = output_kind(vol, dst)
    if kind == "dicom":
        from c2s_cli.io.dicom_write import write_dicom_series

        with atomic_path(dst, is_dir=True) as tmp:
            return write_dicom_series(vol, data, tmp, derivation=derivation, software_version=software_version,
                                      uid_seed=uid_seed)
    from c2s_cli.io.nifti import write_nifti, write_nifti_from

    with atomic_path(dst) as tmp:
        if vol.kind == "nifti":
            return write_nifti(vol, data, tmp, dtype=dtype, note=note, threads=threads)
        return write_nifti_from(vol, data, tmp, threads=threads, note=note)
