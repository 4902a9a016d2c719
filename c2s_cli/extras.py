"""Optional dependencies (``pip install 'c2s[NAME]'``): a missing one is one clear line naming the extra."""

from __future__ import annotations

import importlib

from c2s_cli.errors import UsageError

EXTRAS = {
    "serve": ("pynetdicom",),  # c2s serve: the DICOM node
    "jpeg": ("pylibjpeg", "libjpeg", "openjpeg", "jpeg_ls"),  # JPEG / JPEG 2000 / JPEG-LS compressed DICOM
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported."""
    out = []
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            out.append(module)
    return out


def require(extra: str, what: str) -> None:
    """Raise a :class:`UsageError` (one line) when ``extra`` is not installed; ``what`` says what needs it."""
    gone = missing(extra)
    if gone:
        raise UsageError(f"{what} needs the optional '{extra}' dependencies ({', '.join(gone)} missing): "
                         f"{hint(extra)}")


def hint(extra: str) -> str:
    """``pip install 'c2s[extra]'``, for messages."""
    return f"pip install 'c2s[{extra}]'"
