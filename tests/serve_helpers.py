"""Loopback DICOM peers for the ``c2s serve`` tests: a sending SCU and a destination Storage SCP (pynetdicom)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Destination:
    """A Storage SCP that keeps what it receives: ``final`` maps SOPInstanceUID → dataset (a re-send replaces),
    ``arrivals`` counts receptions per SOPInstanceUID. ``delay`` slows each C-STORE (to catch a node mid-send)."""

    def __init__(self, ae_title: str = "DEST", delay: float = 0.0) -> None:
        self.ae_title = ae_title
        self.delay = delay
        self.final: dict[str, Any] = {}
        self.arrivals: Counter[str] = Counter()
        self.server: Any = None
        self.lock = threading.Lock()

    def _store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.final[str(ds.SOPInstanceUID)] = ds
            self.arrivals[str(ds.SOPInstanceUID)] += 1
        return 0x0000

    def start(self, port: int = 0, ssl_context: Any = None) -> int:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self.server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ssl_context,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def count(self) -> int:
        with self.lock:
            return len(self.final)


def send(port: int, datasets: Sequence[Path | Any], *, calling: str = "MODALITY", called: str = "C2S",
         tls: Any = None) -> list[int]:
    """C-STORE ``datasets`` (files or datasets) to the node on ``port`` in one association; returns the statuses
    (-1: no status, e.g. the association was lost). Raises AssertionError when the association is not accepted."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    items = [pydicom.dcmread(p) if isinstance(p, Path) else p for p in datasets]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10  # a killed node must not hold the sender for 30 s
    for cls in {str(d.SOPClassUID) for d in items}:
        ae.add_requested_context(cls, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls)
    if not assoc.is_established:
        raise AssertionError("association not established" + (" (rejected)" if assoc.is_rejected else ""))
    out = []
    try:
        for d in items:
            try:
                st = assoc.send_c_store(d)
            except (ValueError, RuntimeError):
                out.append(-2)  # no accepted presentation context / association gone
                continue
            out.append(int(st.Status) if st and "Status" in st else -1)
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def associate(port: int, calling: str) -> Any:
    """Try an association with Verification; returns it (the caller releases)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="C2S")
