"""``c2s serve`` in-process: a real node on loopback, pynetdicom peers at both ends (serve_helpers)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import make_series
from c2s_bench.phantoms import rician
from serve_helpers import Destination, associate, free_port, send, wait_for

from c2s_cli.errors import UsageError
from c2s_cli.serve import Destination as Dest
from c2s_cli.serve import Node, build, load_toml, route


@pytest.fixture(scope="module")
def denoiser(tiny_model: Path) -> Any:
    from c2s_cli.api import Denoiser

    return Denoiser(str(tiny_model), "cpu")


def series(folder: Path, phantom: np.ndarray, *, n: int | None = None, seed: int = 5, **kw: Any) -> list[Path]:
    stored = np.clip(np.rint(rician(phantom * 1000, 40.0, seed=seed)), 0, 4095)
    return sorted(make_series(folder, stored[:, :, :n] if n else stored, **kw))


class Running:
    """A node serving in a thread; ``events`` is its structured log."""

    def __init__(self, cfg: Any, denoiser: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.node = Node(cfg, denoiser=denoiser, on_event=self.events.append)
        self.node.start()
        self.port = self.node.receiver.port
        self.thread = threading.Thread(target=self.node.serve_forever, daemon=True)
        self.thread.start()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == name]

    def close(self) -> None:
        self.node.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def dest() -> Iterator[Destination]:
    d = Destination()
    d.start()
    yield d
    d.stop()


def node_cfg(tmp_path: Path, dest_port: int | None, **kw: Any) -> Any:
    return build({"spool": tmp_path / "spool", "port": 0, "stable_seconds": 0.5, "poll_seconds": 0.05,
                  "send": [f"DEST@127.0.0.1:{dest_port}"] if dest_port else [], **kw})


@pytest.fixture
def running(tmp_path: Path, dest: Destination, denoiser: Any) -> Iterator[Running]:
    r = Running(node_cfg(tmp_path, dest.server.server_address[1], allow=["MODALITY", "OTHER"]), denoiser)
    yield r
    r.close()


def check_derived(received: list[Any], sources: list[Path]) -> None:
    """The derived-series properties `c2s denoise` guarantees: new UIDs, one series, same study and frame of
    reference, DERIVED, every source referenced once, geometry kept."""
    src = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in sources)}
    assert len(received) == len(src)
    assert len({str(d.SeriesInstanceUID) for d in received}) == 1
    assert str(received[0].SeriesInstanceUID) not in {str(d.SeriesInstanceUID) for d in src.values()}
    assert {str(d.SOPInstanceUID) for d in received}.isdisjoint(src)
    refs = [str(d.SourceImageSequence[0].ReferencedSOPInstanceUID) for d in received]
    assert sorted(refs) == sorted(src)
    for d in received:
        s = src[str(d.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert d.ImageType[0] == "DERIVED"
        for tag in ("StudyInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient",
                    "PixelSpacing", "Rows", "Columns"):
            assert d[tag].value == s[tag].value, tag
        assert d.SeriesNumber == s.SeriesNumber + 1000
        assert d.ContributingEquipmentSequence[-1].Manufacturer == "c2s"


def test_round_trip_matches_c2s_denoise(tmp_path: Path, phantom: np.ndarray, running: Running, dest: Destination,
                                        denoiser: Any) -> None:
    files = series(tmp_path / "s", phantom)
    assert set(send(running.port, files)) == {0}
    wait_for(lambda: dest.count() == len(files) and not running.node.spool.jobs(), what="the derived series")
    check_derived(list(dest.final.values()), files)
    # the same rule as `c2s denoise` from a folder: the same UIDs and the same pixels
    from c2s_cli.config import DenoiseOptions

    denoiser.denoise_file(tmp_path / "s", tmp_path / "cli", DenoiseOptions())
    local = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in (tmp_path / "cli").iterdir())}
    assert set(local) == set(dest.final)
    for uid, d in local.items():
        np.testing.assert_array_equal(d.pixel_array, dest.final[uid].pixel_array)
    assert set(dest.arrivals.values()) == {1}
    # the log names series by a short hash, never by patient attributes
    log = json.dumps(running.events)
    assert "ZZPATIENTMARKER" not in log and "ZZID12345" not in log
    assert [e["series"] for e in running.named("sent")] == [running.named("denoised")[0]["series"]]


def test_concurrent_associations(tmp_path: Path, phantom: np.ndarray, running: Running, dest: Destination) -> None:
    sets = [series(tmp_path / f"s{i}", phantom, n=8, seed=i, series_number=i + 1) for i in range(3)]
    results: list[list[int]] = [[] for _ in sets]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, send(running.port, sets[i])))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(set(r) == {0} and len(r) == 8 for r in results)
    wait_for(lambda: dest.count() == 24, what="three derived series")
    by_series: dict[str, list[Any]] = {}
    for d in dest.final.values():
        by_series.setdefault(str(d.SeriesInstanceUID), []).append(d)
    assert len(by_series) == 3
    for received in by_series.values():
        number = received[0].SeriesNumber - 1000
        check_derived(received, sets[number - 1])


def test_callers_are_filtered(tmp_path: Path, dest: Destination, denoiser: Any) -> None:
    r = Running(node_cfg(tmp_path, dest.server.server_address[1], allow=["MODALITY"]), denoiser)
    try:
        a = associate(r.port, "INTRUDER")
        assert a.is_rejected and not a.is_established
        a = associate(r.port, "MODALITY")
        assert a.is_established
        assert a.send_c_echo().Status == 0
        a.release()
    finally:
        r.close()
    r = Running(node_cfg(tmp_path, dest.server.server_address[1], allow_address=["10.255.255.1"]), denoiser)
    try:
        assert not associate(r.port, "MODALITY").is_established  # loopback is not on the address list
    finally:
        r.close()


def test_corrupt_datasets_are_refused_and_the_node_keeps_running(tmp_path: Path, phantom: np.ndarray,
                                                                 running: Running, dest: Destination) -> None:
    files = series(tmp_path / "s", phantom, n=6)
    no_series = pydicom.dcmread(files[0])
    del no_series.SeriesInstanceUID
    short = pydicom.dcmread(files[1])
    short.PixelData = short.PixelData[: len(short.PixelData) // 2]
    bad_uid = pydicom.dcmread(files[2])
    bad_uid.SOPInstanceUID = "../../etc/passwd"
    statuses = send(running.port, [no_series, short, bad_uid])
    assert all(0xC000 <= s <= 0xCFFF for s in statuses), [hex(s) for s in statuses]
    assert len(running.named("refused")) == 3
    assert not list((running.node.spool.root / "incoming").iterdir())
    assert set(send(running.port, files)) == {0}  # still serving
    wait_for(lambda: dest.count() == 6, what="the derived series after the refusals")


def test_routing_rules(tmp_path: Path, phantom: np.ndarray, dest: Destination, denoiser: Any) -> None:
    from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage

    cfg = node_cfg(tmp_path, dest.server.server_address[1], exclude=["*localizer*"], min_slices=4)
    r = Running(cfg, denoiser)
    try:
        scout = series(tmp_path / "scout", phantom, n=6, series_number=2)
        for p in scout:
            d = pydicom.dcmread(p)
            d.SeriesDescription = "AAHead_Scout LOCALIZER"
            d.save_as(p)
        few = series(tmp_path / "few", phantom, n=3, series_number=3)
        sc = [pydicom.dcmread(p) for p in series(tmp_path / "sc", phantom, n=6, series_number=4)]
        for d in sc:
            d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            d.Modality = "OT"
        ct = pydicom.dcmread(series(tmp_path / "ct", phantom, n=4, series_number=6)[0])
        ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
        assert set(send(r.port, scout)) == {0} and set(send(r.port, few)) == {0} and set(send(r.port, sc)) == {0}
        with pytest.raises(AssertionError, match="not established"):  # CT: no presentation context is accepted
            send(r.port, [ct])
        wait_for(lambda: len(r.named("ignored")) == 3, what="three ignored series")
        reasons = sorted(e["reason"] for e in r.named("ignored"))
        assert reasons == ["3 image(s), fewer than min_slices 4", "matches exclude pattern '*localizer*'",
                           "modality OT (only MR is denoised)"]
        assert dest.count() == 0
    finally:
        r.close()
    # with --forward-unmatched the same series go on unchanged (same UIDs, same bytes of pixel data)
    r = Running(build({**cfg.__dict__, "spool": tmp_path / "spool2", "forward_unmatched": True,
                       "send": [str(d) for d in cfg.send]}), denoiser)
    try:
        assert set(send(r.port, few)) == {0}
        wait_for(lambda: dest.count() == 3, what="the forwarded series")
        src = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in few)}
        assert set(dest.final) == set(src)
        assert all(dest.final[u].PixelData == src[u].PixelData for u in src)
    finally:
        r.close()


def test_route_patterns() -> None:
    cfg = build({"spool": "/tmp/x", "output": "/tmp/o", "include": ["t1*", "*mprage*"], "exclude": ["*scout*"]})
    h = pydicom.Dataset()
    h.Modality, h.SeriesDescription, h.ProtocolName = "MR", "T1 SE", "head"
    assert route(cfg, h, 20) == ("denoise", "MR series")
    h.SeriesDescription = "FLAIR"
    assert route(cfg, h, 20)[0] == "ignore"
    h.ProtocolName = "Sag MPRAGE"
    assert route(cfg, h, 20)[0] == "denoise"
    h.ProtocolName = "mprage scout"
    assert route(cfg, h, 20) == ("ignore", "matches exclude pattern '*scout*'")


def test_route_passes_on_the_other_parts_of_complex_data() -> None:
    """A phase (or real, or imaginary) series is never denoised as a magnitude image: forwarded unchanged, or ignored
    without forward_unmatched; its magnitude series is denoised."""
    h = pydicom.Dataset()
    h.Modality, h.SeriesDescription = "MR", "ep2d_diff"
    for image_type, part in ((["ORIGINAL", "PRIMARY", "P", "ND"], "phase"),
                             (["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"], "phase"),
                             (["ORIGINAL", "PRIMARY", "R", "ND"], "real")):
        h.ImageType = image_type
        for forward, action in ((True, "forward"), (False, "ignore")):
            cfg = build({"spool": "/tmp/x", "output": "/tmp/o", "forward_unmatched": forward})
            got = route(cfg, h, 20)
            assert got[0] == action and f"a {part} image" in got[1]
    h.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert route(build({"spool": "/tmp/x", "output": "/tmp/o"}), h, 20)[0] == "denoise"


def test_destination_down_then_up(tmp_path: Path, phantom: np.ndarray, denoiser: Any) -> None:
    port = free_port()
    r = Running(node_cfg(tmp_path, port, retry_seconds=0.2, retry_max_seconds=0.5), denoiser)
    later = Destination()
    try:
        files = series(tmp_path / "s", phantom, n=6)
        assert set(send(r.port, files)) == {0}
        wait_for(lambda: len(r.named("send failed")) >= 2, what="failed deliveries")
        st = json.loads((r.node.spool.root / "status.json").read_text())
        assert st["destinations"][f"DEST@127.0.0.1:{port}"]["state"] == "down"
        assert st["queue"]["to_deliver"] == 1 and st["last_error"]
        later.start(port)
        wait_for(lambda: later.count() == 6 and not r.node.spool.jobs(), what="delivery after the retry")
        check_derived(list(later.final.values()), files)

        def status() -> dict[str, Any]:
            return json.loads((r.node.spool.root / "status.json").read_text())

        # the status file is rewritten at the end of the node's step, a moment after the job leaves the spool (the
        # CI run of 2026-12-02 07:27 read it in between): wait for it rather than read it once
        wait_for(lambda: status()["destinations"][f"DEST@127.0.0.1:{port}"]["state"] == "ok", timeout=10,
                 what="the status file to say the destination is up")
        assert status()["queue"]["to_deliver"] == 0
    finally:
        later.stop()
        r.close()


def test_late_instances_start_a_new_job(tmp_path: Path, phantom: np.ndarray, running: Running,
                                        dest: Destination, denoiser: Any) -> None:
    files = series(tmp_path / "s", phantom, n=10, shuffle_seed=None)
    assert set(send(running.port, files[:6])) == {0}
    wait_for(lambda: dest.count() == 6 and not running.node.spool.jobs(), what="the first job")
    assert set(send(running.port, files[6:])) == {0}
    wait_for(lambda: dest.count() == 10 and len(running.named("sent")) == 2, what="the second job")
    note = running.named("series complete")[1]["note"]
    assert note.startswith("late instances: 4 new, 6 from the earlier job")
    check_derived(list(dest.final.values()), files)  # one series, each instance once


def test_local_output_and_spool(tmp_path: Path, phantom: np.ndarray, denoiser: Any) -> None:
    out = tmp_path / "out"
    r = Running(build({"spool": tmp_path / "spool", "port": 0, "stable_seconds": 0.2, "poll_seconds": 0.05,
                       "output": out, "keep_days": 0}), denoiser)
    try:
        files = series(tmp_path / "s", phantom, n=5)
        assert set(send(r.port, files)) == {0}
        wait_for(lambda: len(r.named("written")) == 1, what="the local copy")
        (study,) = out.iterdir()
        (folder,) = study.iterdir()
        check_derived([pydicom.dcmread(p) for p in folder.iterdir()], files)
        spool = tmp_path / "spool"
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        wait_for(lambda: not list((spool / "done").iterdir()), what="keep_days 0 to delete the job")
    finally:
        r.close()
    st = json.loads((spool / "status.json").read_text())
    assert st["state"] == "stopped" and st["jobs"]["denoised"] == 1 and st["received_instances"] == 5


def test_configuration(tmp_path: Path) -> None:
    toml = tmp_path / "c2s.toml"
    toml.write_text('spool = "/tmp/s"\nport = 104\nsend = ["PACS@10.0.0.5:104", "B@[::1]:11112"]\n'
                    'allow = ["MR1"]\nstable-seconds = 5\nplanes = "axial,coronal"\n')
    cfg = build({**load_toml(toml), "port": 11113})  # a flag overrides the file
    assert cfg.port == 11113 and cfg.stable_seconds == 5.0 and cfg.denoise.planes == ("axial", "coronal")
    assert cfg.send == (Dest("PACS", "10.0.0.5", 104), Dest("B", "::1", 11112)) and str(cfg.send[1]) == "B@[::1]:11112"
    assert cfg.host == "127.0.0.1"  # other interfaces must be asked for
    bad = [({"send": ["PACS:104"]}, "send"), ({"port": "x"}, "port"), ({"ae_title": "A" * 17}, "ae_title"),
           ({"tls_cert": tmp_path / "none.pem", "tls_key": tmp_path / "k.pem"}, "tls_cert"),
           ({"stable_seconds": -1}, "stable_seconds"), ({"tta": 3}, "tta"), ({"send": []}, "send")]
    for extra, param in bad:
        with pytest.raises(UsageError) as exc:
            build({"spool": "/tmp/s", "send": ["P@h:1"], **extra})
        assert exc.value.param == param, (extra, exc.value)
    toml.write_text('spool = "/tmp/s"\nsned = ["P@h:1"]\n')
    with pytest.raises(UsageError, match="unknown setting 'sned'"):
        load_toml(toml)
    assert os.path.basename(str(cfg.spool)) == "s"
    example = build(load_toml(Path(__file__).parents[1] / "examples" / "serve" / "c2s-serve.toml"))
    assert example.ae_title == "C2S" and example.send and example.allow and example.host == "0.0.0.0"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_in_and_out(tmp_path: Path, phantom: np.ndarray, denoiser: Any) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=c2s-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    tls_dest = Destination()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    dport = tls_dest.start(ssl_context=server_ctx)
    r = Running(node_cfg(tmp_path, dport, tls_cert=cert, tls_key=key, send_tls_ca=cert), denoiser)
    try:
        files = series(tmp_path / "s", phantom, n=4)
        with pytest.raises(AssertionError, match="not established"):
            send(r.port, files)  # plain DICOM to a TLS node
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        assert set(send(r.port, files, tls=(client, "127.0.0.1"))) == {0}
        wait_for(lambda: tls_dest.count() == 4, what="the derived series over TLS")
        check_derived(list(tls_dest.final.values()), files)
    finally:
        r.close()
        tls_dest.stop()


def test_release_completes_a_series_and_failures_are_kept(tmp_path: Path, phantom: np.ndarray, dest: Destination,
                                                          denoiser: Any) -> None:
    cfg = node_cfg(tmp_path, dest.server.server_address[1], stable_seconds=300, on_release=True)
    r = Running(cfg, denoiser)
    try:
        files = series(tmp_path / "s", phantom, n=5)
        assert set(send(r.port, files)) == {0}
        wait_for(lambda: dest.count() == 5, 30, "the series completed by the association release")
        assert r.named("series complete")[0]["why"] == "association released"
        # a series c2s cannot denoise (two slices at one position) fails alone: logged, kept in failed/, node goes on
        bad = series(tmp_path / "bad", phantom, n=4, positions=[0, 3, 3, 6], series_number=9)
        assert set(send(r.port, bad)) == {0}
        wait_for(lambda: len(r.named("failed")) == 1, 30, "the failed job")
        (failed,) = (r.node.spool.root / "failed").iterdir()
        assert "same slice position" in json.loads((failed / "job.json").read_text())["error"]
        assert len(list((failed / "input").iterdir())) == 4  # the received instances are kept
        assert set(send(r.port, series(tmp_path / "s2", phantom, n=5, series_number=11))) == {0}
        wait_for(lambda: dest.count() == 10, 30, "the next series")
        st = json.loads((r.node.spool.root / "status.json").read_text())
        assert st["jobs"]["failed"] == 1 and "same slice position" in st["last_error"]["message"]
    finally:
        r.close()


def test_tune_socket_reaches_the_socket(dest: Destination) -> None:
    """pynetdicom leaves Nagle's algorithm on; c2s turns it off through the association's socket and, on Linux, wraps
    that association's reads to ask for quick ACKs (a pynetdicom change that moved the socket would make this
    silently a no-op, so it is checked); the association still works afterwards."""
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from c2s_cli.serve.scu import tune_socket

    ae = AE(ae_title="C2S")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", dest.server.server_address[1], ae_title="DEST")
    assert assoc.is_established
    try:
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert "recv" not in vars(assoc.dul.socket)
        tune_socket(assoc)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert ("recv" in vars(assoc.dul.socket)) == hasattr(socket, "TCP_QUICKACK")
        status = assoc.send_c_echo()
        assert status and status.Status == 0
    finally:
        assoc.release()


def test_the_receiving_side_tunes_its_sockets_too(running: Running) -> None:
    """The node's receiver tunes every incoming association's socket (EVT_CONN_OPEN): Nagle off, quick ACKs."""
    import socket

    assoc = associate(running.port, "MODALITY")
    assert assoc.is_established
    try:
        wait_for(lambda: bool(running.node.receiver.server.active_associations), timeout=5, what="the association")
        theirs = running.node.receiver.server.active_associations[0].dul.socket
        assert theirs.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert ("recv" in vars(theirs)) == hasattr(socket, "TCP_QUICKACK")
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_spool_and_output_are_checked_before_anything_is_touched(tmp_path: Path, dest: Destination,
                                                                  denoiser: Any) -> None:
    """A spool folder that holds anything c2s did not put there is refused (start-up clears tmp/ and reorganises
    the folder), its files and mode untouched; --output may not be the spool or lie inside or around it; an
    --output that cannot be created is refused at start-up, before any association."""
    from conftest import snapshot

    foreign = tmp_path / "mine"
    (foreign / "tmp").mkdir(parents=True)
    (foreign / "tmp" / "keep.txt").write_text("not c2s's")
    (foreign / "notes.txt").write_text("not c2s's")
    os.chmod(foreign, 0o755)
    before = snapshot(foreign)
    with pytest.raises(UsageError, match="holds files c2s did not put there") as exc:
        Node(node_cfg(tmp_path, dest.server.server_address[1], spool=foreign), denoiser=denoiser).start()
    assert exc.value.param == "spool"
    assert snapshot(foreign) == before and stat.S_IMODE(foreign.stat().st_mode) == 0o755
    # a spool c2s made is reopened (restarts are tested in test_serve_process.py)
    r = Running(node_cfg(tmp_path, dest.server.server_address[1]), denoiser)
    r.close()
    assert (tmp_path / "spool" / ".c2s-spool").is_file()
    Running(node_cfg(tmp_path, dest.server.server_address[1]), denoiser).close()
    for out in (tmp_path / "spool", tmp_path / "spool" / "out", tmp_path):
        with pytest.raises(UsageError, match="the same as, inside or around the spool") as exc:
            node_cfg(tmp_path, dest.server.server_address[1], output=out)
        assert exc.value.param == "output"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UsageError, match="cannot create") as exc:
        Node(node_cfg(tmp_path, None, output=tmp_path / "a_file" / "out", spool=tmp_path / "new_spool"),
             denoiser=denoiser).start()
    assert exc.value.param == "output" and not (tmp_path / "new_spool").exists()  # refused before the spool


def test_failed_series_never_logs_element_values(tmp_path: Path, phantom: np.ndarray, dest: Destination,
                                                 denoiser: Any) -> None:
    """Issue 33: a library's message about a damaged element quotes its value (possibly a patient's name); the
    node's log event, job record and status.json carry the message with the value redacted."""
    from c2s_cli.errors import InputError

    class Quoting:
        name, sha256 = denoiser.name, denoiser.sha256

        def denoise_file(self, *a: Any, **k: Any) -> dict[str, Any]:
            raise InputError("x.dcm: corrupted DICOM header (ValueError: invalid literal for int(): 'SECRET^PATIENT')")

    r = Running(node_cfg(tmp_path, dest.server.server_address[1]), Quoting())
    try:
        assert set(send(r.port, series(tmp_path / "s", phantom, n=4))) == {0}
        wait_for(lambda: len(r.named("failed")) == 1, 30, "the failed job")
        (failed,) = (r.node.spool.root / "failed").iterdir()
        texts = [json.dumps(r.events), (failed / "job.json").read_text(),
                 (r.node.spool.root / "status.json").read_text()]
        assert all("SECRET" not in t for t in texts) and "invalid literal" in texts[1]
    finally:
        r.close()



