"""Shared fixtures: tiny synthetic volumes, NIfTI files, DICOM series built with pydicom, a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from c2s_bench.phantoms import PATIENT_MARKER, head_phantom, make_series, rician  # noqa: F401 - re-exported to the tests

TINY = {"channels": (8, 16), "emb_dim": 16}  # a tiny U-Net: fast to build, load and run


def c2s(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 600,
        cwd: Path | None = None, process: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI: stdout and stderr apart, NO_COLOR, the exit code as the shell sees it.

    In this process by default (the CLI's ``main()`` with ``sys.argv``, the streams, stdin and the environment
    swapped, and restored after): a fresh interpreter costs ~3 s of imports per call, most of the suite's time. A
    real subprocess with ``process=True``, with ``cwd``, or for every call when ``C2S_TEST_SUBPROCESS=1``.
    """
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    if process or cwd is not None or os.environ.get("C2S_TEST_SUBPROCESS") == "1":
        if cwd is not None:  # the package must stay importable from another working directory
            full_env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                      full_env.get("PYTHONPATH", "")])
        return subprocess.run([sys.executable, "-m", "c2s_cli", *args], capture_output=True, text=True,
                              input=stdin, env=full_env, timeout=timeout, cwd=cwd)
    return _c2s_here(list(args), stdin, full_env)


def _c2s_here(args: list[str], stdin: str | None, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import contextlib
    import io
    import signal

    import torch

    from c2s_cli import cli

    saved = (sys.argv, sys.stdin, dict(os.environ), signal.getsignal(signal.SIGTERM), torch.get_num_threads(),
             signal.getsignal(signal.SIGINT))
    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    try:
        sys.argv = ["c2s", *args]
        sys.stdin = io.StringIO(stdin or "")
        os.environ.clear()
        os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.stdin = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])
        signal.signal(signal.SIGTERM, saved[3])
        signal.signal(signal.SIGINT, saved[5])
        torch.set_num_threads(saved[4])
    return subprocess.CompletedProcess(["c2s", *args], code, out.getvalue(), err.getvalue())


def dcmtk(tool: str) -> str | None:
    """The path of dcmtk's ``tool`` (storescu, storescp, echoscu), or None. pynetdicom installs apps of the same
    names into the virtual environment; they are skipped, the tests want dcmtk's independent implementation."""
    import shutil

    here = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != here)
    found = shutil.which(tool, path=path)
    if found is None:
        return None
    r = subprocess.run([found, "--version"], capture_output=True, text=True)
    return found if "dcmtk" in (r.stdout + r.stderr).lower() else None


def wait_listening(port: int, timeout: float = 30) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    import socket
    import time

    t0 = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.05)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime (to assert that inputs are unchanged)."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def psnr(a: np.ndarray, clean: np.ndarray, mask: np.ndarray | None = None, peak: float = 1.0) -> float:
    """PSNR in dB of ``a`` against ``clean`` (inside ``mask``; data range ``peak``)."""
    m = np.ones(clean.shape, bool) if mask is None else mask
    return float(10 * np.log10(peak**2 / np.mean((a[m] - clean[m]) ** 2)))


@pytest.fixture(scope="session")
def phantom() -> np.ndarray:
    return head_phantom((96, 96, 16), seed=0)


