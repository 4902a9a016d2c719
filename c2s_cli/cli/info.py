"""``c2s info``: describe a scan, a DICOM folder or a model (library: :mod:`c2s_cli.describe`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from c2s_cli.cli.app import _guarded, app
from c2s_cli.errors import UsageError



@app.command()
@_guarded
def info(
    path: Annotated[Optional[Path], typer.Argument(help="A NIfTI file, a DICOM file or folder, or a .safetensors model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    series: Annotated[Optional[str], typer.Option(help="DICOM series to describe (UID or SeriesNumber).")] = None,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Estimate the noise level (scans).")] = True,
    coils: Annotated[int, typer.Option("--noise-coils", min=1, help="Effective coil count N (1 = Rician).")] = 1,
    models: Annotated[bool, typer.Option("--models", help="List the available models.")] = False,
) -> None:
    """Describe a scan, a DICOM folder or a model checkpoint (no weights are loaded)."""
    from c2s_cli import describe

    if models:
        rows = describe.models_info()
        if as_json:
            typer.echo(json.dumps(rows))
        for r in rows if not as_json else []:
            ok = {True: "verified", False: "SHA-256 MISMATCH", None: "unregistered"}[r["verified"]]
            typer.echo(f"{r['name']:<12} {r['sha256'][:16]}…  {ok:<16} {r['path']}")
            if r["trained_on"]:
                typer.echo(f"{'':<12} trained on: {r['trained_on']}")
        return
    if path is None:
        raise UsageError("give a PATH (or --models)")
    out = describe.model_info(path) if path.suffix == ".safetensors" else describe.scan_info(path, series=series, noise=noise, coils=coils)
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for k, v in out.items():
        if k in ("affine", "config") or v in (None, "", [], {}):
            continue
        if k == "noise" and isinstance(v, dict):
            s = v.get("sigma")
            line = f"σ = {s:.4g}, from {v.get('method')}" if s else "unavailable"
            line += f", σ_object/σ_background = {v['ratio']:.2f}" if v.get("ratio") else ""
            table.add_row("noise", line)
            if v.get("reason"):
                table.add_row("", f"c2s denoise uses {v['reason']}" if s else f"c2s denoise refuses: {v['reason']}")
            for w in v.get("warnings", []):
                if w != v.get("reason"):
                    table.add_row("", f"⚠ {w}")
        elif k == "series" and isinstance(v, list):
            for i, s in enumerate(v):
                table.add_row("series" if i == 0 else "", f"#{s['number']} {s['description']!r} {s['modality']} ×{s['images']}  {s['uid']}")
        else:
            table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    Console(no_color="NO_COLOR" in os.environ).print(table)
