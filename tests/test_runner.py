"""The one runner (c2s_cli.runner): order, skip-existing, keep-going, records, report, hooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from c2s_cli import runner
from c2s_cli.batch import Report
from c2s_cli.config import DenoiseOptions
from c2s_cli.errors import InputError, OutputError


class FakeDenoiser:
    """Records the calls; fails on inputs named bad*; writes the output so that skip-existing can see it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def denoise_file(self, src: Path, dst: Path, options: Any, **kw: Any) -> dict[str, Any]:
        self.calls.append(src.name)
        if src.name.startswith("bad"):
            raise InputError(f"{src}: damaged")
        if kw.get("on_warning"):
            kw["on_warning"]("a warning")
        dst.write_text("out")
        return {"input": str(src), "output": str(dst), "status": "ok", "noise": [{"sigma": 1.0}]}


def jobs(tmp_path: Path, names: list[str]) -> list[runner.Job]:
    return [runner.Job(tmp_path / n, tmp_path / f"{n}.out", DenoiseOptions()) for n in names]


def test_jobs_run_in_the_order_given_with_one_record_each(tmp_path: Path) -> None:
    den = FakeDenoiser()
    warned: list[tuple[str, str]] = []
    recs = runner.run(den, jobs(tmp_path, ["c", "a", "bad1", "b"]), keep_going=True,
                      on_warning=lambda job, w: warned.append((job.input.name, w)))
    assert den.calls == ["c", "a", "bad1", "b"]
    assert [r.status for r in recs] == ["ok", "ok", "failed", "ok"]
    assert recs[2].to_dict() == {"input": str(tmp_path / "bad1"), "output": str(tmp_path / "bad1.out"),
                                 "status": "failed", "error": f"{tmp_path / 'bad1'}: damaged"}
    assert recs[0].to_dict()["noise"] == [{"sigma": 1.0}]  # an ok record is the pipeline's
    assert warned == [("c", "a warning"), ("a", "a warning"), ("b", "a warning")]


def test_without_keep_going_the_first_failure_ends_the_run(tmp_path: Path) -> None:
    den = FakeDenoiser()
    seen: list[str] = []
    with pytest.raises(InputError):
        runner.run(den, jobs(tmp_path, ["a", "bad", "b"]), on_record=lambda r: seen.append(r.status))
    assert den.calls == ["a", "bad"] and seen == ["ok"]


def test_skip_existing_and_known_errors_run_nothing(tmp_path: Path) -> None:
    den = FakeDenoiser()
    (tmp_path / "a.out").write_text("earlier")
    js = [*jobs(tmp_path, ["a", "b"]), runner.Job(tmp_path / "gone", tmp_path / "g.out", DenoiseOptions(),
                                                   error="gone: no such file")]
    recs = runner.run(den, js, keep_going=True, skip_existing=True)
    assert [r.status for r in recs] == ["skipped", "ok", "failed"] and den.calls == ["b"]
    assert (tmp_path / "a.out").read_text() == "earlier" and recs[2].error == "gone: no such file"


def test_hooks_and_the_report(tmp_path: Path) -> None:
    """before may refuse a job (a failed record, nothing run); after adds to the record; the report gets each record
    as it ends, in the caller's view (full or not) and with the caller's fields."""
    den = FakeDenoiser()
    js = [runner.Job(tmp_path / n, tmp_path / f"{n}.out", DenoiseOptions(), fields={"subject": n}) for n in "xyz"]

    def before(job: runner.Job) -> None:
        if job.input.name == "y":
            raise OutputError("y.out: a symbolic link")

    rep = Report(tmp_path / "r.jsonl", [])
    recs = runner.run(den, js, keep_going=True, report=rep, full_records=False, before=before,
                      after=lambda job, result: {"sigma": result["noise"][0]["sigma"]})
    rep.close()
    assert den.calls == ["x", "z"] and [r.status for r in recs] == ["ok", "failed", "ok"]
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert lines[0] == {"input": str(tmp_path / "x"), "output": str(tmp_path / "x.out"), "subject": "x",
                        "status": "ok", "sigma": 1.0}
    assert lines[1]["status"] == "failed" and "symbolic link" in lines[1]["error"]


def test_no_cli_serve_or_bids_module_holds_a_loop_over_files() -> None:
    """Issue 30: only the runner calls the per-file pipeline."""
    import ast

    root = Path(runner.__file__).parent

    def calls_it(path: Path) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "denoise_file"
                   for n in ast.walk(ast.parse(path.read_text())))

    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if calls_it(p)) == ["runner.py"]
