"""Derived DICOM series: one output instance per source instance, checked by a dry run before any compute.

Each output file is a copy of its source with only the pixels and the identity / provenance attributes replaced (new
deterministic Series and SOP Instance UIDs, DERIVED\\SECONDARY, SourceImageSequence, DerivationDescription,
ContributingEquipmentSequence, SeriesDescription suffix, SeriesNumber + offset), intensities stored with the source's
own RescaleSlope/Intercept, BitsStored and PixelRepresentation, Explicit VR Little Endian, a fresh file meta group
with c2s's Implementation Class UID, no group 0000 elements.
"""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError, redact
from c2s_cli.volume import Volume


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


def _read_source(path: Path) -> Any:
    """The source instance, in a form c2s can write as little endian: a big-endian dataset is decoded element by
    element (with its own encoding) into a new dataset that has no original encoding left to convert."""
    import pydicom

    ds = pydicom.dcmread(path)
    encoding = getattr(ds, "original_encoding", (None, True))
    if encoding[1] is False:  # big endian
        ds = _native(ds)
    return ds


def _native(ds: Any) -> Any:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out = Dataset()
    for elem in ds:  # iterating converts raw elements with the dataset's original encoding
        if elem.VR == "SQ":
            out.add(DataElement(elem.tag, "SQ", Sequence([_native(item) for item in elem.value])))
        else:
            out.add(DataElement(elem.tag, elem.VR, elem.value))
    out.preamble = b"\0" * 128
    return out


def _derive(
    ds: Any, pixels: NDArray[np.float32], *, series_uid: str, derivation: str, software_version: str,
    description_suffix: str, series_number_offset: int, now: _dt.datetime,
) -> int:
    """Turn the source dataset ``ds`` (read with pixels) into its derived copy in place; returns clipped voxels.

    ``pixels`` is the (columns, rows) slice in modality units, or for a multi-frame object all its frames,
    (frames, rows, columns), in the object's frame order.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    from c2s_cli._version import __version__

    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    source_sop = str(ds.SOPInstanceUID)
    source_class = str(ds.SOPClassUID)
    lo, hi, dtype = _stored_range(ds)
    if pixels.ndim == 3:  # a multi-frame object: (frames, rows, columns), each frame with its own rescale
        from c2s_cli.io.enhanced import stored_frames

        stored, clipped = stored_frames(ds, pixels, lo, hi)
        _derived_frame_types(ds)
    else:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        stored = np.rint((pixels.T.astype(np.float64) - intercept) / slope)
        clipped = int(np.count_nonzero((stored < lo) | (stored > hi)))
    bits_stored = int(ds.BitsStored)
    photometric = str(ds.PhotometricInterpretation)
    for elem in [e.tag for e in ds if e.tag.group == 0x0000]:  # command-set elements may not be in a file
        del ds[elem]
    # c2s's own file meta, built anew (nothing of the source's), little endian from here on: set_pixel_data refuses
    # a big-endian syntax, and the output is Explicit VR Little Endian whatever the source's syntax
    ds.file_meta = _file_meta(ExplicitVRLittleEndian, __version__)
    ds.set_pixel_data(np.clip(stored, lo, hi).astype(dtype), photometric, bits_stored, generate_instance_uid=False)
    for tag in ("IconImageSequence", "SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries"):
        if tag in ds:
            delattr(ds, tag)
    sop_uid = derived_uid(source_sop, series_uid)
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPClassUID = source_class
    ds.SeriesInstanceUID = series_uid
    image_type = [str(v) for v in ds.get("ImageType", [])]
    # Enhanced (multi-frame) IODs allow only PRIMARY as value 2 of Image / Frame Type: there only value 1 changes
    ds.ImageType = (["DERIVED", *image_type[1:]] if pixels.ndim == 3 else ["DERIVED", "SECONDARY", *image_type[2:]])
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


def _file_meta(syntax: str, version: str) -> Any:
    """A fresh file meta group: the source's (possibly damaged, unknown VRs, another implementation) is not kept."""
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = f"C2S_{version}"[:16]
    return meta


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
                         f"{redact(str(exc))[:120]})") from None


def _derived_frame_types(ds: Any) -> None:
    """The frames of a derived multi-frame object are DERIVED too (Frame Type value 1 follows Image Type; value 2
    stays PRIMARY, the only value the Enhanced MR IOD allows)."""
    groups = [*(ds.get("SharedFunctionalGroupsSequence") or []), *(ds.get("PerFrameFunctionalGroupsSequence") or [])]
    for g in groups:
        for seq in ("MRImageFrameTypeSequence", "FrameTypeSequence"):
            for item in g.get(seq) or []:
                if "FrameType" in item:
                    values = [str(v) for v in item.FrameType]
                    item.FrameType = ["DERIVED", *values[1:]]


