"""Nothing is ever lost (issue 17): one regression test per reproduced case.

Each asserts the exit code and the single error line, that the inputs' bytes are unchanged, that unrelated files are
still there, and that nothing is left under any final or temporary name.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import c2s, make_series, no_temporaries, one_error_line, snapshot
from c2s_bench.phantoms import head_phantom, rician


def test_force_never_deletes_the_input_or_unrelated_files(small_series: Path, tiny_model: Path, tmp_path: Path) -> None:
    """The high-severity case: ``-o`` a folder holding the input and a notes file, with --force."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copytree(small_series, proj / "series")
    (proj / "notes.txt").write_text("x")
    before = snapshot(proj)
    r = c2s("denoise", str(proj / "series"), "-o", str(proj), "--force", "--model", str(tiny_model))
    one_error_line(r, 2, str(proj), "contains the input")
    assert snapshot(proj) == before
    no_temporaries(tmp_path)
    # "-o ." from inside the project: the same refusal
    r = c2s("denoise", "series", "-o", ".", "--force", "--model", str(tiny_model), cwd=proj)
    one_error_line(r, 2, "contains the input")
    assert snapshot(proj) == before


def test_force_replaces_only_c2s_outputs(small_series: Path, tiny_model: Path, tmp_path: Path) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("chapter 1")
    r = c2s("denoise", str(small_series), "-o", str(thesis), "--force", "--model", str(tiny_model))
    one_error_line(r, 2, "c2s did not write")
    assert (thesis / "thesis.tex").read_text() == "chapter 1" and len(list(thesis.iterdir())) == 1
    # a previous c2s output is replaced under --force, and only then
    out = tmp_path / "derived"
    assert c2s("denoise", str(small_series), "-o", str(out), "--model", str(tiny_model)).returncode == 0
    first = snapshot(out)
    r = c2s("denoise", str(small_series), "-o", str(out), "--model", str(tiny_model))
    one_error_line(r, 2, "exists", "--force")
    r = c2s("denoise", str(small_series), "-o", str(out), "--model", str(tiny_model), "--force", "--strength", "2")
    assert r.returncode == 0, r.stderr
    assert snapshot(out).keys() == first.keys() and snapshot(out) != first
    # a foreign NIfTI file is not replaced either
    foreign = tmp_path / "mine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(foreign))
    blob = foreign.read_bytes()
    r = c2s("denoise", str(small_series), "-o", str(foreign), "--model", str(tiny_model), "--force")
    one_error_line(r, 2, "c2s did not write")
    assert foreign.read_bytes() == blob
    no_temporaries(tmp_path)


