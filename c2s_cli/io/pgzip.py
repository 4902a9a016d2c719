"""Parallel gzip writer: one standard gzip member, deflated in independent chunks on several threads (pigz's scheme).

Each 1 MiB chunk of the stream is raw-deflated by its own compressor primed with the previous 32 KiB of input (so
matches may reach back across chunk borders as in a serial stream) and ended with a sync flush; the last chunk ends the
stream. The concatenation is one valid DEFLATE stream, wrapped in a single gzip header and trailer (CRC-32, size mod
2³²), so every gzip reader (nibabel, zlib's gzread in FSL / ITK / AFNI, indexed_gzip) reads it as usual. zlib releases
the GIL while it compresses, so Python threads scale with cores.

:class:`ParallelGzipWriter` is a write-only file object: nibabel streams the image into it slice by slice, at most
``2 × threads`` chunks are in flight (memory bounded whatever the volume size), and the bytes on disk depend neither on
the thread count nor on how the writes were split (mtime 0: reproducible outputs).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

CHUNK = 1 << 20  # 1 MiB of input per task
WINDOW = 1 << 15  # DEFLATE's 32 KiB history


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _deflate(chunk: bytes, history: bytes, level: int, last: bool) -> bytes:
    """Raw DEFLATE of ``chunk`` continuing a stream whose preceding input ended with ``history`` (≤ 32 KiB)."""
    if history:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, zdict=history)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, zlib.DEF_MEM_LEVEL)
    return comp.compress(chunk) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter(io.RawIOBase):
    """Write-only binary file that gzip-compresses what is written on ``threads`` threads into one gzip member.

    Args:
        path: the file to create (truncated if it exists).
        level: zlib level 1…9 (nibabel writes .nii.gz at 1).
        threads: compressing threads (None: the cores available).
    ``close()`` (or leaving the ``with`` block normally) writes the last chunk and the trailer; leaving the block on an
    exception abandons the file without a trailer (the caller deletes it).
    """

    def __init__(self, path: Path, *, level: int = 1, threads: int | None = None) -> None:
        super().__init__()
        if not 1 <= level <= 9:
            raise ValueError(f"gzip level must be 1…9, got {level}")
        self._level = level
        workers = max(1, threads or available_cores())
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="c2s-gzip") if workers > 1 else None
        self._max_pending = 2 * workers
        self._pending: deque[Future[bytes] | bytes] = deque()
        self._buf = bytearray()
        self._history = b""
        self._crc = 0
        self._size = 0
        self._fh = open(path, "wb")  # noqa: SIM115 (closed in close())
        # FLG 0, MTIME 0 (reproducible), XFL 4 (fastest) / 2 (best) / 0, OS 255 (unknown)
        xfl = 4 if level == 1 else (2 if level == 9 else 0)
        self._fh.write(struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, xfl, 255))

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Uncompressed bytes written so far (what nibabel checks offsets against)."""
        return self._size

    def seek(self, pos: int, whence: int = 0) -> int:
        """Only to where the stream already is (nibabel 'seeks' to the current offset before it writes)."""
        target = pos if whence == io.SEEK_SET else self._size + pos if whence in (io.SEEK_CUR, io.SEEK_END) else -1
        if target != self._size:
            raise io.UnsupportedOperation(f"a gzip stream is written forward only (at {self._size}, asked {target})")
        return self._size

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed ParallelGzipWriter")
        view = memoryview(b).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        self._buf += view
        if len(self._buf) >= CHUNK:
            whole = len(self._buf) // CHUNK * CHUNK
            with memoryview(self._buf) as mv:  # one copy per chunk, released before the buffer shrinks
                chunks = [bytes(mv[start : start + CHUNK]) for start in range(0, whole, CHUNK)]
            del self._buf[:whole]
            for chunk in chunks:
                self._submit(chunk, last=False)
        return len(view)

    def _submit(self, chunk: bytes, *, last: bool) -> None:
        # only full chunks (≥ 32 KiB) are ever followed by another, so the next one's history is this chunk's tail
        history, self._history = self._history, chunk[-WINDOW:]
        if self._pool is None:
            self._pending.append(_deflate(chunk, history, self._level, last))
        else:
            self._pending.append(self._pool.submit(_deflate, chunk, history, self._level, last))
        self._drain(keep=0 if last else self._max_pending)

    def _drain(self, keep: int) -> None:
        """Write finished chunks, in order, until at most ``keep`` remain in flight."""
        while len(self._pending) > keep:
            item = self._pending.popleft()
            self._fh.write(item if isinstance(item, bytes) else item.result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._submit(bytes(self._buf), last=True)
            self._buf.clear()
            self._fh.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._shutdown()
            super().close()

    def abort(self) -> None:
        """Stop without writing the trailer (the file is left incomplete for the caller to delete)."""
        if not self.closed:
            self._pending.clear()
            self._shutdown()
            super().close()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._fh.close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

