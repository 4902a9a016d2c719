"""The command line, driven as users drive it: a subprocess (exit codes, stdout/stderr separation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import PATIENT_MARKER, c2s, make_series, snapshot  # noqa: F401 - snapshot re-exported


def test_help_is_fast_and_lists_commands() -> None:
    r = c2s("--help")
    assert r.returncode == 0
    for cmd in ("denoise", "train", "info"):
        assert cmd in r.stdout
    r = c2s("--version")
    assert r.returncode == 0 and r.stdout.startswith("c2s ")
    out = subprocess.run([sys.executable, "-c", "import sys, c2s_cli.cli; print('torch' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "False"  # no torch import at start-up


def test_info_nifti_text_and_json(noisy_nifti: Path) -> None:
    r = c2s("info", str(noisy_nifti), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kind"] == "nifti" and d["shape"] == [96, 96, 16] and d["dtype"] == "int16"
    assert d["spacing"] == pytest.approx([0.9055, 0.9055, 2.5], abs=1e-3)
    assert d["orientation"] == "RAS" and len(d["range"]) == 2
    assert d["noise"]["sigma"] == pytest.approx(40.0, rel=0.1)
    assert d["noise"]["method"] in ("background", "object")
    r = c2s("info", str(noisy_nifti))
    assert r.returncode == 0 and "shape" in r.stdout and "noise" in r.stdout


def test_info_dicom_folder_and_series_list(tmp_path: Path, phantom: np.ndarray) -> None:
    stored = np.rint(phantom * 1000)
    make_series(tmp_path / "study" / "a", stored, series_number=3)
    make_series(tmp_path / "study" / "b", stored[:, :, :6], series_number=4)
    r = c2s("info", str(tmp_path / "study"), "--json")
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["kind"] == "dicom-folder" and [s["number"] for s in d["series"]] == [3, 4]
    r = c2s("info", str(tmp_path / "study"), "--series", "4", "--json")
    d = json.loads(r.stdout)
    assert d["kind"] == "dicom" and d["shape"] == [96, 96, 6] and "noise" in d
    assert PATIENT_MARKER not in r.stdout + r.stderr


def test_info_model(tiny_model: Path) -> None:
    r = c2s("info", str(tiny_model), "--json")
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["kind"] == "model" and d["parameters"] > 1000 and len(d["sha256"]) == 64
    assert d["config"]["model"]["channels"] == [8, 16]


def test_errors_have_one_line_and_exit_codes(tmp_path: Path, noisy_nifti: Path) -> None:
    r = c2s("info", str(tmp_path / "missing.nii.gz"))
    assert r.returncode == 4 and r.stderr.count("\n") == 1 and "missing.nii.gz" in r.stderr
    assert "Traceback" not in r.stderr
    junk = tmp_path / "notes.xyz"
    junk.write_text("hello")
    r = c2s("info", str(junk))
    assert r.returncode == 4 and "unknown format" in r.stderr
    r = c2s("denoise", str(noisy_nifti))  # missing -o
    assert r.returncode == 2
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 4)
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "o.nii.gz"), "--model", str(bad))
    assert r.returncode == 4 and "truncated" in r.stderr and not (tmp_path / "o.nii.gz").exists()


def test_denoise_nifti_keeps_geometry_and_refuses_overwrite(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    before = snapshot(noisy_nifti.parent)
    out = tmp_path / "out" / "den.nii.gz"
    out.parent.mkdir()
    r = c2s("denoise", str(noisy_nifti), "-o", str(out), "--model", str(tiny_model), "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["output"] == str(out) and rec["noise"][0]["sigma"] > 0 and rec["sha256"]
    a, b = nib.load(str(noisy_nifti)), nib.load(str(out))
    np.testing.assert_allclose(b.affine, a.affine)
    assert b.shape == a.shape and b.get_data_dtype() == np.float32
    assert int(b.header["sform_code"]) == 4 and int(b.header["qform_code"]) == 1
    r = c2s("denoise", str(noisy_nifti), "-o", str(out), "--model", str(tiny_model))
    assert r.returncode == 2 and "--force" in r.stderr
    r = c2s("denoise", str(noisy_nifti), "-o", str(out), "--model", str(tiny_model), "--force", "-q")
    assert r.returncode == 0 and r.stderr == ""
    after = {k: v for k, v in snapshot(noisy_nifti.parent).items() if not k.startswith(str(tmp_path / "out"))}
    assert after == before  # source bytes and mtimes untouched
    leftovers = [p.name for p in out.parent.iterdir() if "c2s-tmp" in p.name]
    assert leftovers == []


def test_denoise_dicom_series(dicom_series: Path, tiny_model: Path, tmp_path: Path) -> None:
    before = snapshot(dicom_series)
    out = tmp_path / "den_series"
    r = c2s("denoise", str(dicom_series), "-o", str(out), "--model", str(tiny_model))
    assert r.returncode == 0, r.stderr
    assert PATIENT_MARKER not in r.stdout + r.stderr and "ZZID12345" not in r.stderr
    files = sorted(out.iterdir())
    assert len(files) == 16
    ds = pydicom.dcmread(files[0])
    assert ds.ImageType[0] == "DERIVED" and ds.PatientName == PATIENT_MARKER
    assert snapshot(dicom_series) == before
    # inside the input folder: refused
    r = c2s("denoise", str(dicom_series), "-o", str(dicom_series / "out"), "--model", str(tiny_model))
    assert r.returncode == 2 and "inside the input folder" in r.stderr


def test_several_series_without_choice(tmp_path: Path, phantom: np.ndarray, tiny_model: Path) -> None:
    stored = np.rint(phantom * 1000)
    make_series(tmp_path / "st" / "a", stored, series_number=3)
    make_series(tmp_path / "st" / "b", stored, series_number=4)
    r = c2s("info", str(tmp_path / "st" / "a"), "--series", "9")
    assert r.returncode == 4 and "--series 9 matches no series" in r.stderr
    r = c2s("denoise", str(tmp_path / "st"), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "--dry-run")
    assert r.returncode == 0
    plans = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(plans) == 2 and {Path(p["output"]).name for p in plans} == {"st_s3_c2s", "st_s4_c2s"}


def test_batch_stdin_keep_going_and_report(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    other = tmp_path / "second.nii.gz"
    img = nib.load(str(noisy_nifti))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), str(other))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"garbage")
    outdir = tmp_path / "outs"
    report = tmp_path / "report.jsonl"
    lines = f"{noisy_nifti}\n{other}\n{broken}\n"
    r = c2s("denoise", "-", "-o", str(outdir), "--model", str(tiny_model), "--keep-going", "--json",
            "--report", str(report), stdin=lines)
    assert r.returncode == 3, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 3 and sum("error" in x for x in recs) == 1
    assert (outdir / "scan_c2s.nii.gz").exists() and (outdir / "second_c2s.nii.gz").exists()
    assert len(report.read_text().splitlines()) == 3
    r = c2s("denoise", str(noisy_nifti), str(other), "-o", str(outdir), "--model", str(tiny_model), "--skip-existing")
    assert r.returncode == 0 and r.stderr.count("skipped") == 2


def test_sharding_partitions(tmp_path: Path, noisy_nifti: Path) -> None:
    names = []
    for i in range(7):
        p = tmp_path / f"in{i}.nii.gz"
        p.write_bytes(noisy_nifti.read_bytes())
        names.append(str(p))
    parts = []
    for k in range(3):
        r = c2s("denoise", *names, "-o", str(tmp_path / "o"), "--num-parts", "3", "--part-id", str(k), "--dry-run")
        assert r.returncode == 0, r.stderr
        parts.append({json.loads(x)["input"] for x in r.stdout.splitlines()})
    assert set().union(*parts) == set(names) and sum(len(p) for p in parts) == 7
    r = c2s("denoise", *names, "-o", str(tmp_path / "o"), "--dry-run",
            env={"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "1"})
    assert {json.loads(x)["input"] for x in r.stdout.splitlines()} == parts[1]


def test_train_cli_dry_run_and_smoke(noisy_nifti: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    r = c2s("train", str(noisy_nifti), "-o", str(out), "--dry-run", "--steps", "3")
    assert r.returncode == 0
    assert json.loads(r.stdout)["config"]["train"]["steps"] == 3
    assert json.loads(r.stdout)["config"]["train"]["invert"] == 0.0
    r = c2s("train", str(noisy_nifti), "-o", str(out), "--dry-run", "--invert", "0.5")
    assert r.returncode == 0 and json.loads(r.stdout)["config"]["train"]["invert"] == 0.5
    assert "--invert" not in r.stderr
    r = c2s("train", str(noisy_nifti), "-o", str(out), "--dry-run", "--invert", "0.5", "--no-vst")
    assert r.returncode == 0 and "--invert 0.5 with --no-vst" in r.stderr
    r = c2s("train", str(noisy_nifti), "-o", str(out), "--dry-run", "--invert", "1.5")
    assert r.returncode == 2 and "--invert" in r.stderr
    r = c2s("train", str(noisy_nifti), "-o", str(out), "--steps", "4", "--batch-size", "2", "--patch-size", "32",
            "--channels", "8,16", "--planes", "axial,coronal")
    assert r.returncode == 0, r.stderr
    assert out.exists() and (tmp_path / "m.run" / "config.json").exists()
    info = json.loads(c2s("info", str(out), "--json").stdout)
    assert info["training"]["steps"] == 4 and info["training"]["volumes"] == 1
    r = c2s("train", str(noisy_nifti), "-o", str(out), "--steps", "4")
    assert r.returncode == 2 and "exists" in r.stderr
    r = c2s("train", str(noisy_nifti), "-o", str(tmp_path / "m2.safetensors"), "--resume", str(tmp_path / "m.run"),
            "--steps", "6", "--force")
    assert r.returncode == 0, r.stderr
    info = json.loads(c2s("info", str(tmp_path / "m2.safetensors"), "--json").stdout)
    assert info["training"]["steps"] == 6
    # fine-tuning: the start model's SHA-256 is recorded, its architecture kept, the new augmentation recorded
    from c2s_cli.checkpoint import sha256

    r = c2s("train", str(noisy_nifti), "-o", str(tmp_path / "ft.safetensors"), "--init", str(out), "--steps", "2",
            "--batch-size", "2", "--patch-size", "32", "--invert", "0.5")
    assert r.returncode == 0, r.stderr
    info = json.loads(c2s("info", str(tmp_path / "ft.safetensors"), "--json").stdout)
    assert info["training"]["init"] == {"model": out.name, "sha256": sha256(out)}  # the file name, never a host path
    assert str(tmp_path) not in json.dumps(info["training"])
    assert info["config"]["model"]["channels"] == [8, 16] and info["config"]["train"]["invert"] == 0.5


def test_named_init_model_is_checked_against_its_registry(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    """`train --init NAME` verifies a registered model's SHA-256 as `denoise --model NAME` does, and records it."""
    import shutil

    from c2s_cli.checkpoint import sha256

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copyfile(tiny_model, weights / "tiny.safetensors")
    args = ("train", str(noisy_nifti), "--init", "tiny", "--steps", "1", "--batch-size", "2", "--patch-size", "32")
    (weights / "registry.json").write_text(json.dumps({"tiny": {"sha256": "0" * 64}}))
    out = tmp_path / "bad.safetensors"
    r = c2s(*args, "-o", str(out), env={"C2S_WEIGHTS": str(weights)})
    assert r.returncode == 4 and "does not match the registered" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "d.nii.gz"), "--model", "tiny",
            env={"C2S_WEIGHTS": str(weights)})
    # one mechanism, one exit code for both paths (4: the model file is rejected)
    assert r.returncode == 4 and "does not match the registered" in r.stderr and not (tmp_path / "d.nii.gz").exists()
    (weights / "registry.json").write_text(json.dumps({"tiny": {"sha256": sha256(tiny_model)}}))
    out = tmp_path / "good.safetensors"
    r = c2s(*args, "-o", str(out), env={"C2S_WEIGHTS": str(weights)})
    assert r.returncode == 0, r.stderr
    info = json.loads(c2s("info", str(out), "--json").stdout)
    assert info["training"]["init"] == {"model": "tiny", "sha256": sha256(tiny_model)}


