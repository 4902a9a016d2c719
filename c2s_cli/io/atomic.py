"""Safe output paths: never over an existing output without force, never inside the input, atomic renames."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from c2s_cli.errors import OutputError


def check_output(output: Path, inputs: list[Path], *, force: bool) -> None:
    """Refuse an output that exists (unless ``force``), equals an input, or lies inside an input folder."""
    out = output.resolve()
    for src in inputs:
        s = src.resolve()
        if out == s:
            raise OutputError(f"output {output} is the input itself; choose another path")
        if s.is_dir() and (out == s or s in out.parents):
            raise OutputError(f"output {output} lies inside the input folder {src}; choose a path outside it")
    if output.exists() and not force:
        raise OutputError(f"output {output} exists; pass --force to overwrite it")
    parent = out.parent
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable")


def _tmp_sibling(final: Path, is_dir: bool) -> Path:
    prefix = f".{final.name}.c2s-tmp-"
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent, suffix="".join(final.suffixes))
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _default_mode(is_dir: bool) -> int:
    """The permissions a plain open()/mkdir() would give (mkstemp/mkdtemp make 0600/0700, unreadable by a lab group)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if is_dir else 0o666) & ~mask


@contextmanager
def atomic_path(final: Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; on success rename it to ``final`` (replacing it), else delete it.

    An interrupted or failing write therefore never leaves anything under the final name.
    """
    tmp = _tmp_sibling(final, is_dir)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    os.chmod(tmp, _default_mode(is_dir))
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.c2s-old")
        _remove(old)
        final.rename(old)
        tmp.rename(final)
        _remove(old)
    else:
        tmp.rename(final)