def test_batch_outputs_never_collide(small_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(small_nifti, a / "x.nii.gz")
    shutil.copy(small_nifti, b / "x.nii.gz")
    for extra in ([], ["--force"], ["--skip-existing"]):
        r = c2s("denoise", str(a / "x.nii.gz"), str(b / "x.nii.gz"), "-o", str(tmp_path / "o"), "--model",
                str(tiny_model), *extra)
        one_error_line(r, 2, "would both be written to")
        assert not (tmp_path / "o").exists()  # refused before anything was made
    r = c2s("denoise", "-", "-o", str(tmp_path / "o"), "--model", str(tiny_model),
            stdin=f"{a / 'x.nii.gz'}\n{b / 'x.nii.gz'}\n")
    one_error_line(r, 2, "would both be written to")


def test_series_with_the_same_number_get_distinct_outputs(tmp_path: Path, tiny_model: Path) -> None:
    stored = np.clip(np.rint(rician(head_phantom((32, 32, 4), seed=0) * 1000, 40.0, seed=2)), 0, 4095)
    make_series(tmp_path / "study" / "a", stored, series_number=7)
    make_series(tmp_path / "study" / "b", stored, series_number=7)
    r = c2s("denoise", str(tmp_path / "study"), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--json")
    assert r.returncode == 0, r.stderr
    outs = [json.loads(line)["output"] for line in r.stdout.splitlines()]
    assert len(outs) == 2 and len(set(outs)) == 2 and all(Path(o).is_dir() for o in outs)


def test_outputs_are_checked_against_every_input(small_nifti: Path, small_series: Path, tiny_model: Path,
                                                 tmp_path: Path) -> None:
    work = small_nifti.parent
    other = work / "x_c2s.nii.gz"
    shutil.copy(small_nifti, other)
    before = snapshot(tmp_path)
    r = c2s("denoise", str(small_nifti), str(other), "-o", str(work), "--force", "--model", str(tiny_model))
    one_error_line(r, 2, "is the input")
    r = c2s("denoise", str(small_nifti), str(small_series), "-o", str(small_series), "--model", str(tiny_model))
    one_error_line(r, 2, str(small_series))
    assert snapshot(tmp_path) == before
    no_temporaries(tmp_path)


def test_every_extra_output_is_checked(small_nifti: Path, small_series: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.nii.gz"
    before = snapshot(tmp_path)
    for flag in ("--residual", "--preview"):
        r = c2s("denoise", str(small_nifti), "-o", str(out), flag, str(out), "--model", str(tiny_model))
        one_error_line(r, 2, "same path")
    r = c2s("denoise", str(small_nifti), "-o", str(out), "--report", str(small_nifti), "--model", str(tiny_model))
    one_error_line(r, 2, "--report", "input")
    r = c2s("denoise", str(small_nifti), "-o", str(out), "--report", str(out), "--model", str(tiny_model))
    one_error_line(r, 2)
    r = c2s("denoise", str(small_series), "-o", str(out), "--report", str(small_series / "r.jsonl"),
            "--model", str(tiny_model))
    one_error_line(r, 2, "--report", "input")
    r = c2s("train", str(small_series), "-o", str(tmp_path / "m.safetensors"), "--run-dir",
            str(small_series / "run"), "--steps", "1")
    one_error_line(r, 2, "--run-dir")
    assert snapshot(tmp_path) == before  # nothing written, no input touched
    no_temporaries(tmp_path)


def test_second_writer_of_an_output_is_refused(small_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    from c2s_cli.io.atomic import OutputLock

    out = tmp_path / "o.nii.gz"
    with OutputLock(out):  # another c2s process holds the output
        r = c2s("denoise", str(small_nifti), "-o", str(out), "--model", str(tiny_model))
        one_error_line(r, 2, "another c2s process")
        assert not out.exists()
    assert not (tmp_path / ".o.nii.gz.c2s-lock").exists()
    assert c2s("denoise", str(small_nifti), "-o", str(out), "--model", str(tiny_model)).returncode == 0
    no_temporaries(tmp_path)


def _damage_deflate(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 8] = bytes(b ^ 0x5A for b in raw[mid : mid + 8])
    path.write_bytes(bytes(raw))


def test_damaged_gzip_is_refused_not_read(small_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    shutil.copy(small_nifti, bad)
    _damage_deflate(bad)
    r = c2s("denoise", str(bad), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tiny_model))
    one_error_line(r, 4, "bad.nii.gz", "damaged gzip")
    assert not (tmp_path / "o.nii.gz").exists()
    # a valid stream whose CRC-32 trailer is wrong (the data decompress cleanly) is refused too
    crc = tmp_path / "crc.nii.gz"
    raw = bytearray(small_nifti.read_bytes())
    raw[-8] ^= 0xFF
    crc.write_bytes(bytes(raw))
    one_error_line(c2s("info", str(crc)), 4, "damaged gzip")


def test_header_size_is_checked_before_allocating(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1200, 1200, 1300))
    hdr.set_data_dtype(np.float64)
    p = tmp_path / "huge.nii.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4)
    assert p.stat().st_size < 200
    r = c2s("info", str(p), "--no-noise", timeout=60)
    one_error_line(r, 4, "huge.nii.gz", "declares")


def test_dicom_slices_are_never_dropped_silently(small_series: Path, tiny_model: Path, tmp_path: Path) -> None:
    import pydicom

    files = sorted(small_series.glob("*.dcm"))
    pristine = files[2].read_bytes()
    ds = pydicom.dcmread(files[2])
    del ds.SeriesInstanceUID
    ds.save_as(files[2])
    r = c2s("denoise", str(small_series), "-o", str(tmp_path / "o"), "--model", str(tiny_model))
    one_error_line(r, 4, files[2].name, "SeriesInstanceUID")
    # an impossible element length in another file (the DICM marker says it is DICOM)
    raw = bytearray(files[3].read_bytes())
    pos = raw.find(b"\x08\x00\x3e\x10")  # (0008,103E) SeriesDescription, explicit VR LO
    raw[pos + 6 : pos + 8] = b"\xff\xfe"
    files[3].write_bytes(bytes(raw))
    files[2].write_bytes(pristine)  # repair the first damage
    r = c2s("denoise", str(small_series), "-o", str(tmp_path / "o"), "--model", str(tiny_model))
    assert r.returncode == 4 and files[3].name in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_temporary_names_are_never_inputs_and_stale_ones_are_cleaned(small_series: Path, tiny_model: Path,
                                                                       tmp_path: Path) -> None:
    stale = small_series / ".o.c2s-tmp-abc123"  # what a SIGKILLed run leaves
    stale.mkdir()
    shutil.copy(next(small_series.glob("*.dcm")), stale / "x.dcm")
    r = c2s("info", str(small_series), "--json", "--no-noise")
    assert r.returncode == 0 and json.loads(r.stdout)["files"] == 6
    shutil.rmtree(stale)
    out = tmp_path / "o.nii.gz"
    (tmp_path / ".o.nii.gz.c2s-tmp-dead.nii.gz").write_bytes(b"partial")
    assert c2s("denoise", str(small_series), "-o", str(out), "--model", str(tiny_model)).returncode == 0
    no_temporaries(tmp_path)


def test_fifo_inputs_and_models_do_not_hang(small_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    r = c2s("denoise", str(fifo), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tiny_model), timeout=60)
    one_error_line(r, 4, "not a regular file")
    weights = tmp_path / "weights"
    weights.mkdir()
    os.mkfifo(weights / "default.safetensors")
    r = c2s("denoise", str(small_nifti), "-o", str(tmp_path / "o.nii.gz"), env={"C2S_WEIGHTS": str(weights)},
            timeout=60)
    one_error_line(r, 4, "not a regular file")
    (weights / "default.safetensors").unlink()
    (weights / "default.safetensors").symlink_to("/dev/zero")
    r = c2s("denoise", str(small_nifti), "-o", str(tmp_path / "o.nii.gz"), env={"C2S_WEIGHTS": str(weights)},
            timeout=60)
    one_error_line(r, 4, "not a regular file")


@pytest.mark.parametrize("change", [{"sigma_data": 0.0}, {"channels": [4096, 4096, 4096, 4096]}])
def test_hostile_model_configs_are_refused_before_building(change: dict, tiny_model: Path, small_nifti: Path,
                                                          tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(tiny_model), "np") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    cfg["model"].update(change)
    meta["config"] = json.dumps(cfg)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    r = c2s("denoise", str(small_nifti), "-o", str(tmp_path / "o.nii.gz"), "--model", str(bad), timeout=60)
    one_error_line(r, 4, "out of range" if "sigma_data" in change else "channels")
    assert not (tmp_path / "o.nii.gz").exists()


def test_keep_going_records_a_missing_input(small_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    r = c2s("denoise", str(small_nifti), str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o"), "--model",
            str(tiny_model), "--keep-going", "--json")
    assert r.returncode == 3, r.stderr
    recs = {Path(d["input"]).name: d for d in map(json.loads, r.stdout.splitlines())}
    assert recs["x.nii.gz"]["status"] == "ok" and recs["missing.nii.gz"]["status"] == "failed"
    assert "no such file" in recs["missing.nii.gz"]["error"]


def test_write_errors_are_one_line(tmp_path: Path) -> None:
    """A full disk during a write: one C2SError line, nothing left under the final or a temporary name."""
    from c2s_cli.errors import C2SError
    from c2s_cli.io.atomic import atomic_path

    final = tmp_path / "o.nii.gz"
    with pytest.raises(C2SError, match="no space left") as info:
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "\n" not in str(info.value)
    assert not final.exists()
    no_temporaries(tmp_path)


def test_unwritable_batch_folder_fails_before_the_model_runs(small_nifti: Path, tiny_model: Path,
                                                              tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = c2s("denoise", "-", "-o", str(ro / "out"), "--model", str(tiny_model), stdin=f"{small_nifti}\n")
        one_error_line(r, 2, "not writable")
    finally:
        ro.chmod(0o700)


def test_damaged_file_meta_and_zero_spacing_never_fail_after_compute(small_series: Path, tiny_model: Path,
                                                                     tmp_path: Path) -> None:
    """Write errors are found before the network: a source's file meta is never copied (an unknown VR in it is
    harmless), and a geometry NIfTI cannot express (PixelSpacing 0) is refused up front with one line."""
    import pydicom

    files = sorted(small_series.glob("*.dcm"))
    raw = bytearray(files[-1].read_bytes())
    pos = raw.find(b"\x02\x00\x13\x00SH")  # (0002,0013) ImplementationVersionName
    if pos < 0:
        pos = raw.find(b"\x02\x00\x12\x00UI")
    raw[pos + 4 : pos + 6] = b"WN"  # an unknown VR in the file meta of the last instance
    files[-1].write_bytes(bytes(raw))
    out = tmp_path / "o"
    r = c2s("denoise", str(small_series), "-o", str(out), "--model", str(tiny_model))
    assert r.returncode == 0, r.stderr
    ds = pydicom.dcmread(sorted(out.glob("*.dcm"))[-1])
    assert str(ds.file_meta.ImplementationClassUID) == "1.2.826.0.1.3680043.10.1437.1"
    for p in files[:-1]:
        d = pydicom.dcmread(p)
        d.PixelSpacing = [0, 0]
        d.save_as(p)
    d = pydicom.dcmread(files[-1], force=True)
    d.PixelSpacing = [0, 0]
    d.save_as(files[-1], enforce_file_format=True)
    r = c2s("denoise", str(small_series), "-o", str(tmp_path / "z.nii.gz"), "--model", str(tiny_model))
    assert r.returncode == 4 and r.stderr.count("c2s: error") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "z.nii.gz").exists()
    no_temporaries(tmp_path)


def test_absurd_intensities_are_refused_before_the_network(tiny_model: Path, tmp_path: Path) -> None:
    """A float NIfTI with finite but absurd values (a fuzzed header or a broken scaling): one line, exit 4, not a
    network that overflows into NaN after the compute (the fuzz campaign's exit-1 cases)."""
    data = np.full((24, 24, 6), 100.0, np.float32)
    data[3, 3, 3] = 3e38
    p = tmp_path / "absurd.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    r = c2s("denoise", str(p), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tiny_model), "--sigma", "5")
    one_error_line(r, 4, "absurd.nii", "float32")
    assert not (tmp_path / "o.nii.gz").exists()
