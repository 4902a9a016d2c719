"""The DICOM node behind ``c2s serve``: receive (:mod:`.scp`), wait for stable series, route, denoise through the
library pipeline, send (:mod:`.scu`) and keep every job in the spool (:mod:`c2s_cli.serve.spool`) until each
destination has acknowledged it.

One worker thread (the caller's) owns the model and the jobs; pynetdicom's threads only receive. Every state change
is on disk before it is relied on, so ``kill -9`` at any moment and a restart end with each received series denoised
and delivered: the derived UIDs are deterministic (source UIDs, the model's SHA-256 and the pixel options, see
:func:`c2s_cli.io.dicom_write.derived_uid`), so a re-send after a crash replaces instances at the destination
instead of duplicating them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from c2s_cli._version import __version__
from c2s_cli import runner
from c2s_cli.errors import redact
from c2s_cli.io.dicom import complex_component
from c2s_cli.serve.spool import Job, Spool, check_output_folder, copy_missing, copy_series, iter_files, read_header
from c2s_cli.serve.config import ServeConfig
from c2s_cli.serve.scp import Receiver
from c2s_cli.serve.scu import SendError, send_series

Event = dict[str, Any]


def slice_count(header: Any, files: int) -> int:
    """The images a series of ``files`` instances holds, from its first instance's ``header``: the frames of a
    multi-frame object, the tiles of a Siemens mosaic (CSA NumberOfImagesInMosaic), else one per file. A damaged
    mosaic header counts as one image per file (the denoise step then refuses it with its own line)."""
    from c2s_cli.errors import InputError
    from c2s_cli.io.mosaic import mosaic_of

    per_file = max(1, int(header.get("NumberOfFrames", 1) or 1))
    try:
        m = mosaic_of(header)
    except InputError:
        m = None
    return files * (m.n if m is not None else per_file)


def route(cfg: ServeConfig, header: Any, count: int) -> tuple[str, str]:
    """``("denoise" | "forward" | "ignore", reason)`` for a series whose first instance has ``header`` and which has
    ``count`` images (:func:`slice_count`: frames of a multi-frame object, tiles of a mosaic)."""
    unmatched = "forward" if cfg.forward_unmatched else "ignore"
    modality = str(header.get("Modality", "") or "")
    if modality != "MR":
        return unmatched, f"modality {modality or 'missing'} (only MR is denoised)"
    if count < cfg.min_slices:
        return unmatched, f"{count} image(s), fewer than min_slices {cfg.min_slices}"
    part = complex_component(header)
    if part in ("phase", "real", "imaginary"):  # denoised as a magnitude, a phase image would be destroyed
        return unmatched, (f"a {part} image of complex data (c2s serve denoises magnitude images; "
                           "c2s denoise takes the parts together: --phase / --imaginary)")
    names = [str(header.get(k, "") or "").lower() for k in ("SeriesDescription", "ProtocolName")]
    if cfg.include and not any(fnmatch.fnmatchcase(n, p.lower()) for p in cfg.include for n in names):
        return unmatched, "matches no include pattern"
    for p in cfg.exclude:
        if any(fnmatch.fnmatchcase(n, p.lower()) for n in names):
            return unmatched, f"matches exclude pattern {p!r}"
    return "denoise", "MR series"


def _same(a: Any, b: Any, tag: str, tol: float = 1e-4) -> bool:
    """Whether two headers agree on ``tag`` (numbers within ``tol``; both missing counts as agreeing)."""
    va, vb = a.get(tag, None), b.get(tag, None)
    if va is None or vb is None:
        return va is None and vb is None
    if isinstance(va, (str, bytes)) or isinstance(vb, (str, bytes)) or not hasattr(va, "__len__"):
        return str(va) == str(vb)
    try:
        return len(va) == len(vb) and all(abs(float(x) - float(y)) <= tol for x, y in zip(va, vb))
    except (TypeError, ValueError):
        return str(va) == str(vb)


def complex_partner(header: Any, count: int, others: list[tuple[str, Any, int]]) -> str | None:
    """The series among ``others`` ((name, first header, instance count)) that holds the other part — phase for a
    magnitude series, magnitude for a phase series — of the same acquisition as the series whose first instance has
    ``header`` and which has ``count`` instances: same study, frame of reference, matrix, orientation and number of
    instances, the nearest SeriesNumber (Siemens numbers the phase series after its magnitude). None when there is
    none, or when two are equally near (ambiguous: never guess which phase belongs to a magnitude)."""
    part = complex_component(header)
    want = ("magnitude", None) if part == "phase" else ("phase",) if part in ("magnitude", None) else ()
    found = []
    for name, other, n in others:
        if n != count or complex_component(other) not in want or str(other.get("Modality", "")) != "MR":
            continue
        if all(_same(header, other, t) for t in ("StudyInstanceUID", "FrameOfReferenceUID", "Rows", "Columns",
                                                  "ImageOrientationPatient", "NumberOfFrames")):
            found.append((abs(int(other.get("SeriesNumber", 0) or 0) - int(header.get("SeriesNumber", 0) or 0)), name))
    found.sort()
    if not found or (len(found) > 1 and found[0][0] == found[1][0]):
        return None
    return found[0][1]


class Node:
    """A running DICOM node. ``denoiser``: an already loaded :class:`~c2s_cli.api.Denoiser` (default: load
    ``cfg.model`` in :meth:`start`). ``on_event``: called with every structured log event (a dict with "event",
    "series" as a short hash, never a patient attribute)."""

    def __init__(self, cfg: ServeConfig, *, denoiser: Any = None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.cfg = cfg
        self.spool = Spool(cfg.spool)
        self.denoiser = denoiser
        self._on_event = on_event or (lambda e: None)
        self.receiver = Receiver(cfg, self.spool, self.event)
        self.stopping = threading.Event()
        self._send_to = {str(d): d for d in cfg.send}  # the --output folder is the destination named "output"
        names = [*self._send_to, *(["output"] if cfg.output is not None else [])]
        self.destinations: dict[str, dict[str, Any]] = {
            n: {"state": "unknown", "failures": 0, "next_try": 0.0, "last_error": None, "last_ok": None} for n in names}
        self.last_error: dict[str, Any] | None = None
        self._headers: dict[Path, tuple[int, Any]] = {}  # pair_phase: first headers by spool folder (_pending_series)
        self.counts = {"denoised": 0, "forwarded": 0, "ignored": 0, "failed": 0, "delivered": 0}
        self.current: str | None = None
        self.started = time.time()
        self._purged = 0.0
        self._status_at = 0.0
        self.state = "starting"

    # --------------------------------------------------------------------------------------- events
    def event(self, e: Event) -> None:
        e = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **e}
        if e.get("level") == "error":
            self.last_error = {"time": e["time"], "message": e.get("reason") or e.get("error") or e["event"]}
        self._on_event(e)

    # --------------------------------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Open the spool (recovering from an earlier run), load the model once, start listening."""
        if self.cfg.output is not None:
            check_output_folder(self.cfg.output)
        for note in self.spool.open():
            self.event({"event": "recovered", "note": note})
        for job in self.spool.jobs():
            self.event({"event": "resumed", "series": job.key[:8], "job": job.id, "stage": job.state["stage"]})
        if self.denoiser is None:
            from c2s_cli.api import Denoiser

            self.denoiser = Denoiser(self.cfg.model, self.cfg.device, threads=self.cfg.denoise.threads,
                                     precision=self.cfg.precision)
        self.receiver.start()
        self.state = "running"
        self.event({"event": "listening", "ae_title": self.cfg.ae_title, "host": self.cfg.host,
                    "port": self.receiver.port, "model": self.denoiser.name, "sha256": self.denoiser.sha256[:16],
                    "destinations": [str(d) for d in self.cfg.send] + ([str(self.cfg.output)] if self.cfg.output
                                                                       else [])})
        self.write_status()

    def serve_forever(self) -> None:
        """Work until :meth:`stop`: then stop accepting, finish the current job and return."""
        try:
            while not self.stopping.is_set():
                if not self.step():
                    self.stopping.wait(self.cfg.poll_seconds)
        finally:
            self.receiver.stop()
            self.state = "stopped"
            self.write_status()
            self.event({"event": "stopped", "queued_jobs": len(self.spool.jobs()),
                        "waiting_series": len(self.spool.waiting())})

    def stop(self) -> None:
        """Ask the node to stop (signal-safe): no new association is accepted once the current step ends."""
        if not self.stopping.is_set():
            self.state = "stopping"
            self.stopping.set()
            threading.Thread(target=self.receiver.stop, name="c2s-serve-stop", daemon=True).start()

    # --------------------------------------------------------------------------------------- work
    def step(self) -> bool:
        """One unit of work: claim the stable series, then process or deliver one job. Returns whether anything
        was done (the caller sleeps otherwise)."""
        did = False
        ready = self.receiver.take_ready()
        for key, age in sorted(self.spool.waiting().items()):
            if age >= self.cfg.stable_seconds or key in ready:
                job = self.spool.claim(key)
                n = len(job.instances())
                merged = job.state.get("merged_from_earlier", 0)
                self.event({"event": "series complete", "series": key[:8], "job": job.id, "instances": n,
                            "why": "association released" if key in ready and age < self.cfg.stable_seconds
                            else f"no instance for {self.cfg.stable_seconds:g} s",
                            **({"note": f"late instances: {n - merged} new, {merged} from the earlier job of this "
                                        "series; the whole series is processed again"} if merged else {})})
                did = True
        now = time.time()
        for job in self.spool.jobs():
            if job.state["stage"] == "claimed":
                if self._process(job):
                    did = True
                    break
                continue  # waiting for the other part of complex data (pair_phase)
            if any(self._due(d, now) for d in self._pending(job)):
                self._deliver(job)
                did = True
                break
        if now - self._purged > 60:
            self._purged = now
            n = self.spool.purge(self.cfg.keep_days)
            if n:
                self.event({"event": "purged", "jobs": n, "keep_days": self.cfg.keep_days})
        if did or now - self._status_at > 10:  # a heartbeat: "updated" tells a monitor the node is alive
            self.write_status()
        return did

    def _pending(self, job: Job) -> list[str]:
        return [n for n in self.destinations if n not in job.state["delivered"]]

    def _due(self, name: str, now: float) -> bool:
        return bool(self.destinations[name]["next_try"] <= now)

    def _pending_series(self, exclude: Job) -> list[tuple[str, Any, int, str, Path]]:
        """(name, first header, instance count, where, folder) of the other series in the spool — waiting in incoming/
        ("incoming"), claimed jobs (their stage: "claimed", "deliver") and kept finished jobs ("done") — for
        :func:`complex_partner`. A folder's header is read once and kept while its instance count is unchanged (a
        job waiting for its partner asks every poll; finished jobs never change)."""
        folders = [(p, p.name, "incoming") for p in sorted((self.spool.root / "incoming").iterdir())]
        folders += [(j.input, j.id, str(j.state["stage"])) for j in self.spool.jobs() if j.id != exclude.id]
        folders += [(p / "input", p.name, "done") for p in sorted((self.spool.root / "done").iterdir())
                    if (p / "input").is_dir()]
        out: list[tuple[str, Any, int, str, Path]] = []
        seen: dict[Path, tuple[int, Any]] = {}
        for folder, name, where in folders:
            try:
                files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
                if not files:
                    continue
                cached = self._headers.get(folder)
                header = cached[1] if cached is not None and cached[0] == len(files) else read_header(files[0])
            except Exception:  # noqa: BLE001 - a series still arriving or unreadable is no partner; routed on its own
                continue
            seen[folder] = (len(files), header)
            out.append((name, header, len(files), where, folder))
        self._headers = seen  # folders gone from the spool are forgotten
        return out

    def _pairing(self, job: Job, header: Any, count: int) -> tuple[str, Path | None]:
        """With ``pair_phase``, for a job of ``count`` instances: ("wait", None) while the other part of the same
        acquisition is still to come or still to be used; ("pair", phase series folder) for a magnitude series whose
        phase series is here; ("alone", None) otherwise (a magnitude series after ``stable_seconds`` more without a
        phase series)."""
        found = self._pending_series(job)
        partner = complex_partner(header, count, [(n, h, c) for n, h, c, _, _ in found])
        where, folder = next(((w, f) for n, _, _, w, f in found if n == partner), (None, None))
        if complex_component(header) == "phase":  # kept until its magnitude series has been denoised with it
            return ("wait", None) if where in ("incoming", "claimed") else ("alone", None)
        if where == "incoming":
            return "wait", None
        if folder is not None:
            return "pair", folder
        waited = time.time() - float(job.state.get("created", 0))
        return ("wait", None) if waited < self.cfg.stable_seconds else ("alone", None)

    def _process(self, job: Job) -> bool:
        """Route a claimed job and denoise it (the derived series goes to ``job.output``). Returns False when the
        job waits for the other part of complex data (``pair_phase``), True once it has been handled."""
        files = job.instances()
        try:
            header = read_header(files[0])
            count = slice_count(header, len(files))
            action, reason = route(self.cfg, header, count)
        except Exception as exc:  # noqa: BLE001 - a header the receiver accepted but routing cannot read
            self._failed(job, f"cannot read the series header ({type(exc).__name__})")
            return True
        options = self.cfg.denoise_options()
        part = complex_component(header)
        if self.cfg.pair_phase and (action == "denoise" or part == "phase") and not job.output.exists():
            how, phase = self._pairing(job, header, len(files))
            if how == "wait":
                if not job.state.get("waiting_for_pair"):
                    job.state["waiting_for_pair"] = time.time()
                    job.save()
                    self.event({"event": "waiting for the other part", "series": job.key[:8],
                                "part": part or "magnitude"})
                return False
            if how == "pair" and phase is not None:
                options = dataclasses.replace(options, phase=phase)
                job.state["phase_series"] = phase.parent.name
            elif action == "denoise":
                self.event({"event": "no phase series", "series": job.key[:8],
                            "note": f"none arrived within {self.cfg.stable_seconds:g} s: denoised as magnitude"})
        self.current = job.key[:8]
        job.state.update(action=action, reason=reason, instances=len(files),
                         last_received=max(p.stat().st_mtime for p in files))
        gone = self.spool.missing_earlier(job) if self.cfg.keep_days == 0 else []
        if gone:  # late instances of a series delivered and deleted: never acknowledged and then silently dropped
            self._failed(job, f"{len(files)} late instance(s) of a series already delivered and deleted "
                              f"(keep_days 0): its other {len(gone)} instance(s) are gone, so it cannot be denoised "
                              "again; send the whole series again, or keep jobs (keep_days > 0)")
            return True
        if action == "ignore":
            self.counts["ignored"] += 1
            self._finish(job, "done")
            self.event({"event": "ignored", "series": job.key[:8], "reason": reason})
            self.current = None
            return True
        if action == "denoise" and not job.output.exists():
            self.event({"event": "denoising", "series": job.key[:8], "instances": len(files)})
            t0 = time.perf_counter()
            try:
                (done,) = runner.run(self.denoiser, [runner.Job(job.input, job.output, options)],
                                     keep_going=True, message=lambda exc: redact(str(exc)))
            except Exception as exc:  # noqa: BLE001 - one series must not stop the node; never silent: logged, kept
                self._failed(job, f"internal error: {type(exc).__name__}: {redact(str(exc))}")
                return True
            if done.status == "failed":
                self._failed(job, str(done.error))
                return True
            record = done.result or {}
            self.counts["denoised"] += 1
            job.state["seconds"] = round(time.perf_counter() - t0, 3)
            job.state["sigma"] = [f.get("sigma") for f in record.get("noise", [])]
            self.event({"event": "denoised", "series": job.key[:8], "instances": len(files),
                        "seconds": job.state["seconds"], "inference_s": record.get("seconds", {}).get("inference"),
                        "warnings": len(record.get("warnings", [])),
                        **({"complex": "with its phase series"} if options.phase is not None else {})})
        elif action == "forward":
            self.counts["forwarded"] += 1
            self.event({"event": "forwarding unchanged", "series": job.key[:8], "reason": reason})
        job.state["stage"] = "deliver"
        job.save()
        self._deliver(job)
        self.current = None
        return True

    def _deliver(self, job: Job) -> None:
        """Send the job's series to every destination (and the --output folder) that has not acknowledged it yet,
        retrying each with backoff; finish the job once all have."""
        folder = job.output if job.state.get("action") == "denoise" else job.input
        files = [p for p in iter_files(folder) if p.suffix == ".dcm"]
        now = time.time()
        for name in self._pending(job):
            if not self._due(name, now):
                continue
            d = self.destinations[name]
            t0 = time.perf_counter()
            try:
                if name == "output":
                    n = self._write_local(job, folder, files)
                else:
                    n = send_series(self._send_to[name], files, calling_ae=self.cfg.ae_title,
                                    tls_ca=self.cfg.send_tls_ca)
            except Exception as exc:  # noqa: BLE001 - SendError, OSError, or pynetdicom's own: retried with backoff
                d["failures"] += 1
                delay = min(self.cfg.retry_seconds * 2 ** (d["failures"] - 1), self.cfg.retry_max_seconds)
                err = redact(str(exc))
                err = err if isinstance(exc, (SendError, OSError)) else f"{type(exc).__name__}: {err}"
                d.update(state="down", next_try=time.time() + delay, last_error=err)
                job.state["attempts"] = job.state.get("attempts", 0) + 1
                job.save()
                self.event({"event": "send failed", "series": job.key[:8], "destination": name, "error": err,
                            "retry_in_s": round(delay, 1), "level": "error"})
                continue
            d.update(state="ok", failures=0, next_try=0.0, last_ok=time.time(), last_error=None)
            job.state["delivered"][name] = time.time()
            job.save()
            self.event({"event": "sent" if name != "output" else "written", "series": job.key[:8],
                        "destination": name, "instances": n, "seconds": round(time.perf_counter() - t0, 3),
                        "latency_s": round(time.time() - job.state.get("last_received", time.time()), 2)})
        if not self._pending(job):
            self.counts["delivered"] += 1
            self._finish(job, "done")

    def _write_local(self, job: Job, folder: Path, files: list[Path]) -> int:
        """The series into ``--output``/STUDY_UID/SERIES_UID/ (a derived series replaces its earlier copy)."""
        target = self._local_target(files)
        if job.state.get("action") == "denoise":
            copy_series(folder, target)
        else:
            copy_missing(files, target)
        return len(files)

    def _failed(self, job: Job, why: str) -> None:
        job.state["error"] = why
        self.counts["failed"] += 1
        message = _redact(why, job)
        self._finish(job, "failed")  # on disk before anyone is told (a monitor may look in failed/ at once)
        self.event({"event": "failed", "series": job.key[:8], "error": message, "level": "error",
                    "kept_in": "failed/"})
        self.current = None

    def _local_target(self, files: list[Path]) -> Path:
        h = read_header(files[0])
        return self.cfg.output / str(h.StudyInstanceUID) / str(h.SeriesInstanceUID)  # type: ignore[operator]

    def _finish(self, job: Job, where: str) -> None:
        if where == "done" and self.cfg.keep_days == 0:
            if job.state.get("action") == "denoise":
                self.spool.remember_delivered(job)
            self.spool.finish(job, where)
            self.spool.purge(0)
        else:
            self.spool.finish(job, where)

    # --------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        jobs = self.spool.jobs()
        return {
            "c2s": __version__, "pid": os.getpid(), "state": self.state, "ae_title": self.cfg.ae_title,
            "host": self.cfg.host, "port": getattr(self.receiver, "port", self.cfg.port),
            "started": self.started, "updated": time.time(),
            "queue": {"waiting_series": len(self.spool.waiting()),
                      "to_denoise": sum(j.state["stage"] == "claimed" for j in jobs),
                      "to_deliver": sum(j.state["stage"] == "deliver" for j in jobs)},
            "current": self.current, "received_instances": self.receiver.received, "jobs": dict(self.counts),
            "last_error": self.last_error,
            "destinations": {k: {**v, "next_try": v["next_try"] or None} for k, v in self.destinations.items()},
        }

    def write_status(self) -> None:
        self._status_at = time.time()
        self.spool.write_status(self.status())


def _redact(message: str, job: Job) -> str:
    """An error message with the spool path shortened to the job (the message never holds patient attributes)."""
    return message.replace(str(job.path), f"job {job.id}")
