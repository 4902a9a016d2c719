"""Model files: safetensors only (never pickle), with the format version, c2s version and config in the metadata.

* ``save_model`` / ``load_model``: the (EMA) weights for inference.
* ``read_header``: the metadata alone, without torch (for ``c2s info``).
* ``save_state`` / ``load_state``: the resumable training state (optimizer moments, step, RNG) as safetensors.
* ``resolve_model``: a name (``default``, shipped or in ``$C2S_WEIGHTS``) or a path → a verified file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

from c2s_cli._version import __version__
from c2s_cli.config import RunConfig
from c2s_cli.errors import CheckpointError

FORMAT_VERSION = "1"
MAX_HEADER = 100 * 1024 * 1024


def regular_file(path: Path, what: str = "model file") -> None:
    """Refuse anything but a regular file (a FIFO or a device would block or never end)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file; give a {what}")


def sha256(path: Path) -> str:
    regular_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_header(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The safetensors metadata (str → str) and tensor table, reading only the header bytes."""
    regular_file(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path}: truncated model file (no safetensors header)")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > MAX_HEADER:
                raise CheckpointError(f"{path}: not a safetensors file (header size {n})")
            body = fh.read(n)
            size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read model file ({exc.strerror})") from None
    if len(body) != n:
        raise CheckpointError(f"{path}: truncated model file (header cut short)")
    try:
        header = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupted safetensors header") from None
    meta = header.pop("__metadata__", {}) or {}
    end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated model file ({size} bytes, header promises {8 + n + end})")
    return meta, header


def check_meta(path: Path, meta: dict[str, str]) -> RunConfig:
    """Validate the c2s metadata and return the run config it holds."""
    if meta.get("format") != "c2s-model":
        raise CheckpointError(f"{path}: not a c2s model (metadata 'format' is {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: model format version {meta.get('format_version')!r} is not supported by c2s {__version__} "
            f"(expects {FORMAT_VERSION})"
        )
    try:
        cfg = RunConfig.from_dict(json.loads(meta["config"]))
        cfg.model.validate()
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid config in the model metadata ({exc})") from None
    return cfg


def save_model(path: Path, state: dict[str, Any], cfg: RunConfig, extra: dict[str, Any]) -> None:
    """Write weights (tensors) with metadata: format, version, config JSON and ``extra`` (each value JSON)."""
    from safetensors.torch import save_file

    meta = {
        "format": "c2s-model",
        "format_version": FORMAT_VERSION,
        "c2s_version": __version__,
        "config": cfg.to_json(),
    }
    meta.update({k: json.dumps(v, sort_keys=True) for k, v in extra.items()})
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata=meta)


def load_model(path: Path, *, expected_sha256: str | None = None) -> tuple[Any, RunConfig, dict[str, Any]]:
    """Load a c2s model: returns (Precond in eval mode on CPU, RunConfig, metadata with JSON values decoded)."""
    from safetensors.torch import load_file

    from c2s_cli.model import Precond

    meta, _ = read_header(path)
    cfg = check_meta(path, meta)
    if expected_sha256 is not None:
        actual = sha256(path)
        if actual != expected_sha256:
            raise CheckpointError(f"{path}: SHA-256 {actual[:16]}… does not match the registered {expected_sha256[:16]}…")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: corrupted model file ({exc})") from None
    model = Precond(cfg.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(f"{path}: weights do not match the config in its metadata ({detail})") from None
    decoded: dict[str, Any] = {}
    for k, v in meta.items():
        if k in ("format", "format_version", "c2s_version"):
            decoded[k] = v
            continue
        try:
            decoded[k] = json.loads(v)
        except json.JSONDecodeError:
            decoded[k] = v
    return model.eval(), cfg, decoded


def save_state(path: Path, tensors: dict[str, Any], info: dict[str, Any]) -> None:
    """Resumable training state: tensors (optimizer moments, RNG) + JSON info (step, ...)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"info": json.dumps(info)})


def load_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    meta, _ = read_header(path)
    try:
        return load_file(str(path)), json.loads(meta["info"])
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------- model registry


def weights_dirs() -> list[Path]:
    """Where named models are looked up: $C2S_WEIGHTS, then the shipped weights (installed or in a checkout)."""
    dirs = []
    env = os.environ.get("C2S_WEIGHTS")
    if env:
        dirs.append(Path(env))
    pkg = Path(__file__).resolve().parent
    dirs += [pkg / "weights", pkg.parent / "weights"]
    return [d for d in dirs if d.is_dir()]


def registry(d: Path) -> dict[str, str]:
    """name → SHA-256 from ``d/registry.json`` (shipped weights are verified against it)."""
    f = d / "registry.json"
    if not f.is_file():
        return {}
    try:
        return {k: v["sha256"] for k, v in json.loads(f.read_text()).items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{f}: malformed weights registry") from None


def series_start(path: Path) -> str | None:
    """The name of the model that a registered model's series (4-D context) mode starts its training on the series
    from (its registry entry's ``series_start``), or None: the model itself. ``default`` names ``series``: trained
    from the later default, the DWI context mode lost 0.17–0.22 dB (weights/README.md)."""
    f = path.parent / "registry.json"
    if not f.is_file():
        return None
    try:
        name = json.loads(f.read_text()).get(path.stem, {}).get("series_start")
    except (json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{f}: malformed weights registry") from None
    return str(name) if name else None


def list_models() -> list[tuple[str, Path, str | None]]:
    """(name, path, registered SHA-256 or None) for every model file found, first directory wins."""
    seen: dict[str, tuple[str, Path, str | None]] = {}
    for d in weights_dirs():
        reg = registry(d)
        for f in sorted(d.glob("*.safetensors")):
            seen.setdefault(f.stem, (f.stem, f, reg.get(f.stem)))
    return list(seen.values())


def resolve_model(spec: str) -> tuple[Path, str | None]:
    """A model name or path → (file, expected SHA-256 or None)."""
    p = Path(spec)
    if p.suffix == ".safetensors" or os.sep in spec or p.exists():
        if not p.exists():
            raise CheckpointError(f"model {spec}: no such model file", param="model")
        regular_file(p)
        return p, None
    for name, path, sha in list_models():
        if name == spec:
            return path, sha
    names = ", ".join(n for n, _, _ in list_models()) or "none"
    raise CheckpointError(f"model {spec}: unknown model name (available: {names}; or give a .safetensors path)", param="model")
