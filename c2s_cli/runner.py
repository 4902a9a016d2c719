"""One runner: a list of jobs through :meth:`c2s_cli.api.Denoiser.denoise_file`, with skip-existing, keep-going,
one record per job and the JSON Lines report.

``c2s denoise``, ``c2s bids`` and ``c2s serve`` are thin layers over it: they make the jobs and add only their own
concerns through the hooks (the CLI its progress bar and log lines, BIDS its link checks, sidecars and names, the
node its spool). No other module holds a loop over files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2s_cli.errors import C2SError, InputError

if TYPE_CHECKING:
    from c2s_cli.batch import Report
    from c2s_cli.config import DenoiseOptions


@dataclass(frozen=True)
class Job:
    """One input to denoise into one output.

    Attributes:
        input / output: the scan (NIfTI file, DICOM file or folder) and where its result goes.
        options: the :class:`~c2s_cli.config.DenoiseOptions` of this job (series, preview, …).
        error: a reason known before the run (a missing input of a batch): the job fails with it, nothing runs.
        fields: the caller's own fields of the record (BIDS entities, relative names), shown before the outcome.
    """

    input: Path
    output: Path
    options: DenoiseOptions
    error: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    """What happened to one job: ``status`` "ok", "skipped" or "failed"; the pipeline's record when ok
    (``result``), the one-line reason when failed (``error``), and what the caller's ``after`` hook added."""

    job: Job
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, full: bool = True) -> dict[str, Any]:
        """The record as a plain dict (``--json``, ``--report``, BIDS logs). ``full``: an ok record is the
        pipeline's whole record (as ``c2s denoise --json`` prints it); else the job's fields, the status and what
        the ``after`` hook added."""
        base: dict[str, Any] = {"input": str(self.job.input), "output": str(self.job.output), **self.job.fields,
                                "status": self.status}
        if self.status == "ok" and full and self.result is not None:
            return {**self.result, **self.job.fields, **self.extra}
        if self.error is not None:
            base["error"] = self.error
        return {**base, **self.extra}


def run(
    denoiser: Any,
    jobs: Sequence[Job],
    *,
    inputs: Sequence[Path] = (),
    keep_going: bool = False,
    skip_existing: bool = False,
    report: Report | None = None,
    full_records: bool = True,
    before: Callable[[Job], None] | None = None,
    after: Callable[[Job, dict[str, Any]], dict[str, Any] | None] | None = None,
    on_start: Callable[[Job], None] | None = None,
    on_record: Callable[[Record], None] | None = None,
    on_progress: Callable[[Job, str, int, int], None] | None = None,
    on_warning: Callable[[Job, str], None] | None = None,
    message: Callable[[C2SError], str] = str,
) -> list[Record]:
    """Run ``jobs`` in order through ``denoiser.denoise_file``; one :class:`Record` each.

    Args:
        inputs: every input of the run (no output may land on or in one; :func:`~c2s_cli.io.atomic.check_output`).
        keep_going: a failing job (a :class:`~c2s_cli.errors.C2SError`) is a failed record and the run goes on;
            otherwise the error propagates after the jobs before it were recorded.
        skip_existing: a job whose output exists is a skipped record (nothing read).
        report: each record is appended to it as it ends (:class:`~c2s_cli.batch.Report`).
        full_records: what the report gets for an ok job (:meth:`Record.to_dict`).
        before: the caller's checks and preparation of a job (may raise a C2SError: the job fails).
        after: the caller's work on the pipeline's record of an ok job (sidecars, copies); the dict it returns is
            added to the record. A C2SError there fails the job.
        on_start / on_record: a job begins / a record is made (progress bars, log lines).
        on_progress / on_warning: the pipeline's callbacks, with the job.
        message: an error's one line for the record (the CLI maps parameters to its flags).
    """
    records: list[Record] = []
    for job in jobs:
        if skip_existing and job.output.exists():
            rec = Record(job, "skipped")
        else:
            if on_start:
                on_start(job)
            try:
                if job.error is not None:
                    raise InputError(job.error)
                if before:
                    before(job)
                result = denoiser.denoise_file(
                    job.input, job.output, job.options, inputs=inputs,
                    on_progress=(lambda stage, done, total, j=job: on_progress(j, stage, done, total))
                    if on_progress else None,
                    on_warning=(lambda w, j=job: on_warning(j, w)) if on_warning else None)
                rec = Record(job, "ok", result=result)
                if after:
                    rec.extra.update(after(job, result) or {})
            except C2SError as exc:
                if not keep_going:
                    raise
                rec = Record(job, "failed", error=message(exc))
        records.append(rec)
        if report is not None:
            report.write(rec.to_dict(full=full_records))
        if on_record:
            on_record(rec)
    return records
