"""Exceptions with one-line messages and the exit codes the CLI maps them to.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 partial failure (batch), 4 input rejected, 130 interrupted.
Messages name files, flags and values, never patient attributes.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INPUT = 4
EXIT_INTERRUPTED = 130


class C2SError(Exception):
    """Base class: a one-line, user-facing message and an exit code.

    ``param`` names the library parameter the message starts with (``sigma``, ``tta``, ``output``…); entry points
    map it to their own spelling (the CLI to its flag, see :func:`c2s_cli.cli._message`).
    """

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UsageError(C2SError):
    """Bad flags or arguments (wrong combination, existing output without --force, ...)."""

    exit_code = EXIT_USAGE


class InputError(C2SError):
    """An input file or folder is missing, unreadable, unsupported or inconsistent."""

    exit_code = EXIT_INPUT


class CheckpointError(C2SError):
    """A model file is missing, corrupted, of an unknown format version or does not match its config."""

    exit_code = EXIT_INPUT


class OutputError(C2SError):
    """An output cannot be written (exists, read-only, inside the input folder, ...)."""

    exit_code = EXIT_USAGE


def redact(text: str) -> str:
    """``text`` with every quoted literal replaced by ``'…'``: a library's message about a damaged element quotes
    the element's value (``invalid literal for int(): 'DOE^JANE'``), which may be patient data and must not reach a
    log, a status file or a report."""
    return _QUOTED.sub("'…'", text)


_QUOTED = re.compile(r"b?'[^'\n]*'|b?\"[^\"\n]*\"")
