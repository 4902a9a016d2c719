"""Safe outputs: nothing c2s did not write is ever replaced or deleted, writes are atomic and exclusive.

* :func:`check_output` refuses, before any compute, an output that is an input, lies inside an input folder,
  contains an input, or exists without ``force``; with ``force`` it replaces only a previous **c2s output**
  (:func:`is_c2s_output`), never a folder or file that holds anything else.
* :class:`OutputLock` makes a run the only writer of an output (``flock`` on a sibling lock file, released by the
  kernel when the process dies, so a killed run leaves no stale lock behind).
* :func:`atomic_path` writes under a temporary sibling name and renames it into place; an interrupted or failing
  write leaves nothing under the final name. Temporary names (:func:`is_temp_name`) are never read as inputs, and
  stale ones of a killed run are removed by the next run that writes the same output.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from c2s_cli.errors import C2SError, OutputError

TMP_MARK = ".c2s-tmp-"
OLD_MARK = ".c2s-old"
LOCK_MARK = ".c2s-lock"
C2S_NIFTI_NOTE = "c2s"  # NIfTI descrip prefix of every c2s output
C2S_PNG_KEY = "Software"  # PNG text chunk of c2s previews


def is_temp_name(name: str) -> bool:
    """A name c2s uses while writing (temporary, replaced, or lock): never an input."""
    return name.startswith(".") and (TMP_MARK in name or name.endswith(OLD_MARK) or name.endswith(LOCK_MARK))


def _resolve(p: Path) -> Path:
    return Path(os.path.realpath(p))


def is_c2s_output(path: Path) -> bool:
    """Whether an existing ``path`` was written by c2s: a NIfTI whose ``descrip`` starts with "c2s", a folder whose
    every entry is a c2s-derived DICOM instance (ContributingEquipment "c2s"), a PNG preview or a model that c2s
    tagged. Anything unreadable counts as not c2s's."""
    try:
        if path.is_symlink():
            return False
        if path.is_dir():
            return _is_c2s_dicom_folder(path)
        if not path.is_file():
            return False
        name = path.name.lower()
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            return bytes(img.header["descrip"].item()).decode("latin-1").startswith(C2S_NIFTI_NOTE)
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                return str(im.info.get(C2S_PNG_KEY, "")).startswith("c2s")
        if name.endswith(".safetensors"):
            from c2s_cli.checkpoint import read_header

            return read_header(path)[0].get("format") == "c2s-model"
        if name.endswith(".dcm"):
            return _is_c2s_dicom(path)
    except Exception:  # noqa: BLE001 - unreadable: not provably ours, so never replaced
        return False
    return False


def _is_c2s_dicom(path: Path) -> bool:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ContributingEquipmentSequence"])
    return any(str(item.get("Manufacturer", "")) == "c2s" for item in ds.get("ContributingEquipmentSequence", []))


def _is_c2s_dicom_folder(folder: Path) -> bool:
    entries = list(folder.iterdir())
    if not entries:
        return True  # an empty folder holds nothing to lose
    return all(e.is_file() and not e.is_symlink() and _is_c2s_dicom(e) for e in entries)


def check_output(
    output: Path, inputs: Iterable[Path], *, force: bool, what: str = "output", param: str = "output",
    need_parent: bool = True,
) -> None:
    """Refuse an output that cannot be written safely, before any compute.

    Args:
        output: the file or folder to be written.
        inputs: every input of the run (files and folders): the output may not be one, lie inside one, or contain one.
        force: replace an existing output, but only one c2s wrote (:func:`is_c2s_output`).
        what / param: how messages name the output ("output", "residual", "report"…) and the parameter.
        need_parent: the parent folder must exist now (False for a batch folder that is created after the checks).
    Raises:
        OutputError: one line naming the path and the reason.
    """
    check_name_length(output, output.parent, what=what, param=param)  # first: a stat of such a name fails
    out = _resolve(output)
    for src in inputs:
        s = _resolve(src)
        if out == s:
            raise OutputError(f"{what} {output} is the input {src}; choose another path", param=param)
        if s in out.parents:
            raise OutputError(f"{what} {output} lies inside the input folder {src}; choose a path outside it",
                              param=param)
        if out in s.parents:
            raise OutputError(f"{what} {output} contains the input {src}; choose a path that holds no input",
                              param=param)
    if output.exists() or output.is_symlink():
        if not force:
            raise OutputError(f"{what} {output} exists; pass --force to overwrite it", param=param)
        if not (output.is_dir() or output.is_file()) or output.is_symlink():
            raise OutputError(f"{what} {output} exists and is not a regular file or folder; c2s will not replace it",
                              param=param)
        if not is_c2s_output(output):
            kind = "folder" if output.is_dir() else "file"
            raise OutputError(f"{what} {output} exists and is a {kind} c2s did not write; --force replaces only "
                              "c2s's own outputs: move it away or choose another path", param=param)
    parent = out.parent
    if not need_parent and not parent.exists():
        while not parent.exists():
            parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} folder {parent} does not exist", param=param)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} folder {parent} is not writable", param=param)