@pytest.fixture
def noisy_nifti(tmp_path: Path, phantom: np.ndarray) -> Path:
    """A Rician-noisy phantom as int16 NIfTI-1 with an oblique affine, codes and units set."""
    data = rician(phantom * 1000, 40.0, seed=3)
    aff = np.array([[0.9, 0.1, 0, -30], [-0.1, 0.9, 0, -40], [0, 0, 2.5, -20], [0, 0, 0, 1]], float)
    img = nib.Nifti1Image(np.rint(data).astype(np.int16), aff)
    img.set_sform(aff, 4)
    img.set_qform(aff, 1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_dim_info(freq=0, phase=1, slice=2)
    p = tmp_path / "scan.nii.gz"
    nib.save(img, str(p))
    return p


@pytest.fixture
def dicom_series(tmp_path: Path, phantom: np.ndarray) -> Path:
    """An oblique, shuffled, unsigned 12-bit series with RescaleSlope 2 and intercept 10."""
    stored = np.clip(np.rint(rician(phantom * 1000, 40.0, seed=5) / 2.0), 0, 4095)
    folder = tmp_path / "series"
    make_series(folder, stored, slope=2.0, intercept=10.0)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small randomly initialised model file (fast to load and run)."""
    import torch

    from c2s_cli.checkpoint import save_model
    from c2s_cli.config import ModelConfig, RunConfig
    from c2s_cli.model import Precond

    torch.manual_seed(0)
    cfg = RunConfig(model=ModelConfig(**TINY))
    model = Precond(cfg.model)
    p = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(p, model.state_dict(), cfg, {"training": {"description": "random init (tests)"}})
    return p


def make_enhanced(
    path: Path, data: np.ndarray, *, slope: float = 1.0, intercept: float = 0.0, spacing: float = 3.0,
    frame_order_seed: int | None = 0,
) -> Path:
    """Write ``data`` (cols, rows, slices[, volumes]) in stored units as one Enhanced MR multi-frame object, frames in
    shuffled order, placed by per-frame Plane Position; 4-D volumes told apart by TemporalPositionIndex."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

    vols = data[..., None] if data.ndim == 3 else data
    nz, nt = vols.shape[2], vols.shape[3]
    theta = np.deg2rad(15)
    row_dir = np.array([np.cos(theta), np.sin(theta), 0.0])
    col_dir = np.array([-np.sin(theta), np.cos(theta), 0.0])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-40.0, -50.0, 20.0])
    frames = [(k, t) for t in range(nt) for k in range(nz)]
    if frame_order_seed is not None:
        np.random.default_rng(frame_order_seed).shuffle(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT_MARKER, "ZZID12345"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 7, 1
    ds.SeriesDescription = "enhanced test"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.Rows, ds.Columns = vols.shape[1], vols.shape[0]
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [0.9, 0.8]
    pm.SliceThickness = spacing
    pm.SpacingBetweenSlices = spacing
    po = Dataset()
    po.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, intercept, "US"
    ft = Dataset()
    ft.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    shared.MRImageFrameTypeSequence = Sequence([ft])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    pixels = np.empty((len(frames), vols.shape[1], vols.shape[0]), np.uint16)
    for f, (k, t) in enumerate(frames):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(v) for v in origin + normal * k * spacing]
        fc = Dataset()
        fc.InStackPositionNumber = k + 1
        fc.StackID = "1"
        fc.TemporalPositionIndex = t + 1
        fc.DimensionIndexValues = [t + 1, 1, k + 1]
        item.PlanePositionSequence = Sequence([pp])
        item.FrameContentSequence = Sequence([fc])
        per.append(item)
        pixels[f] = vols[:, :, k, t].T
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.DimensionOrganizationUID = generate_uid()
    org = Dataset()
    org.DimensionOrganizationUID = ds.DimensionOrganizationUID
    ds.DimensionOrganizationSequence = Sequence([org])
    dims = []
    for pointer in (0x00209128, 0x00209056, 0x00209057):  # TemporalPositionIndex, StackID, InStackPositionNumber
        item = Dataset()
        item.DimensionOrganizationUID = ds.DimensionOrganizationUID
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
        dims.append(item)
    ds.DimensionIndexSequence = Sequence(dims)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------ safety helpers (test_safety*, issues 17, 33)

def one_error_line(r, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("c2s: error")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".c2s-tmp-" in p.name or p.name.endswith((".c2s-old", ".c2s-lock"))]
    assert not left, left


@pytest.fixture
def small_nifti(tmp_path: Path) -> Path:
    data = rician(head_phantom((40, 40, 8), seed=0) * 1000, 40.0, seed=1)
    p = tmp_path / "in" / "x.nii.gz"
    p.parent.mkdir()
    nib.save(nib.Nifti1Image(np.rint(data).astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0])), str(p))
    return p


@pytest.fixture
def small_series(tmp_path: Path) -> Path:
    stored = np.clip(np.rint(rician(head_phantom((40, 40, 6), seed=0) * 1000, 40.0, seed=2)), 0, 4095)
    folder = tmp_path / "series"
    make_series(folder, stored)
    return folder