def _units(vol: Volume) -> list[tuple[Path, list[int]]]:
    """The output files of a derived series: one per source file, with the source entries (instances, or the frames
    of a multi-frame file) it holds."""
    units: dict[Path, list[int]] = {}
    if vol.meta.get("layout") == "enhanced":
        for k, (p, _) in enumerate(vol.source):
            units.setdefault(p, []).append(k)
        return list(units.items())
    return [(p, [k]) for k, (p, _) in enumerate(vol.source)]


def _unit_pixels(vol: Volume, data: NDArray[np.float32], unit: tuple[Path, list[int]]) -> NDArray[np.float32]:
    """What :func:`_derive` takes for one output file: a (columns, rows) image, or every frame (frames, rows, cols)."""
    if vol.meta.get("layout") != "enhanced":
        return _instance_pixels(vol, data, unit[1][0])
    from c2s_cli.io.enhanced import FRAME

    n = max(getattr(vol.source[k][1], FRAME) for k in unit[1]) + 1
    frames = np.zeros((n, int(vol.source[unit[1][0]][1].Rows), int(vol.source[unit[1][0]][1].Columns)), np.float32)
    for k in unit[1]:
        frames[getattr(vol.source[k][1], FRAME)] = _instance_pixels(vol, data, k).T
    return frames


def _instance_pixels(vol: Volume, data: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """The (columns, rows) image of source instance ``k``: a slice, or a whole volume tiled back into its mosaic."""
    if vol.meta.get("layout") == "mosaic":
        from c2s_cli.io.mosaic import mosaic_of, pack

        m = mosaic_of(vol.source[k][1])
        frame = data if data.ndim == 3 else data[..., k]
        return pack(frame, m).T  # type: ignore[arg-type]
    if data.ndim == 4:  # a 4-D classic series: instances are stored volume-major
        return data[:, :, k % data.shape[2], k // data.shape[2]]
    return data[:, :, k]


def check_dicom_writable(vol: Volume, *, uid_seed: str = "") -> None:
    """Dry run before any compute: derive and encode the first instance in memory; raises InputError if a derived
    series of this source cannot be written."""
    import io


    first = _units(vol)[0]
    src_path = first[0]
    try:
        ds = _read_source(src_path)
        _derive(ds, _unit_pixels(vol, vol.data, first), series_uid=derived_uid(vol.meta.get("series_uid", ""), uid_seed),
                derivation="c2s dry run", software_version="c2s", description_suffix=" c2s",
                series_number_offset=1000, now=_dt.datetime.now())
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{src_path}: cannot write a derived copy ({type(exc).__name__}: {redact(str(exc))[:120]})") from None
    _encode(ds, io.BytesIO(), src_path)
    for p, header in ([] if vol.meta.get("layout") == "enhanced" else vol.source[1:]):  # every other instance's header
        try:
            from pydicom.filewriter import write_dataset
            from pydicom.filebase import DicomBytesIO

            buf = DicomBytesIO()
            buf.is_little_endian, buf.is_implicit_VR = True, False
            body = copy.copy(header)
            for tag in [e.tag for e in body if e.tag.group == 0x0000]:
                del body[tag]
            write_dataset(buf, body)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for elements it cannot encode
            raise InputError(f"{p}: cannot write a derived copy, a damaged element ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None


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

    now = _dt.datetime.now()
    series_uid = derived_uid(vol.meta.get("series_uid", ""), uid_seed)
    units = _units(vol)
    names = [p.name for p, _ in units]
    unique_names = len(set(names)) == len(names)
    clipped = 0
    for k, unit in enumerate(units):
        src_path = unit[0]
        try:
            ds = _read_source(src_path)
            clipped += _derive(ds, _unit_pixels(vol, data, unit), series_uid=series_uid, derivation=derivation,
                               software_version=software_version, description_suffix=description_suffix,
                               series_number_offset=series_number_offset, now=now)
        except OSError as exc:
            if exc.errno is not None:
                raise
            raise InputError(f"{src_path}: cannot write a derived copy ({str(exc).splitlines()[0][:120]})") from None
        except Exception as exc:  # noqa: BLE001 - the dry run checked the headers; a file changed since is refused
            raise InputError(f"{src_path}: cannot write a derived copy ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
        name = names[k] if unique_names else f"IM_{k + 1:05d}.dcm"
        _encode(ds, out_dir / name, src_path)
    return clipped
