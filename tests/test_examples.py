"""The shell pipelines in examples/ run as documented (with a tiny model via C2S_MODEL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EX = Path(__file__).resolve().parents[1] / "examples"


def _env(model: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "C2S_MODEL": str(model), "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "NO_COLOR": "1"}


@pytest.mark.skipif(shutil.which("c2s", path=str(Path(sys.executable).parent)) is None, reason="c2s not installed")
def test_denoise_many_and_slurm(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("a.nii.gz", "sub/b.nii.gz"):
        (data / name).write_bytes(noisy_nifti.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(["bash", str(EX / "denoise_many.sh"), str(data), str(out)], capture_output=True, text=True,
                       env=_env(tiny_model))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a_c2s.nii.gz", "b_c2s.nii.gz"]
    assert len((out / "c2s_report.jsonl").read_text().splitlines()) == 2
    lst = tmp_path / "list.txt"
    lst.write_text(f"{data / 'a.nii.gz'}\n{data / 'sub' / 'b.nii.gz'}\n")
    out2 = tmp_path / "out2"
    out2.mkdir()
    env = {**_env(tiny_model), "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_CPUS_PER_TASK": "1"}
    r = subprocess.run(["bash", str(EX / "slurm_array.sh"), str(lst), str(out2)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in out2.glob("*.nii.gz")] == ["b_c2s.nii.gz"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_train_torchrun_example(noisy_nifti: Path, tmp_path: Path) -> None:
    env = {**_env(Path("unused")), "STEPS": "2", "OMP_NUM_THREADS": "1"}
    data = tmp_path / "noisy"
    data.mkdir()
    (data / "a.nii.gz").write_bytes(noisy_nifti.read_bytes())
    r = subprocess.run(["bash", str(EX / "train_torchrun.sh"), str(data), str(tmp_path / "m.safetensors"), "2"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "m.safetensors").exists()
