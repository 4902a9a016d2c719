"""Enhanced MR multi-frame DICOM (Enhanced MR, Legacy Converted Enhanced MR, Enhanced MR Color holding grayscale):
one file holds a whole 3-D or 4-D series, each frame placed by its functional groups.

Reading: every frame becomes a light per-frame header (position, orientation, pixel spacing, rescale, and what tells
volumes apart: TemporalPositionIndex, EffectiveEchoTime, the diffusion b-value and gradient), so the classic series
logic sorts the frames along the slice normal, checks their spacing and splits several frames per position into
volumes. Writing: one derived multi-frame object per source file, every frame replaced in its original order (each
with its own rescale), the shared and per-frame functional groups kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError, redact

FRAME = "_c2s_frame"  # the attribute of a per-frame header that holds its frame index


def is_enhanced(ds: Any) -> bool:
    """A multi-frame image whose frames are described by functional groups."""
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in ds


def _group(ds: Any, f: int, seq: str) -> Any:
    """Functional group ``seq`` of frame ``f``: per-frame first, else shared (None if absent)."""
    per = ds.PerFrameFunctionalGroupsSequence[f]
    if seq in per and len(per[seq].value):
        return per[seq][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and seq in shared[0] and len(shared[0][seq].value):
        return shared[0][seq][0]
    return None


def frame_headers(path: Path, ds: Any) -> list[tuple[Path, Any]]:
    """One light header per frame, as classic single-frame instances would carry them."""
    from pydicom.dataset import Dataset

    n = int(ds.NumberOfFrames)
    if len(ds.PerFrameFunctionalGroupsSequence) != n:
        raise InputError(f"{path}: {len(ds.PerFrameFunctionalGroupsSequence)} per-frame functional groups for "
                         f"{n} frames")
    import hashlib

    file_id = int(hashlib.sha256(str(path).encode()).hexdigest()[:12], 16)
    out = []
    for f in range(n):
        pos, ori, meas = (_group(ds, f, s) for s in ("PlanePositionSequence", "PlaneOrientationSequence",
                                                      "PixelMeasuresSequence"))
        if pos is None or ori is None or meas is None or "PixelSpacing" not in meas:
            raise InputError(f"{path}: frame {f + 1} has no plane position, orientation or pixel spacing in its "
                             "functional groups; c2s cannot place it in space")
        h = Dataset()
        h.ImagePositionPatient = pos.ImagePositionPatient
        h.ImageOrientationPatient = ori.ImageOrientationPatient
        h.PixelSpacing = meas.PixelSpacing
        for tag in ("SliceThickness", "SpacingBetweenSlices"):
            if tag in meas:
                setattr(h, tag, meas.get(tag))
        h.Rows, h.Columns = ds.Rows, ds.Columns
        h.SOPInstanceUID = f"1.{file_id}.{f + 1}"  # unique per frame and file, for the series logic only
        h.SOPClassUID = ds.SOPClassUID
        h.SeriesInstanceUID = ds.SeriesInstanceUID
        h.InstanceNumber = f + 1
        h.SamplesPerPixel = ds.get("SamplesPerPixel", 1)
        content = _group(ds, f, "FrameContentSequence")
        if content is not None and content.get("TemporalPositionIndex") is not None:
            h.TemporalPositionIdentifier = int(content.TemporalPositionIndex)
        echo = _group(ds, f, "MREchoSequence")
        if echo is not None and echo.get("EffectiveEchoTime") is not None:
            h.TriggerTime = float(echo.EffectiveEchoTime)  # a volume key of the classic logic ("TriggerTime")
        diff = _group(ds, f, "MRDiffusionSequence")
        if diff is not None and diff.get("DiffusionBValue") is not None:
            h.add_new(0x00189087, "FD", float(diff.DiffusionBValue))
            grad = diff.get("DiffusionGradientDirectionSequence")
            vec = grad[0].get("DiffusionGradientOrientation") if grad else None
            h.add_new(0x00189089, "FD", [float(v) for v in vec] if vec else [0.0, 0.0, 0.0])
        rescale = _group(ds, f, "PixelValueTransformationSequence")
        h.RescaleSlope = float(rescale.get("RescaleSlope", 1) or 1) if rescale else float(ds.get("RescaleSlope", 1) or 1)
        h.RescaleIntercept = (float(rescale.get("RescaleIntercept", 0) or 0) if rescale
                              else float(ds.get("RescaleIntercept", 0) or 0))
        setattr(h, FRAME, f)
        out.append((path, h))
    return out


def read_frames(path: Path) -> NDArray[np.float32]:
    """All frames of a multi-frame file in modality units, (frames, rows, columns), each with its own rescale."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        arr = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable pixel data
        raise InputError(f"{path}: pixel data unreadable ({type(exc).__name__}: {redact(str(exc))[:120]})") from None
    arr = arr.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    for f in range(arr.shape[0]):
        rescale = _group(ds, f, "PixelValueTransformationSequence")
        slope = float(rescale.get("RescaleSlope", 1) or 1) if rescale else float(ds.get("RescaleSlope", 1) or 1)
        inter = float(rescale.get("RescaleIntercept", 0) or 0) if rescale else float(ds.get("RescaleIntercept", 0) or 0)
        arr[f] = arr[f] * np.float32(slope) + np.float32(inter)
    return arr


def stored_frames(ds: Any, frames: NDArray[np.float32], lo: int, hi: int) -> tuple[NDArray[np.float64], int]:
    """Modality-unit frames (frames, rows, columns) → stored values with each frame's own rescale, clipped to
    [lo, hi]; and the number of clipped voxels."""
    out = np.empty(frames.shape, np.float64)
    for f in range(frames.shape[0]):
        rescale = _group(ds, f, "PixelValueTransformationSequence")
        slope = float(rescale.get("RescaleSlope", 1) or 1) if rescale else float(ds.get("RescaleSlope", 1) or 1)
        inter = float(rescale.get("RescaleIntercept", 0) or 0) if rescale else float(ds.get("RescaleIntercept", 0) or 0)
        out[f] = np.rint((frames[f].astype(np.float64) - inter) / slope)
    clipped = int(np.count_nonzero((out < lo) | (out > hi)))
    return np.clip(out, lo, hi), clipped
