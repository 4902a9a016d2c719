"""Batch planning for ``c2s denoise``: input expansion, series labels, sharding, output names, the JSON Lines report.

Everything here runs before any model is loaded: a plan whose outputs collide, land on or inside an input, or hold an
input is refused as a whole (a :class:`~c2s_cli.errors.UsageError`), never half run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from c2s_cli.errors import InputError, OutputError, UsageError
from c2s_cli.io import is_nifti, looks_like_dicom
from c2s_cli.io.atomic import check_clear_of_inputs, check_output, is_temp_name, regular_input


@dataclass(frozen=True)
class Item:
    """One input of a batch: a path (NIfTI file, DICOM file or folder), the series chosen in it, or the reason it
    cannot be run (``error``: a failed record under ``keep_going``)."""

    path: Path
    series: str | None = None
    error: str | None = None
    root: Path | None = None  # the path the user gave (a folder this item was found in)


@dataclass(frozen=True)
class Job:
    """One planned run: input item, output path."""

    item: Item
    output: Path


def read_list(spec: str, stdin: IO[str] | None = None) -> list[str]:
    """``-`` → paths on stdin, ``@file`` → one path per line (``#`` comments), else the spec itself."""
    if spec == "-":
        return [line.strip() for line in (stdin or sys.stdin) if line.strip()]
    if spec.startswith("@"):
        f = Path(spec[1:])
        if not f.is_file():
            raise InputError(f"{spec}: list file not found")
        return [line.strip() for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [spec]


def expand(specs: Iterable[str], series: str | None, *, keep_going: bool = False) -> list[Item]:
    """Inputs as items: NIfTI files, DICOM files/folders; a folder of NIfTI files gives each file; a folder with
    several DICOM series gives one item per series unless ``series`` picks one. c2s's own temporary names are never
    inputs. With ``keep_going`` a missing or unusable path is an item with an ``error`` instead of an exception."""
    from c2s_cli.io.dicom import list_series

    items: list[Item] = []
    paths = list(dict.fromkeys(Path(p) for s in specs for p in read_list(s)))  # the order given, each path once
    for p in paths:
        try:
            items += [Item(it.path, it.series, None, p) for it in _expand_one(p, series, list_series)]
        except InputError as exc:
            if not keep_going:
                raise
            items.append(Item(p, series, str(exc), p))
    return items


def input_paths(items: list[Item]) -> list[Path]:
    """Every input path of a run: the items and the folders the user named (outputs may touch none of them)."""
    return sorted({*(it.path for it in items), *(it.root for it in items if it.root is not None)}, key=str)


def _expand_one(p: Path, series: str | None, list_series: Any) -> list[Item]:
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if not regular_input(p):
        raise InputError(f"{p}: not a regular file or folder (a FIFO, device or socket)")
    if p.is_dir():
        niftis = sorted(f for f in p.rglob("*") if f.is_file() and is_nifti(f)
                        and not any(is_temp_name(part) for part in f.relative_to(p).parts))
        if niftis:
            return [Item(f, None) for f in niftis]
        if series is not None:
            return [Item(p, series)]
        infos, _ = list_series(p)
        if not infos:
            raise InputError(f"{p}: no NIfTI file or DICOM image series found")
        return [Item(p, None)] if len(infos) == 1 else [Item(p, i.uid) for i in infos]
    if is_nifti(p) or looks_like_dicom(p):
        return [Item(p, series)]
    raise InputError(f"{p}: unknown format (expected .nii, .nii.gz, a DICOM file or a DICOM folder)")


def out_name(path: Path, series_label: str | None, suffix: str, dicom_out: bool) -> str:
    """``NAME[_sLABEL]SUFFIX`` (a series folder) or ``…SUFFIX.nii.gz``."""
    name = path.name
    for ext in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    if series_label:
        name = f"{name}_s{series_label}"
    return f"{name}{suffix}" if dicom_out else f"{name}{suffix}.nii.gz"


def series_labels(items: list[Item]) -> list[str | None]:
    """Distinguish several series of one folder in output names by their SeriesNumber, or by a UID tail where
    SeriesNumbers repeat."""
    from c2s_cli.io.dicom import list_series

    cache: dict[Path, Any] = {}
    numbers: list[str | None] = []
    for it in items:
        if it.series is None or it.error:
            numbers.append(None)
            continue
        if it.path not in cache:
            cache[it.path] = list_series(it.path)[0] if it.path.is_dir() else []
        match = [i for i in cache[it.path] if i.uid == it.series or str(i.number) == it.series]
        numbers.append(str(match[0].number) if match and match[0].number is not None else None)
    labels: list[str | None] = []
    for it, num in zip(items, numbers):
        if it.series is None or it.error:
            labels.append(None)
            continue
        clash = num is None or sum(1 for j, n in zip(items, numbers) if j.path == it.path and n == num) > 1
        labels.append(f"{num}_{it.series.split('.')[-1]}" if clash and num is not None
                      else (it.series.split(".")[-1] if clash else num))
    return labels


def shard(items: list[Any], num_parts: int | None, part_id: int | None) -> list[Any]:
    """Part ``part_id`` of ``num_parts`` (defaults from ``SLURM_ARRAY_TASK_*``), in the order given. The parts are
    dealt round robin over the items sorted by path and series, so that every task of an array gets the same split
    whatever order its input listing came in."""
    env_n, env_k = os.environ.get("SLURM_ARRAY_TASK_COUNT"), os.environ.get("SLURM_ARRAY_TASK_ID")
    n = num_parts if num_parts is not None else (int(env_n) if env_n else 1)
    k = part_id if part_id is not None else (int(env_k) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0")) if env_k else 0)
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"part_id {k} must be in [0, num_parts {n})", param="part_id")
    order = sorted(range(len(items)), key=lambda i: (str(getattr(items[i], "path", items[i])),
                                                     str(getattr(items[i], "series", ""))))
    mine = set(order[k::n])
    return [it for i, it in enumerate(items) if i in mine]


def plan(items: list[Item], output: Path, *, single: bool, suffix: str) -> list[Job]:
    """Output paths for ``items``: ``output`` itself for a single input, else ``output/NAME…``.

    Raises:
        UsageError: two inputs map to one output name (the clash is named, before anything runs).
    """
    if single:
        return [Job(items[0], output)]
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output}: with several inputs the output must be a folder", param="output")
    out = Path(os.path.realpath(output))
    for src in input_paths(items):
        s = Path(os.path.realpath(src))
        if out == s or s in out.parents:
            raise OutputError(f"output folder {output} is, or lies inside, the input {src}; choose a folder outside "
                              "every input", param="output")
    labels = series_labels(items)
    jobs = [Job(it, output / out_name(it.path, lab, suffix, not is_nifti(it.path))) for it, lab in zip(items, labels)]
    seen: dict[str, Job] = {}
    for j in jobs:
        key = j.output.name.lower() if sys.platform == "darwin" else j.output.name
        if key in seen:
            raise OutputError(f"inputs {seen[key].item.path} and {j.item.path} would both be written to {j.output}; "
                              "denoise them in separate runs or rename one", param="output")
        seen[key] = j
    return jobs


def check_plan(jobs: list[Job], *, force: bool, skip_existing: bool) -> None:
    """Check every planned output against **all** inputs of the run (and existence without ``force``), before any
    model is loaded. With ``skip_existing`` an existing output is left for the run to skip."""
    inputs = input_paths([j.item for j in jobs])
    for j in jobs:
        if j.item.error:
            continue
        if skip_existing and j.output.exists():  # skipped by the run; it still may not be an input
            check_clear_of_inputs(j.output, inputs, what="output", param="output", hint="choose another output folder")
            continue
        check_output(j.output, inputs, force=force, need_parent=False)


class Report:
    """JSON Lines report: one record per input, appended and flushed as each input ends."""

    def __init__(self, path: Path | None, inputs: list[Path], outputs: Iterable[Path | None] = ()) -> None:
        self.path = path
        self.fh: IO[str] | None = None
        if path is not None:
            _check_report(path, inputs)
            mine = Path(os.path.realpath(path))
            for o in outputs:
                if o is not None and Path(os.path.realpath(o)) == mine:
                    raise OutputError(f"report {path} is the same path as an output; give it its own path",
                                      param="report")
            try:
                self.fh = open(path, "a")
            except OSError as exc:
                raise OutputError(f"report {path}: cannot open ({exc.strerror})", param="report") from None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it; a failed write (a full disk) is one line naming the report."""
        if self.fh is not None:
            try:
                self.fh.write(json.dumps(record, default=str) + "\n")
                self.fh.flush()
            except OSError as exc:
                raise OutputError(f"report {self.path}: cannot write the record of {record.get('input')} "
                                  f"({exc.strerror or exc}); its outputs were written", param="report") from None

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def is_record(obj: object) -> bool:
    """Whether a parsed JSON Lines entry is a c2s record (an object with "input" and "status")."""
    return isinstance(obj, dict) and "input" in obj and "status" in obj


def _check_report(path: Path, inputs: list[Path]) -> None:
    """A report is appended to: it may exist, but may not be, lie in or hold an input, and an existing one must be
    a JSON Lines file (never append to a scan or a document)."""
    check_clear_of_inputs(path, inputs, what="report", param="report", hint="write the report elsewhere")
    if path.exists():
        if not path.is_file():
            raise OutputError(f"report {path} exists and is not a regular file", param="report")
        try:
            with open(path, encoding="utf-8") as fh:
                mine = all(is_record(json.loads(line)) for line in fh if line.strip())
        except (UnicodeDecodeError, json.JSONDecodeError, OSError):
            mine = False
        if not mine:  # a JSON sidecar, a table of numbers, anything else: never appended to
            raise OutputError(f"report {path} exists and is not a c2s report (JSON Lines of c2s records); c2s only "
                              "appends to an empty file or its own reports", param="report")
    elif not path.parent.is_dir():
        raise OutputError(f"report folder {path.parent} does not exist", param="report")