def check_name_length(output: Path, parent: Path, *, what: str = "output", param: str = "output") -> None:
    """Refuse, before any compute, a name too long for the file system once c2s adds its temporary-file marks
    (``.NAME.c2s-tmp-XXXXXXXX.SUFFIXES``: 18 bytes plus the suffixes)."""
    try:
        limit = int(os.pathconf(parent, "PC_NAME_MAX"))
    except (OSError, ValueError):
        limit = 255
    extra = 1 + len(TMP_MARK) + 8 + len(os.fsencode("".join(output.suffixes)))
    n = len(os.fsencode(output.name))
    if n + extra > limit:
        raise OutputError(f"{what} {output}: the name is {n} bytes; with the {extra} bytes c2s adds for its temporary "
                          f"file the file system's limit of {limit} is passed: use a name of at most {limit - extra} "
                          "bytes", param=param)


def check_clear_of_inputs(path: Path, inputs: Iterable[Path], *, what: str, param: str, hint: str) -> None:
    """Refuse a path (a report, a run folder, an output to skip) that is, lies inside or holds an input."""
    out = _resolve(path)
    for src in inputs:
        s = _resolve(src)
        if out == s or s in out.parents or out in s.parents:
            raise OutputError(f"{what} {path} collides with the input {src}; {hint}", param=param)


def check_distinct(paths: dict[str, Path | None]) -> None:
    """Refuse two outputs of one run that are the same path (e.g. the residual map on the denoised output)."""
    seen: dict[Path, str] = {}
    for name, p in paths.items():
        if p is None:
            continue
        r = _resolve(p)
        if r in seen:
            raise OutputError(f"{name} {p} is the same path as {seen[r]}; give each output its own path", param=name)
        seen[r] = name


class OutputLock:
    """An exclusive lock on one output path for this process (a sibling ``.NAME.c2s-lock`` file, ``flock``)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.parent / f".{final.name}{LOCK_MARK}"
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"output {self.final}: cannot create its lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"output {self.final} is being written by another c2s process; wait for it or choose "
                              "another path", param="output") from None
        self.fd = fd
        _clean_stale(self.final)  # temporaries of a killed earlier run (nobody else can hold this output now)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _clean_stale(final: Path) -> None:
    prefix = f".{final.name}{TMP_MARK}"
    for p in final.parent.iterdir():
        if p.name.startswith(prefix) or p.name == f".{final.name}{OLD_MARK}":
            _remove(p)


def _tmp_sibling(final: Path, is_dir: bool) -> Path:
    prefix = f".{final.name}{TMP_MARK}"
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


def write_error(path: Path, exc: OSError) -> C2SError:
    """One line for an OS error while writing ``path`` (a full disk, a quota, a vanished folder)."""
    reason = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return C2SError(f"{path}: cannot write ({reason}); nothing was left under that name")


@contextmanager
def atomic_path(final: Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; on success rename it to ``final``, else delete it.

    An existing ``final`` is replaced only when it is a c2s output (checked again here, so no caller can delete
    anything else), via a rename, never a recursive delete of a foreign folder.
    """
    if final.exists() and not is_c2s_output(final):
        raise OutputError(f"output {final} exists and was not written by c2s; it will not be replaced",
                          param="output")
    try:
        tmp = _tmp_sibling(final, is_dir)
    except OSError as exc:
        raise write_error(final, exc) from None
    try:
        yield tmp
        os.chmod(tmp, _default_mode(is_dir))
        if final.exists() or final.is_symlink():
            old = final.with_name(f".{final.name}{OLD_MARK}")
            _remove(old)
            final.rename(old)
            tmp.rename(final)
            _remove(old)
        else:
            tmp.rename(final)
    except OSError as exc:
        _remove(tmp)
        raise write_error(final, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def regular_input(path: Path) -> bool:
    """A regular file or a folder (FIFOs, devices and sockets are refused as inputs: reading them may never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)
