"""Nothing lost, round three (issue 33): one regression test per reproduced case.

Each failed on the main of 2026-12-02 (f119876) and asserts the exit code, the single error line and that no byte
of the user's files changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import c2s, one_error_line, snapshot


def test_report_is_never_appended_to_a_file_c2s_did_not_write(small_nifti: Path, tiny_model: Path,
                                                               tmp_path: Path) -> None:
    """A JSON sidecar, or a column of numbers (each line valid JSON), is not a c2s report: refused, untouched."""
    for name, text in (("a.json", '{"RepetitionTime": 2.0}\n'), ("b.txt", "1\n2.5\n3\n")):
        rep = tmp_path / name
        rep.write_text(text)
        r = c2s("denoise", str(small_nifti), "-o", str(tmp_path / f"o_{name}.nii.gz"), "--model", str(tiny_model),
                "--report", str(rep))
        one_error_line(r, 2, "--report", "not a c2s report")
        assert rep.read_text() == text and not (tmp_path / f"o_{name}.nii.gz").exists()
    rep = tmp_path / "ok.jsonl"
    for k in range(2):  # a report c2s wrote is appended to
        r = c2s("denoise", str(small_nifti), "-o", str(tmp_path / f"r{k}.nii.gz"), "--model", str(tiny_model),
                "--report", str(rep))
        assert r.returncode == 0, r.stderr
    assert [json.loads(x)["status"] for x in rep.read_text().splitlines()] == ["ok", "ok"]


def test_report_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    from c2s_cli.batch import Report
    from c2s_cli.errors import OutputError

    rep = Report(tmp_path / "r.jsonl", [])

    class Full:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None: ...

    rep.fh.close()  # type: ignore[union-attr]
    rep.fh = Full()  # type: ignore[assignment]
    with pytest.raises(OutputError) as exc:
        rep.write({"input": "x.nii.gz", "status": "ok"})
    assert "No space left" in str(exc.value) and "x.nii.gz" in str(exc.value) and exc.value.param == "report"


def test_output_written_by_a_concurrent_run_is_not_replaced(small_nifti: Path, tiny_model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run passed its pre-flight before the first wrote the output; once it holds the lock it checks
    again, and refuses (no --force) instead of silently replacing the first result."""
    from c2s_cli.api import Denoiser
    from c2s_cli.config import DenoiseOptions
    from c2s_cli.errors import OutputError
    from c2s_cli.io import atomic

    out = tmp_path / "same.nii.gz"
    real = atomic.OutputLock.acquire

    def first_run_finishes_meanwhile(self: atomic.OutputLock) -> None:
        if self.final == out and not out.exists():
            out.write_bytes(b"the first run's result")
        real(self)

    monkeypatch.setattr(atomic.OutputLock, "acquire", first_run_finishes_meanwhile)
    with pytest.raises(OutputError) as exc:
        Denoiser(tiny_model, "cpu").denoise_file(small_nifti, out, DenoiseOptions())
    assert "exists" in str(exc.value) and out.read_bytes() == b"the first run's result"


def test_empty_file_in_a_dicom_series_is_refused_not_dropped(small_series: Path, tiny_model: Path,
                                                            tmp_path: Path) -> None:
    (small_series / "IM0007").write_bytes(b"")
    before = snapshot(small_series)
    r = c2s("denoise", str(small_series), "-o", str(tmp_path / "o"), "--model", str(tiny_model))
    one_error_line(r, 4, "IM0007", "empty file")
    assert snapshot(small_series) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("n", [-20, 0, 10**9])
def test_impossible_mosaic_count_is_one_line(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged CSA NumberOfImagesInMosaic (negative: math domain error before) is refused with one line."""
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader

    from c2s_cli.errors import InputError
    from c2s_cli.io import mosaic

    ds = pydicom.Dataset()
    ds.ImageType, ds.Rows, ds.Columns = ["ORIGINAL", "PRIMARY", "M", "MOSAIC"], 360, 360
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    monkeypatch.setattr(csareader, "get_csa_header", lambda d, kind: {"tags": {}})
    monkeypatch.setattr(csareader, "get_n_mosaic", lambda csa: n)
    with pytest.raises(InputError) as exc:
        mosaic.mosaic_of(ds)
    assert "NumberOfImagesInMosaic" in str(exc.value) and "\n" not in str(exc.value)


def test_inf_voxel_is_one_line_in_denoise_and_info(tmp_path: Path, tiny_model: Path) -> None:
    import nibabel as nib

    data = np.full((32, 32, 8), 100.0, np.float32) + np.random.default_rng(0).normal(0, 5, (32, 32, 8)).astype(
        np.float32)
    data[3, 4, 5] = np.inf
    p = tmp_path / "inf.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    one_error_line(c2s("denoise", str(p), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tiny_model)), 4,
                   "infinite")
    r = c2s("info", str(p), "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "infinite" in json.loads(r.stdout)["noise"]["reason"]


def test_group_level_skips_a_truncated_log_line(tmp_path: Path) -> None:
    from c2s_cli.bids import run_group

    logs = tmp_path / "logs"
    logs.mkdir()
    good = {"subject": "01", "input": "a.nii.gz", "output": "sub-01/anat/a.nii.gz", "status": "ok", "sigma": 1.0,
            "method": "background", "seconds": 1.0, "figure": "figures/a.png"}
    (logs / "sub-01_c2s.jsonl").write_text(json.dumps(good) + "\n" + '{"subject": "01", "inpu\n' + "[1, 2]\n" + "7\n"
                                           + json.dumps({k: v for k, v in good.items() if k != "figure"}) + "\n")
    warned: list[str] = []
    summary = run_group(tmp_path, on_warning=warned.append)
    assert summary["files"] == 1 and summary["ok"] == 1
    assert len(warned) == 4 and all("not a c2s record" in w and "sub-01_c2s.jsonl line" in w for w in warned)


@pytest.mark.parametrize("setting", ["spool = 5", 'spool = "s"\nsend = [1, 2]', 'spool = "s"\nhost = 7',
                                     'spool = "s"\nallow = {a = 1}', 'spool = ["a"]'])
def test_serve_config_with_wrong_types_is_one_line(setting: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(setting + "\n")
    one_error_line(c2s("serve", "--config", str(cfg), cwd=tmp_path), 2, "must be")
    one_error_line(c2s("serve", "--config", str(cfg), "--status", cwd=tmp_path), 2)


def test_element_values_are_redacted_from_messages() -> None:
    from c2s_cli.errors import redact

    assert redact("invalid literal for int() with base 10: 'SECRET^PATIENT'") == \
        "invalid literal for int() with base 10: '…'"
    assert "DOE" not in redact('bad value "DOE^JANE" and b\'JANE\'') and redact("no quotes 12") == "no quotes 12"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_importing_is_one_line_and_130(sig: int) -> None:
    """Before the command starts (imports take a second or two), the entry point's handlers end the process with
    one line and 130: no traceback, no −2. The signal is raised by the child itself, at a known moment."""
    code = ("import os, signal, sys, time\n"
            "from c2s_cli import _entry\n"
            "signal.signal(signal.SIGINT, _entry._early); signal.signal(signal.SIGTERM, _entry._early)\n"
            f"os.kill(os.getpid(), {int(sig)}); time.sleep(30); sys.exit(0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130 and r.stderr == "c2s: interrupted\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_in_a_command_is_one_line_and_130(sig: int, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Once the command runs, both signals become KeyboardInterrupt (outputs cleaned up on the way out), then one
    line and 130; later signals are ignored so that the exit stays 130."""
    from c2s_cli.cli.app import _guarded

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    @_guarded
    def command() -> None:
        os.kill(os.getpid(), sig)
        time.sleep(5)

    try:
        with pytest.raises(SystemExit) as exc:
            command()
        assert exc.value.code == 130 and capsys.readouterr().err == "c2s: interrupted\n"
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        for s_, h in saved.items():
            signal.signal(s_, h)


def test_the_console_script_is_the_early_entry_point() -> None:
    """pyproject's ``c2s`` script and ``python -m c2s_cli`` both start at c2s_cli._entry (the handlers first)."""
    root = Path(__file__).resolve().parent.parent
    assert 'c2s = "c2s_cli._entry:main"' in (root / "pyproject.toml").read_text()
    assert "from c2s_cli._entry import main" in (root / "c2s_cli" / "__main__.py").read_text()


def test_every_option_of_every_command_says_what_it_does() -> None:
    """`c2s COMMAND --help`: no option without a description (c2s bids --device, c2s train --lr … had none), and the
    commands that load a model share the same device / threads / precision / batch-size options."""
    import typer.main

    from c2s_cli.cli import app, main  # noqa: F401 - importing main's modules registers the commands
    from c2s_cli.cli import bids, denoise, info, serve, train  # noqa: F401

    group = typer.main.get_command(app)
    bare = [f"{name} {opt.opts[0]}" for name, cmd in group.commands.items()  # type: ignore[attr-defined]
            for opt in cmd.params if opt.param_type_name == "option" and not getattr(opt, "hidden", False)
            and not (opt.help or "").strip()]
    assert bare == []
    for name in ("denoise", "bids"):
        opts = {o.opts[-1] for o in group.commands[name].params}  # type: ignore[attr-defined]
        assert {"--device", "--threads", "--precision", "--batch-size"} <= opts, name


def test_train_force_never_replaces_a_users_files_in_the_run_folder(small_nifti: Path, tmp_path: Path) -> None:
    """`c2s train … --run-dir proj --force` with the user's own config.json, model.safetensors and stats.jsonl in
    proj: refused before any compute, each file byte-identical; a run folder c2s wrote is reused with --force."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name, text in (("config.json", '{"my": "settings"}\n'), ("model.safetensors", "not a model\n"),
                       ("stats.jsonl", '{"epoch": 1, "acc": 0.9}\n')):
        (proj / name).write_text(text)
        before = snapshot(proj)
        r = c2s("train", str(small_nifti), "-o", str(tmp_path / "m.safetensors"), "--run-dir", str(proj), "--force",
                "--steps", "2", "--batch-size", "2", "--patch-size", "32")
        one_error_line(r, 2, "--run-dir", name, "not c2s's own")
        assert snapshot(proj) == before and not (tmp_path / "m.safetensors").exists()
        (proj / name).unlink()
    (proj / "notes.txt").write_text("mine")  # other files in the folder are not c2s's to touch, nor in its way
    args = ("train", str(small_nifti), "-o", str(tmp_path / "m.safetensors"), "--run-dir", str(proj), "--steps", "2",
            "--batch-size", "2", "--patch-size", "32", "--val-fraction", "0", "--device", "cpu")
    assert c2s(*args, "--force").returncode == 0
    assert c2s(*args, "--force").returncode == 0, "a run folder c2s wrote is reused with --force"
    assert (proj / "notes.txt").read_text() == "mine"


def test_progress_reaches_a_log_file_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Under SLURM or nohup (stderr not a TTY) the bar is off; progress lines go to the log instead, at most one per
    interval; on a terminal, or with --quiet, the ticker says nothing."""
    from c2s_cli.cli.app import _Log

    log = _Log()
    assert not log.console.is_terminal  # captured: as under nohup
    tick = log.ticker("scan.nii.gz", every=0.0)
    tick("denoise", 5, 10)
    tick("denoise", 10, 10)
    err = capsys.readouterr().err
    assert "scan.nii.gz: denoise 5/10 (50 %)" in err and "scan.nii.gz: denoise 10/10 (100 %)" in err
    slow = log.ticker("scan.nii.gz", every=3600.0)
    slow("denoise", 1, 10)
    quiet = _Log(quiet=True).ticker("scan.nii.gz", every=0.0)
    quiet("denoise", 1, 10)
    assert capsys.readouterr().err == ""


def test_batch_runs_and_reports_in_the_order_given_and_shards_stably(small_nifti: Path, tmp_path: Path) -> None:
    names = []
    for tag in ("c", "a", "b", "e", "d"):
        p = tmp_path / f"{tag}.nii.gz"
        p.write_bytes(small_nifti.read_bytes())
        names.append(str(p))
    r = c2s("denoise", *names, "-o", str(tmp_path / "o"), "--dry-run")
    assert [json.loads(x)["input"] for x in r.stdout.splitlines()] == names
    parts = [[json.loads(x)["input"] for x in c2s("denoise", *order, "-o", str(tmp_path / "o"), "--dry-run",
                                                   "--num-parts", "2", "--part-id", "0").stdout.splitlines()]
             for order in (names, names[::-1])]
    assert set(parts[0]) == set(parts[1]) and parts[1] == [n for n in names[::-1] if n in parts[0]]


def test_preview_is_oriented_by_the_affine(tmp_path: Path) -> None:
    """The same head stored RAS and LIA (FreeSurfer-conformed) gives the same picture; small panels are enlarged to
    a readable size; the picture is not the raw storage order for LIA (it was shown upside down before)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform
    from PIL import Image

    from c2s_cli.io.preview import write_preview
    from c2s_bench.phantoms import head_phantom

    data = head_phantom((40, 48, 36), seed=3) * 1000
    data[5:12, 30:40, 20:28] += 800  # an asymmetric marker: anterior, subject's left, upper half
    ras = nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    lia = ras.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("LIA")))
    assert nib.aff2axcodes(lia.affine) == ("L", "I", "A")
    pics = []
    for img, axis in ((ras, 2), (lia, 1)):
        d = np.asarray(img.dataobj, np.float32)
        out = tmp_path / f"{len(pics)}.png"
        write_preview(d, d * 0.9, out, sigma=10.0, slice_axis=axis, affine=img.affine)
        pics.append(np.asarray(Image.open(out)))
    assert pics[0].shape == pics[1].shape and pics[0].shape[1] >= 3 * 192
    np.testing.assert_array_equal(pics[0], pics[1])
    raw_order = tmp_path / "raw.png"
    d = np.asarray(lia.dataobj, np.float32)
    write_preview(d, d * 0.9, raw_order, sigma=10.0, slice_axis=1)  # no affine: storage order, as before
    assert np.asarray(Image.open(raw_order)).shape != pics[1].shape or not np.array_equal(
        np.asarray(Image.open(raw_order)), pics[1])


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 30: pynetdicom and the JPEG codecs are extras; without them `c2s serve` says which extra to install
    (exit 2, before anything starts) and the rest of c2s works."""
    from c2s_cli.extras import missing

    monkeypatch.setitem(sys.modules, "pynetdicom", None)  # import pynetdicom → ImportError, as when not installed
    assert missing("serve") == ["pynetdicom"]
    r = c2s("serve", "--spool", str(tmp_path / "spool"), "--output", str(tmp_path / "out"), "--port", "0")
    one_error_line(r, 2, "c2s[serve]", "pynetdicom")
    assert not (tmp_path / "spool").exists()


def test_packaging_declares_the_extras_and_an_honest_torch() -> None:
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    deps = " ".join(meta["dependencies"])
    assert "pynetdicom" not in deps and "pylibjpeg" not in deps and "torch>=2.13" in deps
    extras = meta["optional-dependencies"]
    assert "bids" not in extras and {"serve", "jpeg", "test"} <= set(extras)
    assert set(extras["serve"]) | set(extras["jpeg"]) <= set(extras["test"])  # the tests exercise every extra


@pytest.mark.parametrize("length", [240, 300])
def test_output_names_too_long_for_the_file_system_are_refused_before_compute(length: int, small_nifti: Path,
                                                                             tiny_model: Path, tmp_path: Path) -> None:
    """A name near 255 bytes failed after the compute (the temporary name is 25 bytes longer), one over 255 with an
    OSError traceback: both are one line before the model runs."""
    out = tmp_path / ("x" * (length - len(".nii.gz")) + ".nii.gz")
    r = c2s("denoise", str(small_nifti), "-o", str(out), "--model", str(tiny_model))
    one_error_line(r, 2, "bytes", "limit")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".x", "x"))]  # nothing written
    ok = tmp_path / ("y" * (255 - 25 - len(".nii.gz")) + ".nii.gz")  # the longest name that fits
    assert c2s("denoise", str(small_nifti), "-o", str(ok), "--model", str(tiny_model)).returncode == 0


