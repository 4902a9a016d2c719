"""``c2s serve`` as a process: dcmtk at both ends, SIGTERM, and ``kill -9`` at every stage followed by a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import c2s, dcmtk, wait_listening
from serve_helpers import Destination, free_port, send, wait_for
from test_serve import check_derived, series


class Server:
    """``python -m c2s_cli serve … --log-json`` with its JSON log collected from stderr."""

    def __init__(self, spool: Path, port: int, model: Path, *extra: str) -> None:
        self.port = port
        args = [sys.executable, "-m", "c2s_cli", "serve", "--spool", str(spool), "--port", str(port), "--model",
                str(model), "--device", "cpu", "--stable-seconds", "0.5", "--retry-seconds", "0.2",
                "--retry-max-seconds", "0.5", "--log-json", *extra]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "NO_COLOR": "1"})
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for(lambda: self.seen("listening") or self.proc.poll() is not None, 60, "the node to listen")
        assert self.proc.poll() is None, self.other

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.other.append(line)

    def seen(self, name: str, n: int = 1) -> bool:
        return sum(e["event"] == name for e in list(self.events)) >= n

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def dest() -> Iterator[Destination]:
    d = Destination(delay=0.0)
    d.start()
    yield d
    d.stop()


@pytest.mark.skipif(not (dcmtk("storescu") and dcmtk("storescp") and dcmtk("echoscu")), reason="dcmtk not installed")
def test_dcmtk_at_both_ends_and_sigterm(tmp_path: Path, phantom: np.ndarray, tiny_model: Path) -> None:
    files = series(tmp_path / "s", phantom, n=10)
    received = tmp_path / "pacs"
    received.mkdir()
    dport = free_port()
    pacs = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", "-od", str(received), str(dport)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(dport)
    srv = Server(tmp_path / "spool", free_port(), tiny_model, "--send", f"PACS@127.0.0.1:{dport}", "--allow",
                 "STORESCU")
    try:
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "C2S", "127.0.0.1", str(srv.port),
                            *map(str, files)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: srv.seen("sent"), 60, "the derived series at storescp")
        check_derived([pydicom.dcmread(p) for p in received.iterdir()], files)
        # an unknown calling AE is rejected by the running node, dcmtk's echoscu sees the rejection
        r = subprocess.run([dcmtk("echoscu"), "-aet", "NOBODY", "-aec", "C2S", "127.0.0.1", str(srv.port)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "Rejected" in (r.stdout + r.stderr)
        r = c2s("serve", "--status", "--spool", str(tmp_path / "spool"))
        st = json.loads(r.stdout)
        assert st["alive"] and st["state"] == "running" and st["jobs"]["delivered"] == 1
        # SIGTERM: stop accepting, finish, exit 0
        assert srv.stop() == 0
        st = json.loads(c2s("serve", "--status", "--spool", str(tmp_path / "spool")).stdout)
        assert not st["alive"] and st["state"] == "stopped"
    finally:
        srv.stop()
        pacs.terminate()
        pacs.wait(10)


def _sources(files: list[Path], dest: Destination) -> set[str]:
    return {str(d.SourceImageSequence[0].ReferencedSOPInstanceUID) for d in dest.final.values()}


@pytest.mark.parametrize("stage", ["receive", "process", "send"])
def test_kill_9_then_restart_delivers_every_series_once(tmp_path: Path, phantom: np.ndarray, tiny_model: Path,
                                                        stage: str) -> None:
    big = np.tile(phantom, (2, 2, 2))  # 192×192×32: a job long enough to be killed in
    files = series(tmp_path / "s", big)
    dest = Destination(delay=0.05 if stage == "send" else 0.0)
    dport = dest.start()
    spool = tmp_path / "spool"
    port = free_port()
    args = ("--send", f"DEST@127.0.0.1:{dport}")
    srv = Server(spool, port, tiny_model, *args)
    try:
        if stage == "receive":
            box: list[list[int]] = []
            sender = threading.Thread(target=lambda: box.append(send(port, files)))
            sender.start()
            wait_for(lambda: len(list((spool / "incoming").glob("*/*.dcm"))) >= 10, 60, "10 received instances")
            srv.kill9()
            sender.join(60)
            assert any(s != 0 for s in box[0])  # the association broke before the end
            assert dest.count() == 0
        elif stage == "process":
            assert set(send(port, files)) == {0}
            wait_for(lambda: srv.seen("denoising"), 60, "the job to start")
            srv.kill9()
            (job,) = (spool / "jobs").iterdir()
            assert json.loads((job / "job.json").read_text())["stage"] == "claimed" and dest.count() == 0
        else:
            assert set(send(port, files)) == {0}
            wait_for(lambda: dest.count() >= 5, 60, "the sending to start")
            srv.kill9()
            assert dest.count() < len(files)
        srv = Server(spool, port, tiny_model, *args)
        if stage == "receive":  # the modality re-sends what was not acknowledged (here: the whole series)
            assert set(send(port, files)) == {0}
        wait_for(lambda: dest.count() == len(files) and not list((spool / "jobs").iterdir())
                 and not list((spool / "incoming").iterdir()), 120, "every instance at the destination")
        time.sleep(1.0)  # nothing more may arrive
        check_derived(list(dest.final.values()), files)  # one derived series, every source once
        assert _sources(files, dest) == {str(pydicom.dcmread(p).SOPInstanceUID) for p in files}
        if stage != "receive":
            assert any(e["event"] == "resumed" for e in srv.events)
    finally:
        srv.stop()
        dest.stop()


def test_cli_errors_name_flags(tmp_path: Path) -> None:
    r = c2s("serve", "--spool", str(tmp_path / "s"), "--send", "PACS:104")
    assert r.returncode == 2 and r.stderr.strip().startswith("c2s: error: --send 'PACS:104': expected AET@HOST:PORT")
    r = c2s("serve", "--spool", str(tmp_path / "s"))
    assert r.returncode == 2 and "--send" in r.stderr
    r = c2s("serve", "--status", "--spool", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no status.json" in r.stderr
    busy = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        r = c2s("serve", "--spool", str(tmp_path / "s"), "--port", str(busy), "--output", str(tmp_path / "o"),
                "--model", "default")
    assert r.returncode == 2 and f"--port {busy}: cannot listen" in r.stderr


def test_sigterm_finishes_the_current_job(tmp_path: Path, phantom: np.ndarray, tiny_model: Path) -> None:
    files = series(tmp_path / "s", np.tile(phantom, (2, 2, 2)))
    dest = Destination()
    dport = dest.start()
    srv = Server(tmp_path / "spool", free_port(), tiny_model, "--send", f"DEST@127.0.0.1:{dport}")
    try:
        assert set(send(srv.port, files)) == {0}
        wait_for(lambda: srv.seen("denoising"), 60, "the job to start")
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        assert dest.count() == len(files)  # the job in progress was finished and delivered before the exit
        assert srv.seen("stopped") and not list((tmp_path / "spool" / "jobs").iterdir())
        with pytest.raises(AssertionError, match="not established"):
            send(srv.port, files[:1])  # no longer accepting
    finally:
        srv.stop()
        dest.stop()
