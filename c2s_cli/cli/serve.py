"""``c2s serve``: the DICOM node (library: :mod:`c2s_cli.serve`). Flags and a TOML file take the same names."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from c2s_cli.cli.app import QuietOpt, ThreadsOpt, VerboseOpt, _guarded, _start, app


def _text(e: dict[str, Any]) -> str:
    """One readable log line of a node event (series by short hash, never by patient attributes)."""
    parts = [e["time"], e["event"]]
    for k, v in e.items():
        if k not in ("time", "event", "level"):
            parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(str(p) for p in parts)


@app.command()
@_guarded
def serve(
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with any of these settings (flags win).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface).")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port (default 11112).")] = None,
    ae_title: Annotated[Optional[str], typer.Option("--ae-title", help="This node's AE title (default C2S).")] = None,
    spool: Annotated[Optional[Path], typer.Option("--spool", help="Folder for received instances and jobs (created 0700).")] = None,
    send: Annotated[Optional[list[str]], typer.Option("--send", help="Destination AET@HOST:PORT (repeatable).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also (or only) write derived series here: STUDY_UID/SERIES_UID/.")] = None,
    allow: Annotated[Optional[list[str]], typer.Option("--allow", help="Calling AE title allowed (repeatable; others are rejected).")] = None,
    allow_address: Annotated[Optional[list[str]], typer.Option("--allow-address", help="Source IP allowed (repeatable; others are refused).")] = None,
    stable_seconds: Annotated[Optional[float], typer.Option("--stable-seconds", help="A series is complete after this many seconds without a new instance (default 30).")] = None,
    on_release: Annotated[Optional[bool], typer.Option("--on-release/--no-on-release", help="Also complete a series when its association is released.")] = None,
    include: Annotated[Optional[list[str]], typer.Option("--include", help="Denoise only series whose SeriesDescription or ProtocolName matches (shell pattern, repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Never denoise series matching this pattern (repeatable).")] = None,
    min_slices: Annotated[Optional[int], typer.Option("--min-slices", help="Denoise only series with at least this many images (default 3).")] = None,
    forward_unmatched: Annotated[Optional[bool], typer.Option("--forward-unmatched/--ignore-unmatched", help="Send series that are not denoised on unchanged (default: ignore them).")] = None,
    pair_phase: Annotated[Optional[bool], typer.Option("--pair-phase/--no-pair-phase", help="Denoise a magnitude series with the phase series of the same acquisition as complex data (waits up to --stable-seconds more for it).")] = None,
    retry_seconds: Annotated[Optional[float], typer.Option("--retry-seconds", help="First retry delay for a destination that is down; doubles (default 10).")] = None,
    retry_max_seconds: Annotated[Optional[float], typer.Option("--retry-max-seconds", help="Longest retry delay (default 600).")] = None,
    keep_days: Annotated[Optional[float], typer.Option("--keep-days", help="Keep delivered jobs in the spool this long; 0 deletes them once delivered (default 7).")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="PEM certificate: accept TLS associations only.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    tls_ca: Annotated[Optional[Path], typer.Option("--tls-ca", help="Require callers' certificates signed by this CA.")] = None,
    send_tls_ca: Annotated[Optional[Path], typer.Option("--send-tls-ca", help="Send over TLS, verifying destinations with this CA.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name or .safetensors path.", envvar="C2S_MODEL")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps (default auto).", envvar="C2S_DEVICE")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 where native), fp32 or bf16.")] = None,
    threads: ThreadsOpt = None,
    strength: Annotated[Optional[float], typer.Option(help="Multiplies σ for the network.")] = None,
    tta: Annotated[Optional[int], typer.Option(help="1, 2, 4 or 8 in-plane flips per slice.")] = None,
    planes: Annotated[Optional[str], typer.Option(help="axial,coronal,sagittal: view aggregation.")] = None,
    self_similarity: Annotated[Optional[bool], typer.Option("--self-similarity/--no-self-similarity", help="Blend with the scan's non-local-means estimate by SURE's weight (default on).")] = None,
    log_json: Annotated[Optional[bool], typer.Option("--log-json", help="Log one JSON object per line on stderr.")] = None,
    status: Annotated[bool, typer.Option("--status", help="Print the status of the node using --spool (JSON) and exit.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """A DICOM node: receive series (C-STORE), denoise them, send the derived series on (C-STORE) and/or to --output."""

    from c2s_cli.extras import require
    from c2s_cli.serve import Node, build, load_toml, read_status
    from c2s_cli.serve.config import SETTINGS, path_setting

    log = _start(quiet, verbose)
    names = set(SETTINGS)  # the flags that are settings (a TOML key each)
    given = {k: v for k, v in locals().items() if k in names and v not in (None, [])}
    settings = {**(load_toml(config) if config is not None else {}), **given}
    if status:
        from c2s_cli.errors import UsageError

        if "spool" not in settings:
            raise UsageError("spool: --status needs --spool DIR (or a --config naming it)", param="spool")
        st = read_status(path_setting("spool", settings["spool"]))
        st["alive"] = _alive(int(st.get("pid", 0))) and st.get("state") != "stopped"
        typer.echo(json.dumps(st, indent=1, sort_keys=True))
        return
    cfg = build(settings)
    require("serve", "c2s serve")

    def on_event(e: dict[str, Any]) -> None:
        if cfg.log_json:
            sys.stderr.write(json.dumps(e, default=str) + "\n")
            sys.stderr.flush()
        elif e.get("level") == "error":
            log.warn(_text(e))
        else:
            log.info(_text(e))

    node = Node(cfg, on_event=on_event)
    node.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node.stop())
    node.serve_forever()


def _alive(pid: int) -> bool:
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