def test_mosaic_series_are_counted_by_slices_and_denoised(tmp_path: Path, dest: Destination, denoiser: Any) -> None:
    """Issue 33: a Siemens mosaic series of 2 instances (20 slices each, the real PASL pair) was ignored as "2
    image(s), fewer than min_slices 3": images are counted as slices (mosaic tiles, frames), and the series comes
    back derived."""
    from c2s_cli.serve.node import slice_count

    pasl = sorted((Path(__file__).parent / "data" / "siemens_pasl_mosaic").glob("*.dcm"))
    header = pydicom.dcmread(pasl[0], stop_before_pixels=True)
    assert slice_count(header, len(pasl)) == 40
    cfg = node_cfg(tmp_path, dest.server.server_address[1])
    assert route(cfg, header, slice_count(header, len(pasl)))[0] == "denoise"
    r = Running(cfg, denoiser)
    try:
        assert set(send(r.port, pasl)) == {0}
        wait_for(lambda: dest.count() == 2 or bool(r.named("failed")) or bool(r.named("ignored")), 120,
                 "the derived mosaic series")
        assert not r.named("ignored") and not r.named("failed") and dest.count() == 2
    finally:
        r.close()


def test_late_instances_after_keep_days_0_fail_loudly(tmp_path: Path, phantom: np.ndarray, dest: Destination,
                                                      denoiser: Any) -> None:
    """Issue 33: with keep_days 0 the delivered job is deleted at once; a late instance of that series can no longer
    be denoised with the rest of it. It was acknowledged and then dropped as "fewer than min_slices"; now it is a
    failed job that says why (log event, status.json), and a complete re-send is denoised as usual."""
    r = Running(node_cfg(tmp_path, dest.server.server_address[1], keep_days=0.0), denoiser)
    try:
        files = series(tmp_path / "s", phantom, n=6, shuffle_seed=None)
        assert set(send(r.port, files[:5])) == {0}
        wait_for(lambda: dest.count() == 5 and not r.node.spool.jobs(), 180, what="the first job")
        assert set(send(r.port, files[5:])) == {0}
        wait_for(lambda: len(r.named("failed")) == 1, 180, what="the late instance's job")
        assert not r.named("ignored") and "already delivered and deleted" in r.named("failed")[0]["error"]
        status = r.node.spool.root / "status.json"  # written at the end of the step that logged the failure
        wait_for(lambda: json.loads(status.read_text())["last_error"] is not None, 60, what="status.json's last error")
        st = json.loads(status.read_text())
        assert "send the whole series again" in st["last_error"]["message"]
        assert set(send(r.port, files)) == {0}
        wait_for(lambda: len(r.named("sent")) == 2, 180, what="the complete re-send")
        assert len(r.named("failed")) == 1
    finally:
        r.close()


