"""c2s bids (issue 22): a BIDS derivatives dataset from a synthetic raw dataset made in the fixture."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import c2s, snapshot
from c2s_bench.phantoms import head_phantom, rician
from c2s_cli.bids import ENTITIES, parse_name


def _nii(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.rint(data).astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))



@pytest.fixture(autouse=True)
def _short_series_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset's dwi gets the default series mode (auto: context, it has a gradient table) with 2 training steps
    instead of 400 (C2S_SERIES_STEPS, the --series-steps environment variable): the mode is what these tests check."""
    monkeypatch.setenv("C2S_SERIES_STEPS", "2")

@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Two subjects, one with sessions: T1w, T2w, a 3-volume dwi with bval/bvec, sidecars (one inherited from the
    top level), and one broken FLAIR."""
    root = tmp_path / "raw"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.8.0"}))
    (root / "T1w.json").write_text(json.dumps({"MagneticFieldStrength": 3}))
    vol = rician(head_phantom((32, 32, 8), seed=1) * 1000, 40.0, seed=2)
    _nii(root / "sub-01/anat/sub-01_T1w.nii.gz", vol)
    (root / "sub-01/anat/sub-01_T1w.json").write_text(json.dumps({"RepetitionTime": 2.3}))
    dwi = np.stack([vol, vol * 0.6, vol * 0.5], axis=-1)
    _nii(root / "sub-01/dwi/sub-01_dwi.nii.gz", dwi)
    (root / "sub-01/dwi/sub-01_dwi.bval").write_text("0 1000 1000\n")
    (root / "sub-01/dwi/sub-01_dwi.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n")
    (root / "sub-01/dwi/sub-01_dwi.json").write_text(json.dumps({"PhaseEncodingDirection": "j-"}))
    _nii(root / "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii.gz", vol)
    _nii(root / "sub-02/ses-2/anat/sub-02_ses-2_T2w.nii.gz", vol)
    (root / "sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz").write_bytes(b"not a nifti")
    (root / "README").write_text("synthetic test dataset\n")
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    return root


def test_participant_and_group(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = raw / "derivatives" / "c2s"
    before = snapshot(raw)
    r = c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model))
    assert r.returncode == 3, r.stderr  # the broken FLAIR is a failed record, the rest is done
    assert "sub-02_ses-2_FLAIR.nii.gz: failed" in r.stderr
    assert {k: v for k, v in snapshot(raw).items() if "/derivatives/" not in k} == before  # raw untouched
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "c2s"
    assert "SHA-256" in desc["GeneratedBy"][0]["Description"] and desc["SourceDatasets"]
    expected = ["sub-01/anat/sub-01_desc-c2s_T1w.nii.gz", "sub-01/dwi/sub-01_desc-c2s_dwi.nii.gz",
                "sub-02/ses-1/anat/sub-02_ses-1_run-1_desc-c2s_T1w.nii.gz",
                "sub-02/ses-2/anat/sub-02_ses-2_desc-c2s_T2w.nii.gz"]
    for rel in expected:
        assert (out / rel).is_file(), rel
        side = json.loads((out / rel.replace(".nii.gz", ".json")).read_text())
        assert side["Sources"][0].startswith("bids:raw:sub-") and side["C2S"]["sha256"] and side["C2S"]["noise"]
    t1 = json.loads((out / "sub-01/anat/sub-01_desc-c2s_T1w.json").read_text())
    assert t1["RepetitionTime"] == 2.3 and t1["MagneticFieldStrength"] == 3  # the source's, with inheritance
    assert (out / "sub-01/dwi/sub-01_desc-c2s_dwi.bval").read_text() == "0 1000 1000\n"
    assert (out / "sub-01/dwi/sub-01_desc-c2s_dwi.bvec").is_file()
    assert nib.load(str(out / "sub-01/dwi/sub-01_desc-c2s_dwi.nii.gz")).shape == (32, 32, 8, 3)
    dwi_c2s = json.loads((out / "sub-01/dwi/sub-01_desc-c2s_dwi.json").read_text())["C2S"]
    assert len(dwi_c2s["noise"]) == 3
    # the default for a diffusion series with its bval / bvec: the other volumes as context (series mode auto)
    assert dwi_c2s["series_mode"] == "context" and dwi_c2s["series_context"]["neighbours_in"] == "q-space (.bval / .bvec)"
    assert (out / "sub-01/figures/sub-01_desc-c2s_T1w.png").is_file()
    # resume: everything done is skipped, the failure is tried again
    r = c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model), "--skip-existing")
    assert r.returncode == 3 and r.stderr.count(": skipped") == 4
    r = c2s("bids", str(raw), str(out), "group")
    assert r.returncode == 3, r.stderr  # one failed file
    tsv = (out / "c2s_group.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:6] == ["subject", "session", "suffix", "input", "output", "status"]
    assert len(tsv) == 6 and sum("\tfailed\t" in ln for ln in tsv) == 1
    summary = json.loads((out / "c2s_group.json").read_text())
    assert summary["ok"] == 4 and summary["failed"] == 1
    html = (out / "c2s_report.html").read_text()
    assert html.count("<img") == 4 and "sub-01/figures/sub-01_desc-c2s_T1w.png" in html


def test_filters_and_labels(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "d1"
    r = c2s("bids", str(raw), str(out), "participant", "--participant-label", "sub-01", "--datatype", "anat",
            "--model", str(tiny_model), "--save-residual", "--save-sigma-map")
    assert r.returncode == 0, r.stderr
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert made == ["sub-01/anat/sub-01_desc-c2s_T1w.nii.gz", "sub-01/anat/sub-01_desc-c2sresidual_T1w.nii.gz",
                    "sub-01/anat/sub-01_desc-c2ssigma_T1w.nii.gz"]
    den = np.asarray(nib.load(str(out / made[0])).dataobj)
    res = np.asarray(nib.load(str(out / made[1])).dataobj)
    src = np.asarray(nib.load(str(raw / "sub-01/anat/sub-01_T1w.nii.gz")).dataobj, dtype=np.float32)
    np.testing.assert_allclose(src - den, res, atol=1e-3)
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"t2w": {"suffix": "T2w", "session": "2"}}))
    out2 = tmp_path / "d2"
    r = c2s("bids", str(raw), str(out2), "participant", "--bids-filter-file", str(filt), "--model", str(tiny_model))
    assert r.returncode == 0, r.stderr
    assert [p.name for p in out2.rglob("*.nii.gz")] == ["sub-02_ses-2_desc-c2s_T2w.nii.gz"]


def test_names_follow_the_specification(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model), "--suffix", "T1w")
    for p in out.rglob("*_desc-*"):
        parsed = parse_name(p.with_name(p.name.split(".")[0] + ".nii"))
        assert parsed is not None, p.name
        keys = list(parsed[0])
        assert keys == sorted(keys, key=ENTITIES.index) and keys[-1] == "desc"  # the specification's order
        assert re.fullmatch(r"[a-zA-Z0-9]+", parsed[0]["desc"])
        rel = p.relative_to(out).parts
        assert rel[0] == f"sub-{parsed[0]['sub']}"
        if rel[1] != "figures":  # previews go to sub-<label>/figures/, as fMRIPrep puts its reports
            assert ("ses" not in parsed[0]) or rel[1] == f"ses-{parsed[0]['ses']}"
    r = c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model), "--desc", "c2s_v1")
    assert r.returncode == 2 and "--desc" in r.stderr


def test_bad_datasets_and_outputs(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    (raw / "dataset_description.json").rename(raw / "dd.json")
    r = c2s("bids", str(raw), str(tmp_path / "d"), "participant", "--model", str(tiny_model))
    assert r.returncode == 4 and r.stderr.count("c2s: error") == 1 and "dataset_description.json" in r.stderr
    (raw / "dd.json").rename(raw / "dataset_description.json")
    r = c2s("bids", str(raw), str(raw / "sub-01"), "participant", "--model", str(tiny_model))
    assert r.returncode == 2 and "OUTPUT_DIR" in r.stderr
    r = c2s("bids", str(raw), str(tmp_path / "none"), "group")
    assert r.returncode == 4 and "participant level first" in r.stderr


def test_concurrent_participants_write_one_description(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Two SLURM tasks at once: both finish, dataset_description.json is whole."""
    import os
    import sys

    out = tmp_path / "d"
    env = {**os.environ, "NO_COLOR": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "c2s_cli", "bids", str(raw), str(out), "participant",
                               "--participant-label", lab, "--model", str(tiny_model), "--suffix", "T1w"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for lab in ("01", "02")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert len(list(out.rglob("*_desc-c2s_T1w.nii.gz"))) == 2


def test_pybids_indexes_the_derivatives(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    bids = pytest.importorskip("bids")
    out = raw / "derivatives" / "c2s"
    c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model))
    layout = bids.BIDSLayout(str(raw), derivatives=[str(out)], validate=False)
    found = layout.get(scope="derivatives", desc="c2s", extension=[".nii.gz"])
    assert len(found) == 4
    t1 = layout.get(scope="derivatives", desc="c2s", suffix="T1w", subject="02", extension=".nii.gz")
    assert len(t1) == 1 and t1[0].entities["session"] == "1" and t1[0].entities["run"] == 1
    assert t1[0].get_metadata()["Sources"][0].startswith("bids:raw:")


