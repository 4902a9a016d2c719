"""Hostile inputs: one clear line, a distinct exit code, no traceback, nothing left behind, sources untouched."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hostile import CASES
from conftest import c2s, snapshot


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input(case: str, tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    path, code, fragment = CASES[case](root)
    before = snapshot(root)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / ("o.nii.gz" if path.name.endswith((".nii", ".nii.gz")) else "o_series")
    r = c2s("denoise", os.fsdecode(path), "-o", str(out), "--model", str(tiny_model))
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    if code:
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("c2s: error:")]
        assert len(lines) == 1 and fragment in lines[0], r.stderr
        assert list(outdir.iterdir()) == []
    else:
        assert out.exists() and fragment in r.stderr.replace("\n", " ")
        assert [p.name for p in outdir.iterdir()] == [out.name]
    assert snapshot(root) == before


def test_corrupted_models_are_refused(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    raw = tiny_model.read_bytes()
    cases = {"trunc.safetensors": raw[: len(raw) // 2], "zero.safetensors": b"",
             "junk.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tmp_path / name))
        assert r.returncode == 4 and name in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    r = c2s("denoise", str(noisy_nifti), "-o", str(ro / "o.nii.gz"), "--model", str(tiny_model))
    assert r.returncode == 2 and "not writable" in r.stderr


def test_read_only_output_check_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writability check itself (root bypasses permissions, so simulate os.access)."""
    from c2s_cli.errors import OutputError
    from c2s_cli.io import atomic

    monkeypatch.setattr(atomic.os, "access", lambda p, mode: False)
    with pytest.raises(OutputError, match="not writable"):
        atomic.check_output(tmp_path / "o.nii.gz", [], force=False)


def test_damaged_patient_name_is_not_logged(tmp_path: Path, tiny_model: Path) -> None:
    """pydicom quotes invalid values in its warnings; c2s must not pass them (patient data) to the logs."""
    import numpy as np
    import pydicom

    from conftest import PATIENT_MARKER, make_series

    folder = tmp_path / "s"
    make_series(folder, np.full((32, 32, 3), 100.0))
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        ds.PatientSex = PATIENT_MARKER  # not a valid CS value: pydicom warns, quoting it
        ds.PatientID = PATIENT_MARKER + "X" * 70  # too long for LO
        ds.save_as(p)
    r = c2s("info", str(folder), "--json")
    assert PATIENT_MARKER not in r.stderr
    r = c2s("denoise", str(folder), "-o", str(tmp_path / "o"), "--model", str(tiny_model))
    assert PATIENT_MARKER not in r.stderr
