"""The parallel gzip writer: one standard member, the exact bytes back, independent of threads and write sizes."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from c2s_cli.io.pgzip import CHUNK, ParallelGzipWriter


def _one_member(blob: bytes) -> bytes:
    """Decompress, asserting the stream is exactly one gzip member with nothing after it."""
    d = zlib.decompressobj(31)
    out = d.decompress(blob) + d.flush()
    assert d.eof and d.unused_data == b""
    return out


def _image_like(n: int, seed: int) -> bytes:
    """Compressible but not trivial: int16 noise around a smooth ramp, like an image."""
    rng = np.random.default_rng(seed)
    v = np.linspace(0, 3000, n // 2 + 1) + 30 * rng.standard_normal(n // 2 + 1)
    return np.rint(v).astype(np.int16).tobytes()[:n]


@pytest.mark.parametrize("n", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 12345])
def test_round_trip_one_member(n: int, tmp_path: Path) -> None:
    data = _image_like(n, n)
    with ParallelGzipWriter(tmp_path / "x.gz", threads=3) as fh:
        fh.write(data)
    blob = (tmp_path / "x.gz").read_bytes()
    assert _one_member(blob) == data
    assert gzip.decompress(blob) == data  # the stdlib reader too
    assert blob[:2] == b"\x1f\x8b" and blob[4:8] == b"\x00\x00\x00\x00"  # gzip magic, mtime 0


def test_bytes_do_not_depend_on_threads_or_write_sizes(tmp_path: Path) -> None:
    data = _image_like(5 * CHUNK // 2 + 777, 0)
    blobs = []
    for threads, piece in ((1, len(data)), (2, 4096), (4, 3 * CHUNK // 2 + 1), (2, CHUNK)):
        out = tmp_path / f"t{threads}_{piece}.gz"
        with ParallelGzipWriter(out, threads=threads) as fh:
            for i in range(0, len(data), piece):
                assert fh.write(data[i : i + piece]) == len(data[i : i + piece])
            assert fh.tell() == len(data)
        blobs.append(out.read_bytes())
    assert all(b == blobs[0] for b in blobs)
    assert _one_member(blobs[0]) == data
    # each chunk starts from the previous 32 KiB (as a serial stream would): within 1 % of one serial stream
    assert len(blobs[0]) <= 1.01 * len(gzip.compress(data, compresslevel=1))


def test_error_inside_the_block_leaves_no_trailer(tmp_path: Path) -> None:
    out = tmp_path / "broken.gz"
    with pytest.raises(RuntimeError, match="boom"), ParallelGzipWriter(out, threads=2) as fh:
        fh.write(_image_like(2 * CHUNK, 1))
        raise RuntimeError("boom")
    assert fh.closed
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(out.read_bytes())  # incomplete: never mistaken for a whole file
    with pytest.raises(ValueError, match="closed"):
        fh.write(b"more")


def test_bad_level(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="level"):
        ParallelGzipWriter(tmp_path / "x.gz", level=0)


def test_seek_only_to_the_current_position(tmp_path: Path) -> None:
    import io

    with ParallelGzipWriter(tmp_path / "x.gz", threads=1) as fh:
        assert fh.seek(0) == 0
        fh.write(b"abc")
        assert fh.seek(3) == 3 and fh.seek(0, io.SEEK_CUR) == 3
        with pytest.raises(io.UnsupportedOperation, match="forward only"):
            fh.seek(1)
    assert gzip.decompress((tmp_path / "x.gz").read_bytes()) == b"abc"
