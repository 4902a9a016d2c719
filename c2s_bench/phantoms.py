"""Synthetic head phantoms with known noise and a synthetic DICOM series writer (fixed seeds): shared by the tests
and the research tools (the fuzzer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage


def head_phantom(shape: tuple[int, int, int] = (96, 96, 24), seed: int = 0) -> np.ndarray:
    """Clean (X, Y, Z) magnitude phantom: air 0, scalp 0.9, CSF 0.25, GM 0.6, WM 1.0, smooth bias field, texture.

    About half the field of view is air.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y, z = np.meshgrid(
        np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), np.linspace(-1, 1, nz), indexing="ij"
    )
    r = np.sqrt((x / 0.75) ** 2 + (y / 0.85) ** 2 + (z / 1.3) ** 2)
    img = np.zeros(shape, np.float32)
    img[r < 1.0] = 0.9
    img[r < 0.92] = 0.25
    img[r < 0.86] = 0.6
    wm = np.sqrt((x / 0.55) ** 2 + (y / 0.65) ** 2 + (z / 1.1) ** 2) < 0.8
    img[wm] = 1.0
    ventricles = (np.abs(x) < 0.08) & (np.abs(y) < 0.3) & (np.abs(z) < 0.5)
    img[ventricles] = 0.25
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    texture /= texture.std() + 1e-12
    img = np.where(img > 0, img * (1 + 0.04 * texture), 0)
    bias = 1 + 0.15 * x - 0.1 * y + 0.05 * z
    return (img * bias).astype(np.float32)


def rician(clean: np.ndarray, sigma: float, seed: int = 1, coils: int = 1) -> np.ndarray:
    """Magnitude of ``coils`` complex channels with i.i.d. N(0, σ²) noise (sum of squares for coils > 1).

    The signal is put in the first channel, so the result is non-central χ with 2N degrees of freedom.
    """
    from c2s_cli.noise.synth import rician as synth

    return synth(clean, sigma, np.random.default_rng(seed), coils)


def zero_filled_rician(clean: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    """Rician data interpolated ×2 in-plane by zero-filling k-space (spatially correlated noise), same shape."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = clean.shape
    small = clean[::2, ::2] + sigma * (rng.standard_normal(clean[::2, ::2].shape) + 1j * rng.standard_normal(clean[::2, ::2].shape))
    k = np.fft.fftshift(np.fft.fft2(small, axes=(0, 1)), axes=(0, 1))
    big = np.zeros((nx, ny, nz), complex)
    sx, sy = small.shape[0], small.shape[1]
    big[(nx - sx) // 2 : (nx - sx) // 2 + sx, (ny - sy) // 2 : (ny - sy) // 2 + sy] = k
    img = np.fft.ifft2(np.fft.ifftshift(big, axes=(0, 1)), axes=(0, 1)) * (nx * ny) / (sx * sy)
    # keep the per-pixel noise std equal to σ per channel (the interpolation divides it by 2)
    return (np.abs(img) * 1.0).astype(np.float32)


def smooth_phantom(shape: tuple[int, int, int] = (160, 160, 24), seed: int = 0) -> np.ndarray:
    """Nested ellipsoids (scalp 0.9, GM 0.6, WM 1.0) × a smooth 5 % texture × a bias field, peak ~1000."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt((x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.5) ** 2)
    img = np.where(r < 1, 0.9, 0.0)
    img[r < 0.9] = 0.6
    img[np.sqrt((x / 0.55) ** 2 + (y / 0.65) ** 2 + (z / 1.2) ** 2) < 0.8] = 1.0
    t = ndimage.gaussian_filter(rng.standard_normal(shape), 6.0)
    return (img * (1 + 0.05 * t / t.std()) * (1 + 0.15 * x - 0.1 * y) * 1000).astype(np.float32)


def inplane_centre_high(shape: tuple[int, int, int]) -> np.ndarray:
    """σ = 30 at the edges rising to 75 at the in-plane centre (a Gaussian bump of 40 voxels), the same in every slice."""
    c = np.array(shape) / 2
    xx, yy, _ = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (30 + 45 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * 40.0**2))).astype(np.float32)


# a patient name that must never appear in a message, a record or a derived file
PATIENT_MARKER = "ZZPATIENTMARKER^SECRET"


def make_series(
    folder: Path,
    data: np.ndarray,
    *,
    signed: bool = False,
    slope: float = 1.0,
    intercept: float = 0.0,
    oblique: bool = True,
    spacing: float = 3.0,
    series_uid: str | None = None,
    series_number: int = 5,
    shuffle_seed: int | None = 0,
    positions: list[float] | None = None,
    patient_name: str = PATIENT_MARKER,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
) -> list[Path]:
    """Write ``data`` (cols, rows, slices) in stored units as a classic MR series, files in shuffled order
    (``image_type``: the ImageType values; Siemens marks a phase image with P as the third)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    theta = np.deg2rad(20 if oblique else 0)
    row_dir = np.array([np.cos(theta), np.sin(theta), 0.0])
    col_dir = np.array([0.0, np.cos(theta / 2), -np.sin(theta / 2)]) if oblique else np.array([0.0, 1.0, 0.0])
    col_dir = col_dir - row_dir * (row_dir @ col_dir)
    col_dir /= np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-50.0, -60.0, 30.0])
    n = data.shape[2]
    order = np.arange(n)
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    paths = []
    for idx, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        p = folder / f"f{idx:03d}.dcm"
        ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop
        ds.PatientName = patient_name
        ds.PatientID = "ZZID12345"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "MR"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "T2 TSE test"
        ds.InstanceNumber = int(n - k)  # deliberately not the spatial order
        ds.ImageType = list(image_type)
        pos = origin + normal * (positions[k] if positions is not None else k * spacing)
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [0.8, 0.7]  # row spacing, column spacing
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12 if not signed else 16
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.WindowCenter = 500
        ds.WindowWidth = 1000
        ds.RepetitionTime = 4000
        ds.EchoTime = 90
        ds.add_new(0x00191010, "LO", "private-keep-me")
        stored = data[:, :, k].T
        ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths
