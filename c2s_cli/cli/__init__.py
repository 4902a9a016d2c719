"""The ``c2s`` command line: ``denoise``, ``train``, ``info``, ``bids`` and ``serve``. The only package that knows
Typer and rich.

``cli/app.py`` holds the app, the error-to-exit-code mapping and the stderr logger; each command lives in its own
module (``info``, ``denoise``, ``train``, ``bids``, ``serve``), registered on import by :func:`main`.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 some inputs of a batch failed, 4 input rejected,
130 interrupted. Logs and progress go to stderr; ``--json`` data goes to stdout.
"""

from __future__ import annotations

from c2s_cli.cli.app import _Log, _guarded, _message, _start, app, flag_of

__all__ = ["_Log", "_guarded", "_message", "_start", "app", "flag_of", "main"]


# ------------------------------------------------------------------------------------------------------ entry


def main() -> None:
    """Console entry point."""
    import logging
    import warnings

    from c2s_cli.cli import bids, denoise, info, serve, train  # noqa: F401 - importing registers the commands

    # pydicom reports damaged values by quoting them: keep element values (possibly patient data) out of the logs
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    app()