def test_a_single_enhanced_mr_object_is_counted_by_frames(tmp_path: Path, phantom: np.ndarray, dest: Destination,
                                                          denoiser: Any) -> None:
    """Issue 33: one Enhanced MR instance with many frames is a series of that many slices for --min-slices, and
    comes back derived through the node."""
    from conftest import make_enhanced
    from c2s_cli.serve.node import slice_count

    stored = np.clip(np.rint(rician(phantom[:, :, :6] * 1000, 40.0, seed=7)), 0, 4095)
    obj = make_enhanced(tmp_path / "e.dcm", stored)
    assert slice_count(pydicom.dcmread(obj, stop_before_pixels=True), 1) == 6
    r = Running(node_cfg(tmp_path, dest.server.server_address[1]), denoiser)
    try:
        assert set(send(r.port, [obj])) == {0}
        wait_for(lambda: dest.count() >= 1 or bool(r.named("failed")) or bool(r.named("ignored")), 120,
                 "the derived multi-frame series")
        assert not r.named("ignored") and not r.named("failed") and dest.count() >= 1
    finally:
        r.close()


def test_the_node_embeds_the_one_denoise_options_declaration(tmp_path: Path) -> None:
    """Issue 30: ServeConfig holds a DenoiseOptions instead of copies of its fields; the flat settings (flags and
    TOML keys) still fill it, and a config given back (its fields) builds the same node."""
    import dataclasses

    from c2s_cli.config import DenoiseOptions
    from c2s_cli.serve import ServeConfig

    own = {f.name for f in dataclasses.fields(ServeConfig)}
    assert not own & {f.name for f in dataclasses.fields(DenoiseOptions)}
    cfg = build({"spool": tmp_path / "s", "output": tmp_path / "o", "strength": 0.8, "tta": 2, "planes": "axial,coronal"})
    assert cfg.denoise_options() == DenoiseOptions(strength=0.8, tta=2, planes=("axial", "coronal"))
    assert build(dict(cfg.__dict__)) == cfg


