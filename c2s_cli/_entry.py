"""The ``c2s`` console entry point, kept free of heavy imports.

A SIGINT or SIGTERM that arrives while the command line is still importing (typer, rich, torch: up to a second or
two) would otherwise print a full traceback and end with −2. Here both signals end the process at once with one
line and exit code 130 until the command itself starts; from then on the command's own handling takes over
(``c2s_cli.cli.app._guarded``: KeyboardInterrupt → one line, 130, outputs cleaned up).
"""

from __future__ import annotations

import os
import signal
from typing import Any

EXIT_INTERRUPTED = 130  # as c2s_cli.errors.EXIT_INTERRUPTED (not imported: this module stays import-free)


def _early(signum: int, frame: Any) -> None:
    os.write(2, b"c2s: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def main() -> None:
    """Install the early handlers, then run the command line."""
    signal.signal(signal.SIGINT, _early)
    signal.signal(signal.SIGTERM, _early)
    from c2s_cli.cli import main as run

    run()