def test_raw_dataset_still_valid(raw: Path, tiny_model: Path) -> None:
    validator = shutil.which("bids-validator")
    if validator is None:
        pytest.skip("bids-validator not installed")
    (raw / "sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz").unlink()
    c2s("bids", str(raw), str(raw / "derivatives" / "c2s"), "participant", "--model", str(tiny_model))
    r = subprocess.run([validator, str(raw), "--json"], capture_output=True, text=True, timeout=300)
    report = json.loads(r.stdout)  # the validator's JSON report (a usage error would not parse)
    assert report["issues"]["errors"] == [], report["issues"]["errors"]
    assert report["summary"]["subjects"] == ["01", "02"]  # it did read the dataset


def test_slurm_example(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    """examples/bids_slurm.sh runs one participant per array task."""
    import os

    script = Path(__file__).resolve().parents[1] / "examples" / "bids_slurm.sh"
    out = tmp_path / "d"
    bindir = tmp_path / "bin"  # `c2s` on PATH, as the README's install provides it
    bindir.mkdir()
    import sys

    (bindir / "c2s").write_text(f"#!/bin/sh\nexec {sys.executable} -m c2s_cli \"$@\"\n")
    (bindir / "c2s").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "C2S_MODEL": str(tiny_model), "NO_COLOR": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for task in ("0", "1"):
        r = subprocess.run(["bash", str(script), str(raw), str(out)], env={**env, "SLURM_ARRAY_TASK_ID": task},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode in (0, 3), r.stderr  # task 1 is sub-02, whose FLAIR is broken: exit 3
    assert len(list(out.rglob("*_desc-c2s_*.nii.gz"))) == 4
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["sub-01_c2s.jsonl", "sub-02_c2s.jsonl"]


def test_foreign_files_in_the_derivatives_are_never_replaced(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    """A sidecar, bval or group file that c2s did not write stays as it is: that file fails (or the group level
    stops) with one line, before any compute."""
    out = tmp_path / "d"
    side = out / "sub-01/dwi/sub-01_desc-c2s_dwi.json"
    side.parent.mkdir(parents=True)
    side.write_text('{"mine": 1}')
    r = c2s("bids", str(raw), str(out), "participant", "--participant-label", "01", "--model", str(tiny_model))
    assert r.returncode == 3 and "was not written by c2s" in r.stderr
    assert side.read_text() == '{"mine": 1}' and not (out / "sub-01/dwi/sub-01_desc-c2s_dwi.nii.gz").exists()
    (out / "c2s_report.html").write_text("<p>my notes</p>")
    r = c2s("bids", str(raw), str(out), "group")
    assert r.returncode == 2 and r.stderr.count("c2s: error") == 1 and "c2s_report.html" in r.stderr
    assert (out / "c2s_report.html").read_text() == "<p>my notes</p>" and not (out / "c2s_group.tsv").exists()


# ------------------------------------------------------------------------ issue 33: links, collisions, conformance

def test_links_in_the_output_tree_are_never_written_through(raw: Path, tiny_model: Path, tmp_path: Path) -> None:
    """A bval, a log, a subject folder or a datatype folder of the derivatives that is a symbolic link (to a user's
    file, a foreign folder, the raw data): never written through; what the link points to is byte-identical."""
    out = tmp_path / "deriv"
    user = tmp_path / "user"
    user.mkdir()
    (user / "precious.txt").write_text("mine\n")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (out / "sub-01/dwi").mkdir(parents=True)
    (out / "sub-01/dwi/sub-01_desc-c2s_dwi.bval").symlink_to(user / "precious.txt")
    (out / "sub-02").symlink_to(foreign)
    watched = {"user": snapshot(user), "foreign": snapshot(foreign), "raw": snapshot(raw)}
    r = c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model))
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "sub-01_dwi.nii.gz: failed" in r.stderr and "symbolic link" in r.stderr
    assert (out / "sub-01/anat/sub-01_desc-c2s_T1w.nii.gz").is_file()  # the rest of the participant is done
    assert {"user": snapshot(user), "foreign": snapshot(foreign), "raw": snapshot(raw)} == watched
    # a log that is a link: the participant is refused before any compute
    out2 = tmp_path / "deriv2"
    (out2 / "logs").mkdir(parents=True)
    (out2 / "logs/sub-01_c2s.jsonl").symlink_to(user / "precious.txt")
    r = c2s("bids", str(raw), str(out2), "participant", "--participant-label", "01", "--model", str(tiny_model))
    assert r.returncode == 2 and "symbolic link" in r.stderr and not (out2 / "sub-01").exists()
    # a datatype folder linked into the raw dataset
    out3 = tmp_path / "deriv3"
    (out3 / "sub-01").mkdir(parents=True)
    (out3 / "sub-01/anat").symlink_to(raw / "sub-01/anat")
    r = c2s("bids", str(raw), str(out3), "participant", "--participant-label", "01", "--model", str(tiny_model))
    assert r.returncode == 3 and snapshot(raw) == watched["raw"] and snapshot(user) == watched["user"]


def test_collisions_links_and_misplaced_names_are_refused_or_skipped(raw: Path, tiny_model: Path,
                                                                    tmp_path: Path) -> None:
    from c2s_cli.bids import find_inputs

    before = len(find_inputs(raw))
    (raw / "sub-99").symlink_to("/")  # a link out of the dataset: not a subject of it
    shutil.copy(raw / "sub-01/anat/sub-01_T1w.nii.gz", raw / "sub-01/anat/sub-03_T2w.nii.gz")  # wrong folder
    (raw / "sub-01/anat/deeper").mkdir()
    shutil.copy(raw / "sub-01/anat/sub-01_T1w.nii.gz", raw / "sub-01/anat/deeper/sub-01_PDw.nii.gz")  # too deep
    assert len(find_inputs(raw)) == before
    # the same output from two inputs: refused before any compute, naming both
    nib.save(nib.load(str(raw / "sub-01/anat/sub-01_T1w.nii.gz")), str(raw / "sub-01/anat/sub-01_T1w.nii"))
    out = tmp_path / "deriv"
    r = c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model), "--force")
    assert r.returncode == 2 and "sub-01_T1w.nii " in r.stderr + " " and "sub-01_T1w.nii.gz" in r.stderr
    assert not (out / "sub-01").exists()