def complex_series(folder: Path, phantom: np.ndarray, *, n: int = 8, seed: int = 11,
                   series_number: int = 5) -> tuple[list[Path], list[Path]]:
    """A magnitude series and its phase series (Siemens: stored 0 … 4095, slope 2, intercept −4096, ImageType P,
    numbered after the magnitude) of one acquisition: same study, frame of reference and slices."""
    rng = np.random.default_rng(seed)
    x = phantom[:, :, :n] * 1000
    yy = np.linspace(-1, 1, x.shape[1])[None, :, None]
    z = x * np.exp(1j * (0.8 * yy + 0.3)) + 40 * (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape))
    mag = np.clip(np.rint(np.abs(z)), 0, 4095)
    pha = np.clip(np.rint((np.angle(z) * 4096 / np.pi + 4096) / 2), 0, 4095)
    m = sorted(make_series(folder / "mag", mag, series_number=series_number))
    p = sorted(make_series(folder / "pha", pha, slope=2.0, intercept=-4096.0, series_number=series_number + 1,
                           image_type=("ORIGINAL", "PRIMARY", "P", "ND")))
    return m, p


def test_complex_partner_matches_one_acquisition_only() -> None:
    from c2s_cli.serve.node import complex_partner

    def h(part: str, number: int, **kw: Any) -> Any:
        d = pydicom.Dataset()
        d.Modality, d.StudyInstanceUID, d.FrameOfReferenceUID = "MR", "1.2.3", "1.2.4"
        d.Rows, d.Columns, d.SeriesNumber = 64, 64, number
        d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        d.ImageType = ["ORIGINAL", "PRIMARY", part, "ND"]
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    mag = h("M", 5)
    assert complex_partner(mag, 20, [("p6", h("P", 6), 20)]) == "p6"
    assert complex_partner(h("P", 6), 20, [("m5", mag, 20)]) == "m5"  # and back
    assert complex_partner(mag, 20, [("m7", h("M", 7), 20)]) is None  # a magnitude is no phase
    for other in (h("P", 6, FrameOfReferenceUID="9.9"), h("P", 6, Rows=32), h("P", 6, StudyInstanceUID="9.8"),
                  h("P", 6, ImageOrientationPatient=[0, 1, 0, 0, 0, 1])):
        assert complex_partner(mag, 20, [("x", other, 20)]) is None
    assert complex_partner(mag, 20, [("p6", h("P", 6), 19)]) is None  # another number of images
    assert complex_partner(mag, 20, [("p9", h("P", 9), 20), ("p6", h("P", 6), 20)]) == "p6"  # the nearest number
    assert complex_partner(mag, 20, [("p4", h("P", 4), 20), ("p6", h("P", 6), 20)]) is None  # ambiguous: no guess


