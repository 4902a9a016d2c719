"""The durable spool of ``c2s serve``: received instances and jobs, each step safe against ``kill -9``.

Layout (every folder mode 0700)::

    tmp/               instances being received (never acknowledged yet; cleared at start)
    incoming/<key>/    received instances of one series (<SOPInstanceUID>.dcm), waiting until the series is stable
    jobs/<id>/         a series being processed: job.json, input/ (the instances), output/ (the derived series)
    done/<id>/         delivered or ignored jobs, kept ``keep_days``
    failed/<id>/       jobs that could not be denoised, kept ``keep_days``
    status.json        the node's state (queue, destinations, last error)

``<key>`` is the first 16 hex digits of SHA-256(SeriesInstanceUID) and ``<id>`` a time stamp plus the key: no
patient attribute is in any name. An instance is acknowledged only after its bytes are fsync'ed and renamed into
``incoming/`` (and the folder fsync'ed). A job is claimed by writing ``job.json`` first and then renaming the series
folder into it: a job without ``input/`` at start-up was never claimed and is removed, the series is still waiting.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c2s_cli.errors import UsageError

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SPOOL_MARK = ".c2s-spool"  # written into every spool c2s creates; a folder without it is never reorganised
_FOLDERS = ("tmp", "incoming", "jobs", "done", "failed")


def series_key(series_uid: str) -> str:
    """The spool's name for a series: 16 hex digits of SHA-256(SeriesInstanceUID)."""
    return hashlib.sha256(series_uid.encode()).hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(tmp: Path, data: bytes) -> None:
    """Create ``tmp`` (mode 0600, must not exist) with ``data`` and fsync it."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@dataclass
class Job:
    """One series being processed: its folder and its state (``job.json``)."""

    path: Path
    state: dict[str, Any]

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def key(self) -> str:
        return str(self.state["key"])

    @property
    def input(self) -> Path:
        return self.path / "input"

    @property
    def output(self) -> Path:
        return self.path / "output"

    def save(self) -> None:
        write_durably(self.path / "job.json", json.dumps(self.state, indent=1, sort_keys=True).encode())

    def instances(self) -> list[Path]:
        return sorted(p for p in self.input.iterdir() if p.suffix == ".dcm")


DELIVERED_DAYS = 7.0  # how long the spool remembers which instances of a deleted job were delivered


class Spool:
    """The spool folder. Thread-safe: receiving threads call :meth:`receive`, the worker everything else."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- set-up
    def open(self) -> list[str]:
        """Create the layout (mode 0700), clear partial receives, drop never-claimed jobs; returns notes for the log."""
        notes: list[str] = []
        self._check_ours()
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not (self.root / SPOOL_MARK).exists():
                write_durably(self.root / SPOOL_MARK, f"c2s spool, created {time.strftime('%Y-%m-%d %H:%M')}\n"
                              .encode())
            if self.root.stat().st_mode & 0o077:
                os.chmod(self.root, 0o700)
                notes.append(f"spool {self.root}: permissions set to 0700")
            for name in _FOLDERS:
                (self.root / name).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"spool {self.root}: cannot create ({exc.strerror})", param="spool") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise UsageError(f"spool {self.root}: not writable", param="spool")
        stale = list((self.root / "tmp").iterdir())
        for p in stale:
            _remove(p)
        if stale:
            notes.append(f"{len(stale)} partial receive(s) from an earlier run removed (never acknowledged)")
        for job in (self.root / "jobs").iterdir():
            if not (job / "input").is_dir():  # the claim did not complete: the series is still in incoming/
                _remove(job)
            for leftover in job.glob(".*.part"):
                leftover.unlink(missing_ok=True)
        return notes

    def _check_ours(self) -> None:
        """The spool is a new or empty folder, or one c2s made (it holds ``SPOOL_MARK``): start-up clears and
        reorganises what is inside, so a folder with anything else in it is refused before anything is touched."""
        root = self.root
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise UsageError(f"spool {root}: not a folder", param="spool")
        if root.is_dir() and not (root / SPOOL_MARK).is_file() and any(root.iterdir()):
            raise UsageError(f"spool {root}: the folder holds files c2s did not put there (no {SPOOL_MARK}); give a "
                             "new or empty folder", param="spool")

    # ------------------------------------------------------------------------------------------- receive
    def receive(self, data: bytes, series_uid: str, sop_uid: str) -> str:
        """Store one instance durably; returns the series key. Raises OSError when the disk refuses it."""
        key = series_key(series_uid)
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            _write_synced(tmp, data)
            with self._lock:  # the worker claims a series folder under the same lock
                folder = self.root / "incoming" / key
                if not folder.is_dir():
                    folder.mkdir(mode=0o700)
                    _fsync_dir(folder.parent)
                os.replace(tmp, folder / f"{sop_uid}.dcm")
                _fsync_dir(folder)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return key

    def waiting(self) -> dict[str, float]:
        """Series waiting in ``incoming/``: key → seconds since their last instance arrived."""
        now = time.time()
        out: dict[str, float] = {}
        for folder in (self.root / "incoming").iterdir():
            times = [p.stat().st_mtime for p in folder.iterdir() if p.suffix == ".dcm"]
            if times:
                out[folder.name] = now - max(times)
        return out

    # ------------------------------------------------------------------------------------------- jobs
    def claim(self, key: str) -> Job:
        """Turn the waiting series ``key`` into a job. Instances of the same series still kept from an earlier job
        (late instances after a job) are linked in, so the new job denoises the whole series."""
        job_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}-{key}"
        path = self.root / "jobs" / job_id
        path.mkdir(mode=0o700)
        folder = self.root / "incoming" / key
        job = Job(path, {"key": key, "created": time.time(), "stage": "claimed", "delivered": {}, "attempts": 0})
        with self._lock:
            earlier = self._earlier_input(key, exclude=path)
            merged = 0
            if earlier is not None:
                for p in earlier.iterdir():
                    if p.suffix == ".dcm" and not (folder / p.name).exists():
                        _link_or_copy(p, folder / p.name)
                        merged += 1
            job.state["merged_from_earlier"] = merged
            job.save()
            os.replace(folder, job.input)
            _fsync_dir(folder.parent)
            _fsync_dir(path)
        return job

    def _earlier_input(self, key: str, exclude: Path) -> Path | None:
        """The input folder of the newest other job of series ``key`` still in the spool (jobs/, done/, failed/)."""
        found = [p for where in ("jobs", "done", "failed") for p in (self.root / where).glob(f"*-{key}")
                 if p != exclude and (p / "input").is_dir()]
        return max(found, key=lambda p: p.name[:25]) / "input" if found else None

    def jobs(self) -> list[Job]:
        """The claimed jobs, oldest first."""
        out = []
        for path in sorted((self.root / "jobs").iterdir()):
            try:
                state = json.loads((path / "job.json").read_text())
            except (OSError, ValueError):
                continue
            if (path / "input").is_dir():
                out.append(Job(path, state))
        return out

    def finish(self, job: Job, where: str) -> Path:
        """Move a finished job to ``done/`` or ``failed/`` (kept for the retention period)."""
        job.state["finished"] = time.time()
        job.save()
        target = self.root / where / job.id
        os.replace(job.path, target)
        _fsync_dir(target.parent)
        job.path = target
        return target

    def purge(self, keep_days: float) -> int:
        """Delete finished jobs older than ``keep_days``; returns how many."""
        limit = time.time() - keep_days * 86400
        n = 0
        for where in ("done", "failed"):
            for path in list((self.root / where).iterdir()):
                try:
                    finished = json.loads((path / "job.json").read_text()).get("finished", 0)
                except (OSError, ValueError):
                    finished = path.stat().st_mtime
                if finished <= limit:
                    _remove(path)
                    n += 1
        marks = self.root / "delivered"
        for mark in list(marks.iterdir()) if marks.is_dir() else []:  # forget what was delivered long ago
            if mark.stat().st_mtime < time.time() - DELIVERED_DAYS * 86400:
                mark.unlink(missing_ok=True)
        return n

    # ------------------------------------------------------------------------------ delivered series, jobs deleted
    def remember_delivered(self, job: Job) -> None:
        """Record which instances of series ``job.key`` were delivered, for when the job itself is deleted at once
        (``keep_days`` 0): a late instance can then be told from a new series (:meth:`missing_earlier`)."""
        folder = self.root / "delivered"
        folder.mkdir(exist_ok=True)
        names = sorted(p.name for p in job.instances())
        tmp = folder / f".{job.key}.tmp"
        tmp.write_text(json.dumps({"time": time.time(), "instances": names}))
        os.replace(tmp, folder / job.key)

    def missing_earlier(self, job: Job) -> list[str]:
        """The instances of an already delivered (and deleted) job of this series that ``job`` lacks: a late
        instance arriving alone after its series was delivered with ``keep_days`` 0. Empty for a new series or a
        complete re-send. Records older than ``DELIVERED_DAYS`` are forgotten."""
        mark = self.root / "delivered" / job.key
        try:
            rec = json.loads(mark.read_text())
        except (OSError, ValueError):
            return []
        if rec.get("time", 0) < time.time() - DELIVERED_DAYS * 86400:
            return []
        have = {p.name for p in job.instances()}
        return [n for n in rec.get("instances", []) if n not in have]

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for _ in (self.root / name).iterdir()) for name in ("incoming", "jobs", "done", "failed")}

    def write_status(self, status: dict[str, Any]) -> None:
        write_durably(self.root / "status.json", json.dumps(status, indent=1, sort_keys=True).encode())


