"""The sending side of ``c2s serve``: C-STORE of a series to one destination (pynetdicom as Storage SCU)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from c2s_cli.serve.config import Destination

# success and the warnings that still mean "stored" (PS3.4 B.2.3: coercion, elements discarded, not the SOP class)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class SendError(Exception):
    """A destination did not acknowledge every instance (down, refused, or an instance failed)."""


def tune_socket(assoc: Any) -> None:
    """Make an association's TCP socket answer at once, whatever the peer's own setting.

    * Nagle's algorithm off on our side (pynetdicom leaves it on): each C-STORE otherwise waits for a delayed ACK
      before its last segment goes out (measured: 100 instances 7.6 s → 5.6 s).
    * On Linux, quick ACKs before every read: a peer that keeps Nagle on (dcmtk's tools unless ``TCP_NODELAY=1`` is in
      their environment; Orthanc turns it off by default) holds the second half of each response until we ACK the
      first, and the kernel delays that ACK by up to 40 ms. The flag does not stick (the kernel falls back to delayed
      ACKs once traffic looks interactive), so it is set again before each read of pynetdicom's association socket.
      Measured 2026-12-02: 100 instances of 256² to dcmtk's storescp 5.0 s → 0.75 s.
    """
    import socket

    asock = getattr(getattr(assoc, "dul", None), "socket", None)
    sock = getattr(asock, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP (or already closed): nothing to tune
        return
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None or not callable(getattr(asock, "recv", None)):
        return
    read = asock.recv

    def recv(nr_bytes: int) -> bytearray:
        raw = asock.socket
        if raw is not None:
            try:
                raw.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:  # closed under us: the read reports it
                pass
        return read(nr_bytes)

    asock.recv = recv  # this association's socket only


def _contexts(files: Sequence[Path]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) of every file: the presentation contexts to propose."""
    import pydicom

    pairs: list[tuple[str, str]] = []
    for p in files:
        meta = pydicom.filereader.read_file_meta_info(p)
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def send_series(
    dest: Destination,
    files: Sequence[Path],
    *,
    calling_ae: str,
    tls_ca: Path | None = None,
    timeout: float = 60,
) -> int:
    """Send ``files`` to ``dest`` in one association; returns how many were stored. Raises :class:`SendError` unless
    every instance was acknowledged with a success (or a warning that means stored)."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    pairs = _contexts(files)
    if len(pairs) > 128:
        raise SendError(f"{dest}: {len(pairs)} presentation contexts needed, 128 at most")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.connection_timeout = min(timeout, 15)
    for sop, syntax in pairs:
        extra = [ExplicitVRLittleEndian, ImplicitVRLittleEndian] if syntax == ExplicitVRLittleEndian else []
        ae.add_requested_context(sop, [syntax, *[s for s in extra if s != syntax]])
    tls: Any = None
    if tls_ca is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls_ca))
        tls = (ctx, dest.host)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer"
        raise SendError(f"{dest}: {why}")
    tune_socket(assoc)
    stored = 0
    try:
        for p in files:
            try:
                status = assoc.send_c_store(p)
            except (ValueError, AttributeError, RuntimeError) as exc:  # no accepted context, association lost
                raise SendError(f"{dest}: instance {stored + 1} of {len(files)} not sent ({exc})") from None
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in STORED:
                raise SendError(f"{dest}: instance {stored + 1} of {len(files)} not stored "
                                f"(status {'none' if code < 0 else hex(code)})")
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return stored