def test_pair_phase_denoises_magnitude_with_its_phase_series(tmp_path: Path, phantom: np.ndarray,
                                                            denoiser: Any) -> None:
    """With pair_phase, a magnitude series and its phase series sent to the node give the pixels and UIDs of
    ``c2s denoise MAG --phase PHASE`` — whichever arrives first, and when the phase series was finished before its
    magnitude arrived — and the phase series is not denoised; a magnitude series without a phase series is denoised
    alone once stable_seconds more have passed."""
    from c2s_cli.config import DenoiseOptions

    out = tmp_path / "out"
    r = Running(build({"spool": tmp_path / "spool", "port": 0, "stable_seconds": 0.5, "poll_seconds": 0.05,
                       "output": out, "pair_phase": True}), denoiser)
    try:
        mag, pha = complex_series(tmp_path / "a", phantom)
        assert set(send(r.port, pha)) == {0}  # the phase first, finished (ignored) before its magnitude arrives
        wait_for(lambda: len(r.named("ignored")) == 1, what="the phase series to be passed over")
        assert set(send(r.port, mag)) == {0}
        wait_for(lambda: len(r.named("written")) == 1, what="the paired series")
        assert r.named("denoised")[0].get("complex") == "with its phase series"
        mag2, pha2 = complex_series(tmp_path / "b", phantom, seed=12, series_number=20)
        assert set(send(r.port, mag2 + pha2)) == {0}  # both in one association
        wait_for(lambda: len(r.named("written")) == 2, what="the second paired series")
        solo = series(tmp_path / "c", phantom, n=6, series_number=40)
        assert set(send(r.port, solo)) == {0}
        wait_for(lambda: len(r.named("written")) == 3, what="the magnitude series alone")
    finally:
        r.close()
    assert [e.get("complex") for e in r.named("denoised")] == ["with its phase series"] * 2 + [None]
    assert len(r.named("no phase series")) == 1 and len(r.named("ignored")) == 2  # the two phase series
    written = {str(pydicom.dcmread(next(f.iterdir())).SeriesNumber): f for s in out.iterdir() for f in s.iterdir()}
    assert sorted(written) == ["1005", "1020", "1040"]  # no phase series among the derived ones
    for folder, (m, p) in (("a", (mag, pha)), ("b", (mag2, pha2))):
        denoiser.denoise_file(tmp_path / folder / "mag", tmp_path / f"cli_{folder}",
                              DenoiseOptions(phase=tmp_path / folder / "pha"))
        local = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(q) for q in (tmp_path / f"cli_{folder}").iterdir())}
        got = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(q) for q in
                                                   written["1005" if folder == "a" else "1020"].iterdir())}
        assert set(local) == set(got)  # the same derived UIDs as c2s denoise --phase
        for uid, d in local.items():
            np.testing.assert_array_equal(d.pixel_array, got[uid].pixel_array)
    # and different from the magnitude denoised alone
    denoiser.denoise_file(tmp_path / "a" / "mag", tmp_path / "alone", DenoiseOptions())
    alone = sorted(pydicom.dcmread(q).pixel_array.sum() for q in (tmp_path / "alone").iterdir())
    paired = sorted(pydicom.dcmread(q).pixel_array.sum() for q in written["1005"].iterdir())
    assert alone != paired


def test_pair_phase_refuses_options_complex_data_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pair_phase") as exc:
        build({"spool": tmp_path / "spool", "output": tmp_path / "o", "pair_phase": True, "coils": 4})
    assert exc.value.param == "pair_phase"