def read_status(root: Path) -> dict[str, Any]:
    """The last ``status.json`` a node wrote in spool ``root``."""
    path = Path(root) / "status.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise UsageError(f"spool {root}: no status.json (has a node run with this spool?)", param="spool") from None
    except ValueError:
        raise UsageError(f"spool {root}: status.json is not valid JSON", param="spool") from None


def read_header(path: Path) -> Any:
    """The header of a spooled instance (no pixels)."""
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def check_output_folder(output: Path) -> None:
    """Create ``output`` (the local destination of derived series) if needed and check it is writable, at start-up,
    before any series is received."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"output {output}: cannot create ({exc.strerror})", param="output") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise UsageError(f"output {output}: not writable", param="output")


def copy_series(src: Path, dst: Path) -> None:
    """Copy a derived series folder ``src`` to ``dst`` atomically (replacing an earlier c2s copy of it)."""
    from c2s_cli.io.atomic import atomic_path

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst, is_dir=True) as tmp:
        for p in sorted(src.iterdir()):
            shutil.copy2(p, tmp / p.name)


def copy_missing(files: list[Path], target: Path) -> None:
    """Forwarded (unchanged) instances into ``target``: each copied under a temporary name and renamed; an instance
    already there (same SOP Instance UID, the same file name) is kept, nothing is replaced."""
    target.mkdir(parents=True, exist_ok=True)
    for p in files:
        if not (target / p.name).exists():
            tmp = target / f".{p.name}.part"
            shutil.copy2(p, tmp)
            os.replace(tmp, target / p.name)


def iter_files(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith("."))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
