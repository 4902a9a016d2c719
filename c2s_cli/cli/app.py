"""What every ``c2s`` command shares: the Typer app, the error-to-exit-code mapping, the stderr logger and the
option parsers used by more than one command. The commands (``cli/denoise.py`` …) import this module; the package
root (``cli/__init__.py``) imports the commands, so the arrows point one way.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 some inputs of a batch failed, 4 input rejected,
130 interrupted. Logs and progress go to stderr; ``--json`` data goes to stdout.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from c2s_cli._version import __version__
from c2s_cli.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, C2SError

app = typer.Typer(
    name="c2s",
    help="Self-supervised MRI denoising (Corruption2Self). Run `c2s COMMAND --help` for details.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: typer's rich help formatter costs ~0.2 s of imports on every --help
    context_settings={"help_option_names": ["-h", "--help"]},
)

_VERBOSE = False

# library parameter → the CLI's flag: derived from the commands' own option declarations (a parameter is named as
# its option is, ``sigma_map`` → ``--sigma-map``; an argument by its metavar, ``bids_dir`` → ``BIDS_DIR``); only the
# library parameters whose option has another name are listed here
_ALIASES = {"output": "-o", "vst": "--no-vst", "guides": "--guide", "coils": "--noise-coils"}


def flag_of(param: str) -> str | None:
    """The command-line spelling of a library parameter, or None when no command takes it."""
    return _ALIASES.get(param) or _flags().get(param)


@functools.lru_cache(maxsize=1)
def _flags() -> dict[str, str]:
    import typer.main

    out: dict[str, str] = {}
    for cmd in typer.main.get_command(app).commands.values():  # type: ignore[attr-defined]
        for prm in cmd.params:
            if prm.param_type_name == "argument":
                out.setdefault(str(prm.name), str(prm.name).upper())
            elif prm.name and not getattr(prm, "hidden", False):
                longs = [o for o in prm.opts if o.startswith("--")]
                out.setdefault(str(prm.name), longs[0] if longs else prm.opts[0])
    return out


def _message(exc: C2SError) -> str:
    """The error's one line, its leading parameter name replaced by the CLI flag (``sigma must…`` → ``--sigma must…``)."""
    msg = str(exc)
    flag = flag_of(exc.param or "")
    if flag and (msg.startswith(exc.param + " ") or msg.startswith(exc.param + ":")):  # type: ignore[operator]
        return f"{flag}{msg[len(exc.param):]}"  # type: ignore[arg-type]
    return msg


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a command; map errors to one line on stderr and a distinct exit code (traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        # from here on an interrupt is the command's to handle (before, c2s_cli._entry exits at once with 130)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _on_term)
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt:
            for sig in (signal.SIGINT, signal.SIGTERM):  # the exit is decided: a late signal must not turn it into −2
                signal.signal(sig, signal.SIG_IGN)
            sys.stderr.write("c2s: interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        except C2SError as exc:
            if _VERBOSE:
                traceback.print_exc()
            sys.stderr.write(f"c2s: error: {_message(exc)}\n")
            sys.exit(exc.exit_code)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # unexpected: one line; the traceback (never locals) only with -v
            if _VERBOSE:
                traceback.print_exc()
            sys.stderr.write(f"c2s: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)\n")
            sys.exit(EXIT_RUNTIME)

    return wrapper


class _Log:
    """Messages and progress on stderr; quiet hides info, verbose adds details."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.verbose = verbose

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg, markup=False)

    def debug(self, msg: str) -> None:
        if self.verbose:
            self.console.print(msg, markup=False, style="dim")

    def warn(self, msg: str) -> None:
        self.console.print(f"c2s: warning: {msg}", markup=False, style="yellow")

    def ticker(self, name: str, every: float = 10.0) -> Callable[[str, int, int], None]:
        """Progress as log lines when stderr is not a terminal (SLURM, nohup, a log file): ``name: stage done/total
        (pct %), N s`` at most every ``every`` seconds, and at the end of each stage. On a terminal the bar shows
        it and this says nothing."""
        import time

        if self.quiet or self.console.is_terminal:
            return lambda stage, done, total: None
        t0 = time.monotonic()
        last = [t0]

        def tick(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= every or (total and done >= total and now - t0 >= every):
                last[0] = now
                pct = f" ({100 * done / total:.0f} %)" if total else ""
                self.console.print(f"{name}: {stage} {done}/{total or '?'}{pct}, {now - t0:.0f} s", markup=False)

        return tick

    def progress(self) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            disable=self.quiet or not self.console.is_terminal,
            transient=True,
        )


QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors on stderr.")]
# options shared by several commands: one declaration each (the commands must not drift apart)
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", envvar="C2S_DEVICE")]
SelfSimilarityOpt = Annotated[bool, typer.Option("--self-similarity/--no-self-similarity", help="Blend the network's output with the scan's non-local-means estimate (3×3 or 3×3×3 patches) by the weight and patch SURE chooses per volume (plain models; the record shows them).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(min=1, help="CPU threads.")]
PrecisionOpt = Annotated[str, typer.Option(
    help="auto (bf16 where the CPU/GPU runs it natively, else fp32), fp32 or bf16.", envvar="C2S_PRECISION")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(min=1, help="Slices per forward pass (the output does not depend on it).")]
SeriesOpt = Annotated[Optional[str], typer.Option(help="DICOM series to use (UID or SeriesNumber).")]
SeriesModeOpt = Annotated[str, typer.Option("--series-mode", help="A 4-D series: 'context' gives each volume the other volumes as input (nearest in q-space from the .bval/.bvec beside a NIfTI or the DICOM diffusion attributes, else in time; the prediction from all of them; the shell mean) after self-supervised training on the series itself; 'volumes' denoises each volume alone; 'auto' (default): context for a diffusion series with a gradient table, volumes otherwise (fMRI).")]
SeriesStepsOpt = Annotated[Optional[int], typer.Option("--series-steps", min=0, envvar="C2S_SERIES_STEPS", help="Training steps on the series in the context mode (default: 200 from a start model trained with context, as the shipped one; 400 from a context-free model; fewer: faster, less gain; 0: the start model as it is).")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="More detail; tracebacks on errors.")]


def _start(quiet: bool, verbose: bool) -> _Log:
    """Set the verbosity for error reporting and return the stderr logger of a command."""
    global _VERBOSE
    _VERBOSE = verbose
    return _Log(quiet, verbose)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"c2s {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Self-supervised MRI denoising (Corruption2Self)."""


def _planes(text: str) -> tuple[str, ...]:
    """``--planes axial,coronal`` → ("axial", "coronal"), checked (a UsageError naming ``planes``)."""
    from c2s_cli.api import check_planes

    plane_list = tuple(p.strip() for p in text.split(",") if p.strip())
    check_planes(plane_list)
    return plane_list

