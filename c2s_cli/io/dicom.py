"""DICOM series reading (grouping, geometric sorting, rescale, affine) and derived-series writing.

Reading: a folder (recursive, symlinks not followed into loops) or a single file. Instances are grouped by
SeriesInstanceUID; non-image objects (SR, RTSTRUCT, presentation states) and non-DICOM files are skipped.
Slices are sorted by ImagePositionPatient projected on the slice normal; spacing and orientation must be constant.

Writing: one output file per source instance, a deep copy of the source file with only the pixels and the
identity / provenance attributes replaced (new Series and SOP Instance UIDs, DERIVED\\SECONDARY, SourceImageSequence,
DerivationDescription, ContributingEquipmentSequence, SeriesDescription suffix, SeriesNumber + offset), intensities
stored with the source's own RescaleSlope/Intercept, BitsStored and PixelRepresentation, Explicit VR Little Endian.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError
from c2s_cli.volume import Volume

MAX_FILES = 200_000


@dataclass(frozen=True)
class SeriesInfo:
    uid: str
    number: int | None
    description: str
    modality: str
    count: int

    def label(self) -> str:
        num = "-" if self.number is None else str(self.number)
        return f"#{num} '{self.description}' ({self.modality}, {self.count} images, UID {self.uid})"


def _walk(root: Path) -> list[Path]:
    """All regular files under ``root``, sorted; follows no symlinked folders (no loops)."""
    if root.is_file():
        return [root]
    files: list[Path] = []
    from c2s_cli.io.atomic import is_temp_name

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not is_temp_name(d))  # c2s's own temporaries are never inputs
        for name in sorted(filenames):
            if is_temp_name(name):
                continue
            p = Path(dirpath) / name
            if p.is_file():
                files.append(p)
                if len(files) > MAX_FILES:
                    raise InputError(f"{root}: more than {MAX_FILES} files; point c2s at one series folder")
    return files


def _has_dicm_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _read_headers(paths: list[Path]) -> tuple[list[tuple[Path, Any]], list[str]]:
    """Headers (no pixel data) of the DICOM image files among ``paths``, and warnings about skipped files."""
    import pydicom

    images: list[tuple[Path, Any]] = []
    skipped_non_dicom = 0
    skipped_non_image: Counter[str] = Counter()
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # a damaged file: refuse it if it claims to be DICOM, else skip it
            if _has_dicm_marker(p) or p.suffix.lower() in (".dcm", ".ima"):
                raise InputError(f"{p}: corrupted DICOM file ({type(exc).__name__}: {str(exc)[:120]})") from None
            skipped_non_dicom += 1
            continue
        try:
            sop_class = ds.get("SOPClassUID")
            is_image = "Rows" in ds or "Image" in str(getattr(sop_class, "name", "")) or sop_class is None
            if is_image and ("SeriesInstanceUID" not in ds or not str(ds.SeriesInstanceUID)):
                raise InputError(f"{p}: an image without a SeriesInstanceUID (damaged: an element length that "
                                 "swallowed the rest, or non-conformant); c2s will not silently drop a slice: fix or "
                                 "remove the file")
            if "Rows" not in ds:
                if is_image:
                    raise InputError(f"{p}: an image object without Rows (damaged header); fix or remove the file")
                skipped_non_image[str(ds.get("Modality", "?"))] += 1
                continue
            _parse_header(ds)
        except InputError:
            raise
        except Exception as exc:  # pydicom parses lazily: a damaged element surfaces on access
            raise InputError(f"{p}: corrupted DICOM header ({type(exc).__name__}: {str(exc)[:120]})") from None
        images.append((p, ds))
    warnings = []
    if skipped_non_dicom:
        warnings.append(f"skipped {skipped_non_dicom} file(s) that are not readable DICOM")
    if skipped_non_image:
        kinds = ", ".join(f"{n}×{m}" for m, n in sorted(skipped_non_image.items()))
        warnings.append(f"skipped non-image DICOM objects ({kinds})")
    return images, warnings


_NUMERIC = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
            "SliceThickness", "SpacingBetweenSlices")
_INTEGER = ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "BitsAllocated", "BitsStored",
            "PixelRepresentation", "SeriesNumber")
_TEXT = ("SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "SeriesDescription", "Modality", "ImageType",
         "PhotometricInterpretation", "Manufacturer", "SequenceName", "ScanningSequence")


def _parse_header(ds: Any) -> None:
    """Access and convert every attribute c2s relies on, so damaged values fail here, naming the file."""
    for tag in _NUMERIC:
        if tag in ds and ds[tag].value not in (None, ""):
            v = ds[tag].value
            vals = np.asarray(list(v) if isinstance(v, (list, tuple)) or hasattr(v, "__iter__") and not isinstance(v, (str, bytes)) else [v], dtype=np.float64)
            if not np.all(np.isfinite(vals)):
                raise ValueError(f"{tag} is not finite")
    for tag, n in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
        if tag in ds and len(np.atleast_1d(np.asarray(ds[tag].value, dtype=np.float64))) != n:
            raise ValueError(f"{tag} must have {n} values")
    for tag in ("SOPInstanceUID", "SOPClassUID"):
        if tag not in ds or not str(ds[tag].value):
            raise ValueError(f"missing {tag}")
    for tag in _INTEGER:
        if tag in ds and ds[tag].value not in (None, ""):
            int(ds[tag].value)
    for tag in _TEXT:
        if tag in ds:
            str(ds[tag].value)
    if "Rows" in ds and (int(ds.Rows) <= 0 or int(ds.Columns) <= 0 or int(ds.Rows) * int(ds.Columns) > 2**28):
        raise ValueError(f"implausible image size {ds.Rows}×{ds.Columns}")


def _series_infos(images: list[tuple[Path, Any]]) -> list[SeriesInfo]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for _, ds in images:
        groups[str(ds.SeriesInstanceUID)].append(ds)
    infos = []
    for uid, dss in groups.items():
        ds = dss[0]
        number = ds.get("SeriesNumber")
        infos.append(
            SeriesInfo(
                uid=uid,
                number=int(number) if number not in (None, "") else None,
                description=str(ds.get("SeriesDescription", "")),
                modality=str(ds.get("Modality", "")),
                count=len(dss),
            )
        )
    return sorted(infos, key=lambda s: (s.number if s.number is not None else -1, s.uid))


def list_series(path: Path) -> tuple[list[SeriesInfo], list[str]]:
    """The image series found under ``path`` and warnings about skipped files."""
    images, warnings = _read_headers(_walk(path))
    return _series_infos(images), warnings


def _pick_series(path: Path, images: list[tuple[Path, Any]], series: str | None) -> list[tuple[Path, Any]]:
    infos = _series_infos(images)
    if not infos:
        raise InputError(f"{path}: no DICOM image series found")
    if series is None:
        if len(infos) > 1:
            listing = "; ".join(i.label() for i in infos)
            raise InputError(f"{path}: {len(infos)} series found, choose one with --series UID|NUMBER: {listing}")
        chosen = infos[0]
    else:
        matches = [i for i in infos if i.uid == series or (i.number is not None and str(i.number) == series)]
        if len(matches) != 1:
            listing = "; ".join(i.label() for i in infos)
            what = "matches several series" if matches else "matches no series"
            raise InputError(f"{path}: --series {series} {what}; available: {listing}")
        chosen = matches[0]
    return [(p, ds) for p, ds in images if str(ds.SeriesInstanceUID) == chosen.uid]


def _geometry(path: Path, members: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], NDArray[np.float64], list[str]]:
    """Select one consistent stack, sort it along the slice normal, and build the RAS affine."""
    warnings: list[str] = []
    for p, ds in members:
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(f"{p}: colour / multi-sample image (SamplesPerPixel={ds.SamplesPerPixel}) is not supported")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"{p}: multi-frame (Enhanced) DICOM with {ds.NumberOfFrames} frames is not supported; "
                "convert it to single-frame instances first (e.g. dcm2niix to NIfTI)"
            )
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise InputError(f"{p}: missing {tag}; cannot place the slice in space")
    # localizers and other-geometry images: keep the largest consistent stack, drop localizers with a warning
    def key(ds: Any) -> tuple[Any, ...]:
        iop = tuple(np.round(np.asarray(ds.ImageOrientationPatient, float), 4))
        return (iop, int(ds.Rows), int(ds.Columns), tuple(np.round(np.asarray(ds.PixelSpacing, float), 4)))

    groups: dict[tuple[Any, ...], list[tuple[Path, Any]]] = defaultdict(list)
    for p, ds in members:
        groups[key(ds)].append((p, ds))
    if len(groups) > 1:
        ordered = sorted(groups.values(), key=len, reverse=True)
        main, rest = ordered[0], [m for g in ordered[1:] for m in g]
        localizers = [m for m in rest if "LOCALIZER" in [str(v).upper() for v in m[1].get("ImageType", [])]]
        if len(localizers) == len(rest):
            warnings.append(f"skipped {len(rest)} localizer image(s) with another geometry")
            members = main
        else:
            raise InputError(
                f"{path}: the series mixes {len(groups)} geometries (orientation, matrix or pixel spacing differ, "
                f"e.g. {rest[0][0].name} vs {main[0][0].name}); split it or choose another series"
            )
    iop = np.asarray(members[0][1].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in members])
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    members = [members[i] for i in order]
    pos, proj = pos[order], proj[order]
    if len(members) > 1:
        d = np.diff(proj)
        if np.any(np.abs(d) < 1e-3):
            k = int(np.argmin(np.abs(d)))
            raise InputError(
                f"{path}: two images at the same slice position ({members[k][0].name}, {members[k + 1][0].name}); "
                "multi-echo, dynamic or duplicated series are not supported"
            )
        step = float(np.median(d))
        if np.max(np.abs(d - step)) > max(0.1 * abs(step), 0.1):
            k = int(np.argmax(np.abs(d - step)))
            raise InputError(
                f"{path}: slice spacing is not constant ({d[k]:.3f} mm between {members[k][0].name} and "
                f"{members[k + 1][0].name}, {step:.3f} mm elsewhere): missing slices?"
            )
        slice_vec = (pos[-1] - pos[0]) / (len(members) - 1)
        in_plane = slice_vec - normal * (slice_vec @ normal)
        if np.linalg.norm(in_plane) > 0.01 * abs(step) + 1e-3:
            warnings.append("slices are sheared (gantry tilt?): the affine follows the slice positions")
    else:
        ds0 = members[0][1]
        thick = float(ds0.get("SpacingBetweenSlices", ds0.get("SliceThickness", 1.0)) or 1.0)
        slice_vec = normal * thick
    dr, dc = (float(v) for v in members[0][1].PixelSpacing)  # row spacing, column spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc  # i: along a row (column index)
    lps[:3, 1] = col_dir * dr  # j: down a column (row index)
    lps[:3, 2] = slice_vec
    lps[:3, 3] = pos[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return members, affine, warnings


def read_dicom(path: Path, series: str | None = None) -> tuple[Volume, list[str]]:
    """Read one series under ``path`` as a float32 (columns, rows, slices) volume in modality units.

    Returns the volume and warnings (skipped files, localizers).
    """
    import pydicom

    images, warnings = _read_headers(_walk(path))
    members = _pick_series(path, images, series)
    members, affine, geo_warnings = _geometry(path, members)
    warnings += geo_warnings
    rows, cols = int(members[0][1].Rows), int(members[0][1].Columns)
    data = np.empty((cols, rows, len(members)), dtype=np.float32)
    stored_dtypes = set()
    for k, (p, _) in enumerate(members):
        ds = None
        try:
            ds = pydicom.dcmread(p)
            arr = ds.pixel_array
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        except Exception as exc:
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(syntax, "name", str(syntax))
            if "handler" in str(exc).lower() or "plugin" in str(exc).lower() or "decod" in str(exc).lower():
                raise InputError(
                    f"{p}: cannot decode pixel data with transfer syntax '{name}'; install the codecs with "
                    "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls`"
                ) from None
            raise InputError(f"{p}: pixel data unreadable ({type(exc).__name__}: {exc})") from None
        if arr.shape != (rows, cols):
            raise InputError(f"{p}: image is {arr.shape[0]}×{arr.shape[1]}, the series is {rows}×{cols}")
        stored_dtypes.add(str(arr.dtype))
        data[:, :, k] = (arr.astype(np.float32) * slope + intercept).T
        del ds, arr
    first = members[0][1]
    meta = {
        "dtype": ",".join(sorted(stored_dtypes)),
        "series_uid": str(first.SeriesInstanceUID),
        "series_number": str(first.get("SeriesNumber", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "modality": str(first.get("Modality", "")),
        "sequence": str(first.get("SequenceName", first.get("ScanningSequence", ""))),
        "manufacturer": str(first.get("Manufacturer", "")),
        "files": len(members),
    }
    return Volume(data, affine, members, "dicom", str(path), 2, meta), warnings


def _stored_range(ds: Any) -> tuple[int, int, np.dtype]:
    bits = int(ds.BitsStored)
    signed = int(ds.PixelRepresentation) == 1
    alloc = int(ds.BitsAllocated)
    dtype = np.dtype(f"{'int' if signed else 'uint'}{8 if alloc <= 8 else 16}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, dtype
    return 0, 2**bits - 1, dtype


def derived_uid(*parts: str) -> str:
    """A deterministic UID under the 2.25 (UUID) root from ``parts`` (source UIDs, model SHA-256, options): the same
    source denoised the same way gets the same derived UIDs, so a re-send replaces instead of duplicating."""
    import hashlib

    digest = hashlib.sha256("\x00".join(parts).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def _derive(
    ds: Any, pixels: NDArray[np.float32], *, series_uid: str, derivation: str, software_version: str,
    description_suffix: str, series_number_offset: int, now: _dt.datetime,
) -> int:
    """Turn the source dataset ``ds`` (read with pixels) into its derived copy in place; returns clipped voxels.

    ``pixels`` is the (columns, rows) slice in modality units.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    from c2s_cli import __version__

    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    source_sop = str(ds.SOPInstanceUID)
    source_class = str(ds.SOPClassUID)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    lo, hi, dtype = _stored_range(ds)
    stored = np.rint((pixels.T.astype(np.float64) - intercept) / slope)
    clipped = int(np.count_nonzero((stored < lo) | (stored > hi)))
    bits_stored = int(ds.BitsStored)
    photometric = str(ds.PhotometricInterpretation)
    for elem in [e.tag for e in ds if e.tag.group == 0x0000]:  # command-set elements may not be in a file
        del ds[elem]
    ds.set_pixel_data(np.clip(stored, lo, hi).astype(dtype), photometric, bits_stored, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = f"C2S_{__version__}"[:16]
    for tag in ("IconImageSequence", "SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries"):
        if tag in ds:
            delattr(ds, tag)
    sop_uid = derived_uid(source_sop, series_uid)
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SeriesInstanceUID = series_uid
    image_type = [str(v) for v in ds.get("ImageType", [])]
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    ds.DerivationDescription = derivation[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source_class
    ref.ReferencedSOPInstanceUID = source_sop
    purpose = Dataset()
    purpose.CodeValue = "121322"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    ref.PurposeOfReferenceCodeSequence = Sequence([purpose])
    ds.SourceImageSequence = Sequence([ref])
    equip = Dataset()
    equip.Manufacturer = "c2s"
    equip.SoftwareVersions = software_version or "c2s"
    equip.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    equip.ContributionDescription = derivation[:1024]
    code = Dataset()
    code.CodeValue = "109102"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Processing Equipment"
    equip.PurposeOfReferenceCodeSequence = Sequence([code])
    previous = list(ds.get("ContributingEquipmentSequence", []))
    ds.ContributingEquipmentSequence = Sequence([*previous, equip])
    ds.SeriesDescription = (str(ds.get("SeriesDescription", "")) + description_suffix)[:64]
    number = ds.get("SeriesNumber")
    ds.SeriesNumber = (int(number) if number not in (None, "") else 0) + series_number_offset
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    return clipped


IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1437.1"  # c2s's own (pydicom's root + a c2s suffix)


def _encode(ds: Any, target: Any, src_path: Path) -> None:
    """Write ``ds`` as Explicit VR Little Endian to a path or a file-like; a damaged element is one InputError."""
    try:
        ds.save_as(target, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except OSError as exc:
        if exc.errno is not None:  # the file system (a full disk, a vanished folder): the caller reports it
            raise
        # pydicom wraps an element it cannot encode in an OSError without errno
        raise InputError(f"{src_path}: cannot write a derived copy, a damaged element ({str(exc).splitlines()[0][:120]})"
                         ) from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for elements it cannot encode
        raise InputError(f"{src_path}: cannot write a derived copy, a damaged element ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None


def check_dicom_writable(vol: Volume, *, uid_seed: str = "") -> None:
    """Dry run before any compute: derive and encode the first instance in memory; raises InputError if a derived
    series of this source cannot be written."""
    import io

    import pydicom

    src_path = vol.source[0][0]
    try:
        ds = pydicom.dcmread(src_path)
        _derive(ds, vol.data[:, :, 0], series_uid=derived_uid(vol.meta.get("series_uid", ""), uid_seed),
                derivation="c2s dry run", software_version="c2s", description_suffix=" c2s",
                series_number_offset=1000, now=_dt.datetime.now())
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{src_path}: cannot write a derived copy ({type(exc).__name__}: {str(exc)[:120]})") from None
    _encode(ds, io.BytesIO(), src_path)


def write_dicom_series(
    vol: Volume,
    data: NDArray[np.float32],
    out_dir: Path,
    *,
    description_suffix: str = " c2s",
    series_number_offset: int = 1000,
    derivation: str = "c2s denoising",
    software_version: str = "",
    uid_seed: str = "",
) -> int:
    """Write ``data`` (same shape as ``vol.data``) as a derived series into the existing empty folder ``out_dir``.

    UIDs are deterministic (:func:`derived_uid` of the source UIDs and ``uid_seed``: the model's SHA-256 and the
    options that change the pixels). Returns the number of voxels clipped to the stored range.
    """
    import pydicom

    now = _dt.datetime.now()
    series_uid = derived_uid(vol.meta.get("series_uid", ""), uid_seed)
    names = [p.name for p, _ in vol.source]
    unique_names = len(set(names)) == len(names)
    clipped = 0
    for k, (src_path, _) in enumerate(vol.source):
        ds = pydicom.dcmread(src_path)
        clipped += _derive(ds, data[:, :, k], series_uid=series_uid, derivation=derivation,
                           software_version=software_version, description_suffix=description_suffix,
                           series_number_offset=series_number_offset, now=now)
        name = names[k] if unique_names else f"IM_{k + 1:05d}.dcm"
        _encode(ds, out_dir / name, src_path)
    return clipped