def test_the_parameter_to_flag_map_is_derived_from_the_commands() -> None:
    """Issue 30: errors name library parameters and the CLI speaks flags; the map comes from the commands' own option
    declarations (plus four parameters whose option is named otherwise), and gives what the hand-kept table gave."""
    from c2s_cli.cli import bids, denoise, info, serve, train  # noqa: F401 - registers the commands
    from c2s_cli.cli.app import _ALIASES, flag_of

    expected = {
        "output": "-o", "model": "--model", "sigma": "--sigma", "coils": "--noise-coils", "vst": "--no-vst",
        "strength": "--strength", "tta": "--tta", "planes": "--planes", "slice_axis": "--slice-axis",
        "dtype": "--dtype", "mask": "--mask", "guides": "--guide", "adapt": "--adapt", "residual": "--residual",
        "preview": "--preview", "report": "--report", "sigma_map": "--sigma-map", "save_sigma_map": "--save-sigma-map",
        "device": "--device", "precision": "--precision", "threads": "--threads", "batch_size": "--batch-size",
        "part_id": "--part-id", "reference": "--reference", "run_dir": "--run-dir", "series": "--series",
        "resume": "--resume", "init": "--init", "guide_names": "--guide-names", "desc": "--desc",
        "bids_filter_file": "--bids-filter-file", "bids_dir": "BIDS_DIR", "output_dir": "OUTPUT_DIR",
        "config": "--config", "host": "--host", "port": "--port", "ae_title": "--ae-title", "spool": "--spool",
        "send": "--send", "allow": "--allow", "stable_seconds": "--stable-seconds", "min_slices": "--min-slices",
        "retry_seconds": "--retry-seconds", "retry_max_seconds": "--retry-max-seconds", "keep_days": "--keep-days",
        "tls_cert": "--tls-cert", "tls_key": "--tls-key", "tls_ca": "--tls-ca", "send_tls_ca": "--send-tls-ca"}
    assert {k: flag_of(k) for k in expected} == expected
    assert len(_ALIASES) == 4 and flag_of("no_such_parameter") is None