def test_sources_resolve_through_dataset_links_and_warnings_name_their_file(raw: Path, tiny_model: Path) -> None:
    out = raw / "derivatives" / "c2s"
    r = c2s("bids", str(raw), str(out), "participant", "--participant-label", "01", "--model", str(tiny_model))
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetLinks"]["raw"] == "../../" and "CodeURL" not in desc["GeneratedBy"][0]  # no paper as code
    side = json.loads((out / "sub-01/anat/sub-01_desc-c2s_T1w.json").read_text())
    src = side["Sources"][0].removeprefix("bids:raw:")
    assert side["Sources"][0].startswith("bids:raw:") and (out / desc["DatasetLinks"]["raw"] / src).is_file()
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("c2s: warning:")]
    assert warned and all("sub-01" in ln for ln in warned)


def test_the_qc_report_is_one_a_lab_can_sign_off(raw: Path, tiny_model: Path) -> None:
    """Issue 33: the group report has a summary (counts, the model and its SHA-256, the command, dates, version),
    the failures with their one-line reason, and per file σ with how it was chosen, warnings, timings and the
    picture; parsed as a DOM (html.parser), every picture it names exists."""
    from html.parser import HTMLParser

    out = raw / "derivatives" / "c2s"
    c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model))
    c2s("bids", str(raw), str(out), "group")

    class Dom(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.text: dict[str, list[str]] = {}
            self.imgs: list[str] = []
            self.articles: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            self.stack.append(a.get("id") or a.get("class") or tag)
            if tag == "img":
                self.imgs.append(str(a["src"]))
                self.stack.pop()
            if tag == "article":
                self.articles.append(str(a["data-status"]))

        def handle_endtag(self, tag: str) -> None:
            if self.stack:
                self.stack.pop()

        def handle_data(self, data: str) -> None:
            for name in set(self.stack):
                self.text.setdefault(name, []).append(data)

    dom = Dom()
    dom.feed((out / "c2s_report.html").read_text())
    summary = " ".join(" ".join(dom.text["summary"]).split())
    model_sha = json.loads((out / "c2s_group.json").read_text())["runs"][0]["sha256"]
    assert "files 5: 4 ok , 1 failed , 0 skipped" in summary and model_sha in summary and "c2s bids" in summary
    failures = " ".join(dom.text["failures"])
    assert "sub-02_ses-2_FLAIR.nii.gz" in failures and "c2s: error" not in failures
    assert sorted(dom.articles) == ["failed", "ok", "ok", "ok", "ok"]
    assert len(dom.text["noise"]) >= 4 and all("σ = " in t for t in dom.text["noise"] if t.startswith("σ"))
    assert len(dom.imgs) == 4 and all((out / src).is_file() for src in dom.imgs)


def test_dwi_series_mode_context(raw: Path, tiny_model: Path) -> None:
    """Issue 31: c2s bids takes --series-mode; a dwi series is denoised with its other volumes as context, its
    neighbours in q-space from the dataset's bval / bvec, and the sidecar says so; anatomy stays 3-D."""
    out = raw / "derivatives" / "c2s"
    r = c2s("bids", str(raw), str(out), "participant", "--model", str(tiny_model), "--participant-label", "01",
            "--series-mode", "context", "--series-steps", "2")
    assert r.returncode == 0, r.stderr
    c2s_block = json.loads((out / "sub-01/dwi/sub-01_desc-c2s_dwi.json").read_text())["C2S"]
    assert c2s_block["series_mode"] == "context"
    assert c2s_block["series_context"]["neighbours_in"].startswith("q-space")
    assert "series_mode" not in json.loads((out / "sub-01/anat/sub-01_desc-c2s_T1w.json").read_text())["C2S"]


def test_complex_parts_are_denoised_together(tmp_path: Path, tiny_model: Path) -> None:
    """BIDS complex data (the ``part`` entity): a ``part-mag`` image is denoised with its ``part-phase`` companion
    (recorded in the sidecar), a ``part-real`` with its ``part-imag``; the phase and imaginary images are never
    denoised as images of their own; a ``part-mag`` without a phase is magnitude data."""
    root = tmp_path / "raw"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "complex", "BIDSVersion": "1.8.0"}))
    rng = np.random.default_rng(0)
    clean = head_phantom((32, 32, 8), seed=1) * 1000
    z = clean * np.exp(0.5j) + 40 * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape))
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    for name, data in (("part-mag_T2starw", np.abs(z)), ("part-phase_T2starw", np.angle(z)),
                       ("acq-b_part-real_T2starw", z.real), ("acq-b_part-imag_T2starw", z.imag),
                       ("acq-c_part-mag_T2starw", np.abs(z))):
        nib.save(nib.Nifti1Image(data.astype(np.float32), aff), str(anat / f"sub-01_{name}.nii.gz"))
    out = tmp_path / "out"
    r = c2s("bids", str(root), str(out), "participant", "--model", str(tiny_model), "--suffix", "T2starw")
    assert r.returncode == 0, r.stderr
    made = sorted(p.name for p in (out / "sub-01" / "anat").glob("*.nii.gz"))
    assert made == ["sub-01_acq-b_part-real_desc-c2s_T2starw.nii.gz", "sub-01_acq-c_part-mag_desc-c2s_T2starw.nii.gz",
                    "sub-01_part-mag_desc-c2s_T2starw.nii.gz"]
    side = {p.name: json.loads(p.read_text())["C2S"] for p in (out / "sub-01" / "anat").glob("*.json")}
    assert side["sub-01_part-mag_desc-c2s_T2starw.json"]["complex"]["input"] == "phase"
    assert side["sub-01_acq-b_part-real_desc-c2s_T2starw.json"]["complex"]["input"] == "imaginary"
    assert "complex" not in side["sub-01_acq-c_part-mag_desc-c2s_T2starw.json"]
