"""The derived DICOM series checked by independent tools: dciodvfy (dicom3tools), dcm2niix, dcmtk storescp/storescu.

Skipped where a tool is not installed (.ci/run installs them from Debian's packages).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import dcmtk, wait_listening

from c2s_cli.io import read_volume
from c2s_cli.io.dicom_write import write_dicom_series

REAL = Path(__file__).parent / "data" / "ge_pd_series"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed")
    return path


@pytest.fixture(params=["synthetic", "real", "big-endian", "implicit", "mosaic"])
def pair(request: pytest.FixtureRequest, dicom_series: Path, tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A source (a folder) and its derived series. big-endian / implicit: pydicom's own MR_small test files (Explicit
    VR Big Endian, Implicit VR Little Endian), written back as Explicit VR Little Endian."""
    if request.param in ("big-endian", "implicit"):
        from pydicom.data import get_testdata_file

        name = "MR_small_bigendian.dcm" if request.param == "big-endian" else "MR_small_implicit.dcm"
        src = tmp_path / "src"
        src.mkdir()
        shutil.copy(get_testdata_file(name), src / name)
    elif request.param == "mosaic":
        src = Path(__file__).parent / "data" / "siemens_pasl_mosaic"  # two 4-D mosaic volumes (Siemens, CSA)
    else:
        src = dicom_series if request.param == "synthetic" else REAL
    vol, _ = read_volume(src)
    out = tmp_path / "derived"
    out.mkdir()
    denoised = (vol.data * 0.8 + 3.0).astype(np.float32)
    write_dicom_series(vol, denoised, out, derivation="c2s conformance test", software_version="c2s test")
    return src, out, denoised


def _errors(tool: str, path: Path, inherited_uids: frozenset[str] = frozenset()) -> set[str]:
    """dciodvfy's error kinds for one file (values that legitimately differ, UIDs and dates, masked).

    An 'Illegal root for UID' error about a UID of the *source* (which the derived file must reference) is the
    source's own defect, not a new one, and is left out.
    """
    r = subprocess.run([tool, str(path)], capture_output=True, text=True)
    out = set()
    for ln in (r.stdout + r.stderr).splitlines():
        ln = ln.strip()
        if not ln.startswith("Error"):
            continue
        quoted = re.findall(r'"([^"]*)"', ln)
        if "Illegal root for UID" in ln and quoted and quoted[0] in inherited_uids:
            continue
        out.add(re.sub(r"<[^>]*>|\d+", "#", ln))
    return out


def test_dciodvfy_adds_no_errors(pair: tuple[Path, Path, np.ndarray]) -> None:
    tool = _need("dciodvfy")
    src, out, _ = pair
    src_errors: set[str] = set()
    for p in src.iterdir():
        src_errors |= _errors(tool, p)
    src_uids = frozenset(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in src.iterdir())
    for p in out.iterdir():
        new = _errors(tool, p, src_uids) - src_errors
        assert not new, f"{p.name}: {new}"


def _dcm2niix(tool: str, folder: Path, dest: Path) -> nib.Nifti1Image:
    dest.mkdir()
    subprocess.run([tool, "-z", "n", "-f", "out", "-o", str(dest), str(folder)], capture_output=True, check=True)
    files = sorted(dest.glob("*.nii"))
    assert len(files) == 1, files
    return nib.load(str(files[0]))


def test_dcm2niix_same_geometry_and_values(pair: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    tool = _need("dcm2niix")
    src, out, denoised = pair
    a = _dcm2niix(tool, src, tmp_path / "a")
    b = _dcm2niix(tool, out, tmp_path / "b")
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    # dcm2niix's voxel order differs from c2s's (it flips rows): compare through world coordinates
    ours = read_volume(out)[0]
    data = b.get_fdata()
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    world = nib.affines.apply_affine(b.affine, ijk)
    back = np.rint(nib.affines.apply_affine(np.linalg.inv(ours.affine), world)).astype(int)
    slope = float(pydicom.dcmread(next(out.iterdir())).get("RescaleSlope", 1) or 1)
    frames = range(denoised.shape[3]) if denoised.ndim == 4 else [None]
    for t in frames:
        got = (data if t is None else data[..., t]).reshape(-1)
        want = (denoised if t is None else denoised[..., t])[back[:, 0], back[:, 1], back[:, 2]]
        assert np.max(np.abs(got - want)) <= slope / 2 + 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_storescp_loopback_accepts_series(pair: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    scp, scu = dcmtk("storescp"), dcmtk("storescu")
    if scp is None or scu is None:
        pytest.skip("dcmtk not installed")
    src, out, _ = pair
    port = _free_port()
    store = tmp_path / "pacs"
    store.mkdir()
    server = subprocess.Popen([scp, "-od", str(store), "--accept-all", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        files = sorted(str(p) for p in out.iterdir())
        r = subprocess.run([scu, "127.0.0.1", str(port), *files], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
    stored = [pydicom.dcmread(p) for p in store.iterdir()]
    assert len(stored) == len(files)
    source_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in src.iterdir()}
    uids = [str(d.SOPInstanceUID) for d in stored]
    assert len(set(uids)) == len(uids) and source_uids.isdisjoint(uids)


def test_4d_classic_series_matches_dcm2niix(tmp_path: Path, phantom: np.ndarray) -> None:
    """A 4-D classic series (three dynamics, TemporalPositionIdentifier): c2s's volume and dcm2niix's NIfTI agree
    voxel for voxel through world coordinates, and so does the derived series c2s writes."""
    tool = _need("dcm2niix")
    from test_io_dicom import _four_d

    known = _four_d(tmp_path / "s", phantom, 3, "TemporalPositionIdentifier")
    vol, _ = read_volume(tmp_path / "s")
    out = tmp_path / "derived"
    out.mkdir()
    write_dicom_series(vol, vol.data + 5, out)
    for folder, expect in ((tmp_path / "s", known), (out, known + 5)):
        ref = _dcm2niix(tool, folder, tmp_path / f"n_{folder.name}")
        assert ref.shape == expect.shape
        ours = read_volume(folder)[0]
        data = ref.get_fdata()
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
        back = nib.affines.apply_affine(np.linalg.inv(ours.affine), nib.affines.apply_affine(ref.affine, ijk))
        assert np.abs(back - np.rint(back)).max() < 1e-3
        b = np.rint(back).astype(int)
        for t in range(3):
            np.testing.assert_allclose(data[..., t].reshape(-1), expect[b[:, 0], b[:, 1], b[:, 2], t], atol=1e-3)
