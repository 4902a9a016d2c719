"""DICOM series reading (grouping, geometric sorting, rescale, affine); writing is in :mod:`c2s_cli.io.dicom_write`.

Reading: a folder (recursive, symlinks not followed into loops) or a single file. Instances are grouped by
SeriesInstanceUID; non-image objects (SR, RTSTRUCT, presentation states) and non-DICOM files are skipped.
Slices are sorted by ImagePositionPatient projected on the slice normal; spacing and orientation must be constant.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError, redact
from c2s_cli.extras import hint
from c2s_cli.io.dicom_volumes import mosaic_layout, read_mosaics, split_volumes
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
        if not p.name.startswith(".") and p.stat().st_size == 0:  # a slice whose transfer never completed
            raise InputError(f"{p}: an empty file (0 bytes) among the scan's files, perhaps an interrupted transfer; "
                             "c2s will not silently drop a slice: remove it or send the series again")
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # a damaged file: refuse it if it claims to be DICOM, else skip it
            if _has_dicm_marker(p) or p.suffix.lower() in (".dcm", ".ima"):
                raise InputError(f"{p}: corrupted DICOM file ({type(exc).__name__}: {redact(str(exc))[:120]})") from None
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
            raise InputError(f"{p}: corrupted DICOM header ({type(exc).__name__}: {redact(str(exc))[:120]})") from None
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


# what an image holds of complex MR data, by ImageType value (Siemens: M / P / R / I at value 3; Philips: "PHASE
# MAP", "R_FFE" … at value 3 and the letter at value 4; the letters only count from value 3 on)
_PART_WORDS = {"MAGNITUDE": "magnitude", "PHASE": "phase", "PHASE MAP": "phase", "REAL": "real",
               "IMAGINARY": "imaginary"}
_PART_LETTERS = {"M": "magnitude", "P": "phase", "R": "real", "I": "imaginary"}
_GE_PARTS = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}  # GE private (0043,102F), as dcm2niix reads it


def complex_component(ds: Any) -> str | None:
    """What part of complex MR data an image header says it holds: "magnitude", "phase", "real", "imaginary", or
    None where it does not say (most magnitude series). Read from ComplexImageComponent (0008,9208, enhanced MR),
    then ImageType (Siemens "ORIGINAL\\PRIMARY\\P\\ND", Philips "…\\PHASE MAP\\P\\FFE"), then GE's private
    image-type element (0043,102F)."""
    comp = str(ds.get("ComplexImageComponent", "") or "").strip().upper()
    if comp in _PART_WORDS:
        return _PART_WORDS[comp]
    values = [str(v).strip().upper() for v in (ds.get("ImageType", None) or [])]
    for k, v in enumerate(values):
        if v in _PART_WORDS:
            return _PART_WORDS[v]
        if k >= 2 and v in _PART_LETTERS:
            return _PART_LETTERS[v]
    if str(ds.get("Manufacturer", "") or "").upper().startswith("GE") and (0x0043, 0x102F) in ds:
        try:
            return _GE_PARTS.get(int(ds[0x0043, 0x102F].value))
        except (TypeError, ValueError):
            return None
    return None


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
                f"{p}: a multi-frame image with {ds.NumberOfFrames} frames but no per-frame functional groups; c2s "
                "cannot place its frames in space (convert it with dcm2niix)"
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
    images, warnings = _read_headers(_walk(path))
    members = _pick_series(path, images, series)
    from c2s_cli.io.enhanced import frame_headers, is_enhanced, read_frames

    enhanced = [is_enhanced(ds) for _, ds in members]
    if any(enhanced) and not all(enhanced):
        raise InputError(f"{path}: the series mixes multi-frame and single-frame images; choose one of them")
    frames_of: dict[Path, NDArray[np.float32]] = {}
    header_of = {p: ds for p, ds in members}  # the files' own headers (series facts, transfer syntax)
    if all(enhanced):
        members = [h for p, ds in members for h in frame_headers(p, ds)]
    mosaic = None if all(enhanced) else mosaic_layout(members)
    stored_dtypes: set[str] = set()
    if mosaic is not None:
        members, affine, data, layout = read_mosaics(members, mosaic, lambda p: _pixels(p, stored_dtypes))
    else:
        groups, by, dropped = split_volumes(path, members)
        warnings += dropped
        members, affine, geo_warnings = _geometry(path, groups[0])
        warnings += geo_warnings
        first_len = len(members)
        for g in groups[1:]:
            g_sorted, g_affine, _ = _geometry(path, g)
            if len(g_sorted) != first_len or not np.allclose(g_affine, affine, atol=1e-3):
                raise InputError(f"{path}: the volumes told apart by {by} do not share one geometry (e.g. "
                                 f"{g_sorted[0][0].name} vs {members[0][0].name})")
            members = members + g_sorted
        n_slices, n_vols = len(members) // len(groups), len(groups)
        rows, cols = int(members[0][1].Rows), int(members[0][1].Columns)
        data = np.empty((cols, rows, n_slices, n_vols) if n_vols > 1 else (cols, rows, n_slices), dtype=np.float32)
        for idx, (p, h) in enumerate(members):  # volume-major: instance idx is slice idx % Z of volume idx // Z
            if all(enhanced):
                if p not in frames_of:
                    frames_of[p] = read_frames(p)
                    src = header_of[p]
                    stored_dtypes.add(f"{'int' if int(src.PixelRepresentation) else 'uint'}{int(src.BitsAllocated)}")
                arr = frames_of[p][getattr(h, "_c2s_frame")]
            else:
                arr = _pixels(p, stored_dtypes)
            if arr.shape != (rows, cols):
                raise InputError(f"{p}: image is {arr.shape[0]}×{arr.shape[1]}, the series is {rows}×{cols}")
            if n_vols > 1:
                data[:, :, idx % n_slices, idx // n_slices] = arr.T
            else:
                data[:, :, idx] = arr.T
            del arr
        kind = "enhanced" if all(enhanced) else "classic"
        layout = {"layout": kind} if n_vols == 1 else {"layout": kind, "volumes": n_vols, "volumes_by": by}
        del frames_of
    first = header_of.get(members[0][0], members[0][1])
    meta = {
        "dtype": ",".join(sorted(stored_dtypes)),
        "series_uid": str(first.SeriesInstanceUID),
        "series_number": str(first.get("SeriesNumber", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "modality": str(first.get("Modality", "")),
        "sequence": str(first.get("SequenceName", first.get("ScanningSequence", ""))),
        "manufacturer": str(first.get("Manufacturer", "")),
        "complex_component": complex_component(first) or "",
        "files": len(members),
        **layout,
        **_encoding(first),
    }
    if meta["lossy"]:
        warnings.append(f"the source is lossy compressed ({meta['transfer_syntax']}; LossyImageCompression "
                        f"{first.get('LossyImageCompression', '-')}): its noise is no longer the scanner's, and "
                        "compression artefacts are not noise c2s can remove")
    return Volume(data, affine, members, "dicom", str(path), 2, meta), warnings


_LOSSLESS_WORDS = ("lossless", "little endian", "big endian", "rle", "deflated")


def _encoding(ds: Any) -> dict[str, Any]:
    """The transfer syntax and whether the pixels went through lossy compression (the syntax, or
    LossyImageCompression = 01 from an earlier step)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = str(getattr(syntax, "name", syntax or "unknown"))
    lossy_syntax = bool(syntax is not None and getattr(syntax, "is_compressed", False)
                        and not any(w in name.lower() for w in _LOSSLESS_WORDS))
    return {"transfer_syntax": name, "lossy": lossy_syntax or str(ds.get("LossyImageCompression", "")) == "01"}


def _pixels(p: Path, dtypes: set[str]) -> NDArray[np.float32]:
    """One instance's pixels in modality units (RescaleSlope / Intercept applied), (rows, columns)."""
    import pydicom

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
                f"`{hint('jpeg')}`"
            ) from None
        raise InputError(f"{p}: pixel data unreadable ({type(exc).__name__}: {redact(str(exc))[:120]})") from None
    dtypes.add(str(arr.dtype))
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