def test_sigterm_leaves_no_partial_output(tmp_path: Path, noisy_nifti: Path) -> None:
    """Killing a training run mid-way leaves nothing under the final name and exits 130."""
    import signal
    import time

    out = tmp_path / "killed.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "c2s_cli", "train", str(noisy_nifti), "-o", str(out), "--steps",
                             "100000", "--channels", "8,16", "--patch-size", "32"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "killed.run" / "config.json").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "c2s-tmp" in p.name] == []


def test_4d_classic_series_info_and_denoise(tmp_path: Path, phantom: np.ndarray, tiny_model: Path) -> None:
    """c2s info says how the volumes of a 4-D series were told apart; denoise estimates the noise per volume."""
    from test_io_dicom import _four_d

    _four_d(tmp_path / "s", phantom, 3, "EchoNumbers")
    r = c2s("info", str(tmp_path / "s"), "--json", "--no-noise")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["shape"] == [96, 96, 4, 3] and d["volumes"] == 3 and d["volumes_by"] == "EchoNumbers"
    assert d["layout"] == "classic" and d["transfer_syntax"] == "Explicit VR Little Endian" and d["lossy"] is False
    r = c2s("denoise", str(tmp_path / "s"), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["noise"]) == 3 and len(list((tmp_path / "o").iterdir())) == 12
