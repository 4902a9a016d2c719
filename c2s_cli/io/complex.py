"""Complex input: a complex NIfTI, a real and an imaginary image, or a magnitude and a phase image (NIfTI or DICOM
series of the same acquisition, as Siemens writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError, UsageError
from c2s_cli.io import is_nifti, read_volume
from c2s_cli.volume import Volume, same_grid

SIEMENS_PHASE = 4096.0  # Siemens phase images store −4096 … 4095 (after the rescale) for −π … π


def phase_radians(phase: NDArray[np.floating], path: Path) -> NDArray[np.float32]:
    """A phase image in radians: radians already (|φ| ≤ π), or the Siemens convention (|φ| ≤ 4096 ↔ π).

    Raises:
        InputError: naming ``phase``, values beyond both conventions.
    """
    top = float(np.max(np.abs(phase))) if phase.size else 0.0
    if top <= np.pi * (1 + 1e-3):
        return np.asarray(phase, np.float32)
    if top <= SIEMENS_PHASE * (1 + 1e-6):
        return (np.asarray(phase, np.float32) * np.float32(np.pi / SIEMENS_PHASE)).astype(np.float32)
    raise InputError(f"phase {path}: values up to {top:.6g}; a phase image is in radians (−π … π) or in the Siemens "
                     "convention (−4096 … 4095)", param="phase")


def is_complex_nifti(path: Path) -> bool:
    """Whether ``path`` is a NIfTI whose data type is complex (the header alone is read)."""
    if not is_nifti(path) or not path.is_file():
        return False
    import nibabel as nib

    try:
        return bool(np.issubdtype(nib.load(str(path)).get_data_dtype(), np.complexfloating))
    except Exception:  # an unreadable file is refused, with its reason, by read_volume
        return False


def read_complex(
    src: Path, *, phase: Path | None = None, imaginary: Path | None = None, series: str | None = None,
    check_parts: bool = True,
) -> tuple[Volume, list[str], NDArray[np.complex64] | None]:
    """Read ``src`` and, for complex data, its complex values.

    ``src`` is a complex NIfTI; or a magnitude image with ``phase`` (radians or Siemens −4096 … 4095); or the real
    part with ``imaginary``; else an ordinary magnitude image (the complex array is then None). The volume returned
    is the input's geometry (the writers' template) holding the magnitude |z|. ``check_parts``: refuse a DICOM series
    whose header names another part of complex data than its role (a phase series as the input, …); off for
    ``c2s info``, which describes any series.

    Raises:
        UsageError: naming ``phase``, both ``phase`` and ``imaginary`` given.
        InputError: naming ``phase`` / ``imaginary``, an image not on ``src``'s grid, a negative magnitude, a phase
            beyond the conventions.
    """
    if phase is not None and imaginary is not None:
        raise UsageError("phase and imaginary both given: give the phase of a magnitude image or the imaginary part "
                         "of a real image", param="phase")
    if phase is None and imaginary is None:
        if is_complex_nifti(src):
            from c2s_cli.io.nifti import read_nifti

            vol = read_nifti(src, keep_complex=True)
            z = np.asarray(vol.data, np.complex64)
            return _magnitude_volume(vol, z), [], z
        vol, warnings = read_volume(src, series=series)
        if check_parts:
            _check_part(vol, src, "magnitude")
        return vol, warnings, None
    vol, warnings = read_volume(src, series=series)
    other_path = phase if phase is not None else imaginary
    assert other_path is not None
    param = "phase" if phase is not None else "imaginary"
    if check_parts:
        _check_part(vol, src, "magnitude" if phase is not None else "real")
    other, more = read_volume(other_path, series=None)
    if check_parts:
        _check_part(other, other_path, param)
    same_grid(other, vol, other_path, param)
    if other.data.shape != vol.data.shape:  # the same grid, another number of volumes
        raise InputError(f"{param} {other_path}: {other.data.shape} against the input's {vol.data.shape}; give the two "
                         "images of one acquisition", param=param)
    if phase is not None:
        if float(vol.data.min()) < 0:
            raise InputError(f"{src}: negative values, not a magnitude image (with phase, the input is the magnitude; "
                             "for a real part give imaginary)", param="phase")
        z = (vol.data * np.exp(1j * phase_radians(other.data, other_path))).astype(np.complex64)
    else:
        z = (vol.data + 1j * other.data).astype(np.complex64)
    return _magnitude_volume(vol, z), warnings + more, z


PART_HOW = {"phase": "give it with --phase beside its magnitude series", "real": "give it as the input with --imaginary "
        "and the imaginary part", "imaginary": "give it with --imaginary beside the real part",
        "magnitude": "give it as the input"}


def _check_part(vol: Volume, path: Path, want: str) -> None:
    """Refuse a DICOM series whose header says it holds another part of complex data than ``want`` (a phase image
    denoised as a magnitude would be destroyed); a series that does not say is taken as given.

    Raises:
        InputError: naming ``phase`` / ``imaginary``, or the input.
    """
    part = str(vol.meta.get("complex_component", "") or "")
    if not part or part == want:
        return
    role = {"magnitude": "the input", "real": "the input", "phase": "phase", "imaginary": "imaginary"}[want]
    raise InputError(f"{path}: its DICOM header says it is the {part} image of complex data, not the {want} "
                     f"c2s needs here; {PART_HOW[part]}", param=None if role == "the input" else role)


def _magnitude_volume(vol: Volume, z: NDArray[np.complex64]) -> Volume:
    """``vol``'s geometry and header holding |z| (float32)."""
    return Volume(np.abs(z).astype(np.float32), vol.affine, vol.source, vol.kind, vol.path, vol.slice_axis,
                  {**vol.meta, "complex": True})
