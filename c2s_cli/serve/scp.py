"""The receiving side of ``c2s serve``: a pynetdicom Storage SCP that acknowledges an instance only once it is spooled.

Accepted: C-ECHO, and C-STORE of MR Image, Enhanced MR Image, Secondary Capture and the multi-frame grayscale
Secondary Captures (the last three are routed later: denoised only when they hold MR), in every transfer syntax c2s
can read; other SOP classes are refused at association (no presentation context). Callers are filtered by AE title (``allow``) and source
address (``allow_address``) at association time.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

from c2s_cli.serve.spool import UID_RE, Spool
from c2s_cli.serve.config import ServeConfig

# status codes (PS3.4 B.2.3 / C.4.2.1.5): refused: out of resources; error: cannot understand / not the SOP class
OUT_OF_RESOURCES = 0xA700
NOT_THE_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000

STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
}


def transfer_syntaxes() -> list[str]:
    """The transfer syntaxes accepted: uncompressed, deflated, RLE, JPEG (baseline, extended, lossless), JPEG-LS
    and JPEG 2000 (what pydicom with pylibjpeg / pyjpegls decodes)."""
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
            uid.ExplicitVRBigEndian, uid.RLELossless, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit,
            uid.JPEGLosslessSV1, uid.JPEGLossless, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
            uid.JPEG2000Lossless, uid.JPEG2000]


def _failure(status: int, comment: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def check_instance(ds: Any, sop_class: str) -> tuple[int, str] | None:
    """Why a received dataset cannot be spooled, as (failure status, reason); None when it can. Refused: elements
    that cannot be decoded, missing or malformed UIDs, a SOP class that differs from the presentation context,
    image attributes missing, pixel data shorter than its header says."""
    try:
        for elem in ds:  # decodes every top-level element: a damaged one raises here, not in the worker
            _ = elem.value
        uids = {name: str(ds.get(name, "")) for name in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")}
        for name, value in uids.items():
            if not value or len(value) > 64 or not UID_RE.match(value):
                return CANNOT_UNDERSTAND, f"{name} missing or not a UID"
        if str(ds.get("SOPClassUID", "")) != sop_class:
            return NOT_THE_SOP_CLASS, "SOPClassUID differs from the presentation context"
        for name in ("Rows", "Columns", "BitsAllocated", "PixelData"):
            if name not in ds:
                return CANNOT_UNDERSTAND, f"{name} missing"
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            need = int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
            if len(ds.PixelData) * 8 < need:
                return CANNOT_UNDERSTAND, "PixelData shorter than Rows × Columns × frames"
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged elements
        return CANNOT_UNDERSTAND, f"cannot decode the dataset ({type(exc).__name__})"
    return None


class Receiver:
    """The Storage SCP. ``on_event(dict)`` gets one structured event per received or refused instance."""

    def __init__(self, cfg: ServeConfig, spool: Spool, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.cfg = cfg
        self.spool = spool
        self.on_event = on_event
        self.ready: set[str] = set()  # series keys made ready by an association release (with on_release)
        self._assoc_keys: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.server: Any = None
        self.received = 0

    # ---------------------------------------------------------------------------------------- handlers
    def _echo(self, event: Any) -> int:
        return 0x0000

    def _store(self, event: Any) -> Any:
        calling = event.assoc.requestor.ae_title
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:  # noqa: BLE001 - a dataset pydicom cannot even parse
            self.on_event({"event": "refused", "calling_ae": calling, "reason": f"undecodable ({type(exc).__name__})"})
            return _failure(CANNOT_UNDERSTAND, "c2s: the dataset cannot be decoded")
        refusal = check_instance(ds, event.context.abstract_syntax)
        if refusal is not None:
            status, why = refusal
            self.on_event({"event": "refused", "calling_ae": calling, "reason": why})
            return _failure(status, f"c2s: {why}")
        try:
            key = self.spool.receive(event.encoded_dataset(include_meta=True), str(ds.SeriesInstanceUID),
                                     str(ds.SOPInstanceUID))
        except OSError as exc:
            self.on_event({"event": "refused", "calling_ae": calling, "reason": f"spool write failed: {exc.strerror}",
                           "level": "error"})
            return _failure(OUT_OF_RESOURCES, "c2s: cannot store the instance")
        with self._lock:
            self.received += 1
            self._assoc_keys.setdefault(id(event.assoc), set()).add(key)
        return 0x0000

    def _released(self, event: Any) -> None:
        with self._lock:
            keys = self._assoc_keys.pop(id(event.assoc), set())
            if self.cfg.on_release:
                self.ready |= keys
        if keys:
            self.on_event({"event": "association released", "calling_ae": event.assoc.requestor.ae_title,
                           "series": sorted(k[:8] for k in keys)})

    def _aborted(self, event: Any) -> None:
        with self._lock:
            self._assoc_keys.pop(id(event.assoc), None)

    def take_ready(self) -> set[str]:
        with self._lock:
            out, self.ready = self.ready, set()
        return out

    # ---------------------------------------------------------------------------------------- server
    def ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.cfg
        if cfg.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        if cfg.tls_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(cfg.tls_ca))
        return ctx

    def start(self) -> None:
        """Bind and listen (in pynetdicom's threads); returns at once."""
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification
        from pynetdicom.transport import ThreadedAssociationServer

        cfg = self.cfg
        ae = AE(ae_title=cfg.ae_title)
        ae.require_called_aet = False  # PACS often call a node by another title; callers are filtered by `allow`
        ae.require_calling_aet = list(cfg.allow)
        ae.maximum_associations = 16
        ae.network_timeout = 60
        ae.dimse_timeout = 120
        ae.add_supported_context(Verification)
        for sop in STORAGE_CLASSES:
            ae.add_supported_context(sop, transfer_syntaxes())
        allowed = set(cfg.allow_address)

        class _Server(ThreadedAssociationServer):  # type: ignore[misc]
            def verify_request(self, request: Any, client_address: Any) -> bool:
                return not allowed or client_address[0] in allowed

        from c2s_cli.serve.scu import tune_socket

        handlers = [(evt.EVT_CONN_OPEN, lambda event: tune_socket(event.assoc)),
                    (evt.EVT_C_ECHO, self._echo), (evt.EVT_C_STORE, self._store),
                    (evt.EVT_RELEASED, self._released), (evt.EVT_ABORTED, self._aborted)]
        try:
            server = ae.make_server((cfg.host, cfg.port), evt_handlers=handlers, ssl_context=self.ssl_context(),
                                    server_class=_Server)
        except OSError as exc:
            from c2s_cli.errors import UsageError

            raise UsageError(f"port {cfg.port}: cannot listen on {cfg.host}:{cfg.port} ({exc.strerror})",
                             param="port") from None
        thread = threading.Thread(target=server.serve_forever, name="c2s-serve-scp", daemon=True)
        thread.start()
        ae._servers.append(server)
        self.server = server
        self.port = server.server_address[1]

    def stop(self) -> None:
        """Stop accepting associations (running ones are closed). Safe to call twice, from any thread."""
        with self._lock:
            server, self.server = self.server, None
        if server is not None:
            server.shutdown()

