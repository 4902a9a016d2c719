"""The configuration of ``c2s serve``: one frozen dataclass, filled from flags and/or a TOML file (same names)."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c2s_cli.config import DenoiseOptions, check_precision
from c2s_cli.errors import UsageError

_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 characters of the default repertoire, no backslash


@dataclass(frozen=True)
class Destination:
    """A DICOM destination (a Storage SCP): called AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT`` (IPv6 hosts in brackets: ``PACS@[::1]:104``)."""
        m = re.fullmatch(r"(?P<aet>[^@]+)@(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]]+)):(?P<port>\d{1,5})", text.strip())
        if not m or not _AET.match(m["aet"].strip()) or not 0 < int(m["port"]) < 65536:
            raise UsageError(f"send {text!r}: expected AET@HOST:PORT (AE title of ≤ 16 characters, port 1–65535)",
                             param="send")
        return cls(m["aet"].strip(), m["v6"] or m["host"], int(m["port"]))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True)
class ServeConfig:
    """Every setting of the DICOM node. Times in seconds; ``keep_days`` in days (0: delete a job once delivered).

    Routing: a series is denoised when its Modality is MR, it has at least ``min_slices`` images (frames for a
    multi-frame object), its SeriesDescription or ProtocolName matches one of ``include`` (shell patterns,
    case-insensitive; empty: everything) and none of ``exclude``. Any other series is ignored, or sent on unchanged
    with ``forward_unmatched``.

    ``pair_phase``: a magnitude series is denoised with the phase series of the same acquisition as complex data (as
    ``c2s denoise --phase``), once both are complete; the node waits up to ``stable_seconds`` more for a phase
    series before it denoises a magnitude series alone. The phase series itself is sent on (or ignored) as before.
    """

    spool: Path
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "C2S"
    send: tuple[Destination, ...] = ()
    output: Path | None = None
    allow: tuple[str, ...] = ()  # calling AE titles; empty: any
    allow_address: tuple[str, ...] = ()  # source IP addresses; empty: any
    stable_seconds: float = 30.0
    on_release: bool = False  # a series is also ready when the association that sent it is released
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_slices: int = 3
    forward_unmatched: bool = False
    pair_phase: bool = False  # denoise magnitude + phase series of one acquisition together (complex data)
    retry_seconds: float = 10.0  # first retry delay; doubles up to retry_max_seconds
    retry_max_seconds: float = 600.0
    keep_days: float = 7.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # with it, callers must present a certificate signed by this CA
    send_tls_ca: Path | None = None  # with it, outgoing associations use TLS, destinations verified by this CA
    model: str = "default"
    device: str = "auto"
    precision: str = "auto"
    # how every series is denoised: the one declaration of these options (config.DenoiseOptions); in the TOML file
    # and on the command line they are flat settings (strength, tta, planes, vst, coils, threads, self_similarity), as
    # for c2s denoise
    denoise: DenoiseOptions = dataclasses.field(default_factory=DenoiseOptions)
    log_json: bool = False
    poll_seconds: float = 0.5

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first bad setting (before anything is opened)."""
        if not _AET.match(self.ae_title) or self.ae_title != self.ae_title.strip():
            raise UsageError(f"ae_title {self.ae_title!r}: 1–16 characters, no backslash, no surrounding spaces",
                             param="ae_title")
        for a in self.allow:
            if not _AET.match(a):
                raise UsageError(f"allow {a!r}: not an AE title (1–16 characters, no backslash)", param="allow")
        if not 0 <= self.port < 65536:
            raise UsageError(f"port must be 0–65535, got {self.port}", param="port")
        for name in ("stable_seconds", "retry_seconds", "retry_max_seconds", "keep_days", "poll_seconds"):
            v = getattr(self, name)
            if not (v >= 0 and v < float("inf")):
                raise UsageError(f"{name} must be a number ≥ 0, got {v}", param=name)
        try:
            check_precision(self.precision)
        except ValueError as exc:
            raise UsageError(str(exc), param="precision") from None
        if self.min_slices < 1:
            raise UsageError(f"min_slices must be ≥ 1, got {self.min_slices}", param="min_slices")
        if not self.send and self.output is None:
            raise UsageError("send: give at least one destination (--send AET@HOST:PORT) or an --output folder",
                             param="send")
        if self.output is not None:
            out, spool = Path(self.output).resolve(), Path(self.spool).resolve()
            if out == spool or spool in out.parents or out in spool.parents:
                raise UsageError(f"output {self.output}: the same as, inside or around the spool {self.spool}; "
                                 "give a folder apart from it", param="output")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("tls_cert and tls_key go together", param="tls_cert")
        if self.tls_ca is not None and self.tls_cert is None:
            raise UsageError("tls_ca needs tls_cert and tls_key (the node's own certificate)", param="tls_ca")
        for name in ("tls_cert", "tls_key", "tls_ca", "send_tls_ca"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise UsageError(f"{name} {p}: no such file", param=name)
        try:
            self.denoise_options().validate()
        except ValueError as exc:
            raise UsageError(str(exc), param=str(exc).split(" ")[0]) from None
        clash = self.denoise_options().complex_conflict() if self.pair_phase else None
        if clash:
            raise UsageError(f"pair_phase: complex data is denoised without the Rician model; {clash} is not "
                             "allowed with it", param="pair_phase")

    def denoise_options(self) -> DenoiseOptions:
        """The :class:`~c2s_cli.config.DenoiseOptions` of every job (σ is chosen per series by the noise policy)."""
        return self.denoise


# the DenoiseOptions a node takes as flat settings (flags and TOML keys)
DENOISE_SETTINGS = ("strength", "tta", "planes", "vst", "coils", "threads", "self_similarity")
# every flat setting: the node's own and the denoise ones
SETTINGS = tuple(f.name for f in dataclasses.fields(ServeConfig) if f.name != "denoise") + DENOISE_SETTINGS


_PATHS = {"spool", "output", "tls_cert", "tls_key", "tls_ca", "send_tls_ca"}
_LISTS = {"send", "allow", "allow_address", "include", "exclude", "planes"}
_INTS = {"port", "min_slices", "threads", "tta", "coils"}
_FLOATS = {"stable_seconds", "retry_seconds", "retry_max_seconds", "keep_days", "strength", "poll_seconds"}
_BOOLS = {"on_release", "forward_unmatched", "pair_phase", "vst", "log_json", "self_similarity"}


def load_toml(path: Path) -> dict[str, Any]:
    """The settings of a TOML file (keys as the flags, ``-`` or ``_``); unknown keys are refused with their name."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read ({exc.strerror})", param="config") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML ({exc})", param="config") from None
    known = set(SETTINGS)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UsageError(f"config {path}: unknown setting {key!r}", param="config")
        out[name] = value
    return out


def _shown(value: Any) -> str:
    """A setting's value for a message, cut short (a config file holds no patient data, but keep lines short)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def path_setting(name: str, value: Any) -> Path:
    """A path setting (``spool``, ``output``, the TLS files) from a flag or a TOML value; anything but a text is one
    line naming the setting."""
    if not isinstance(value, (str, Path)):
        raise UsageError(f"{name} must be a path (text), got {type(value).__name__} {_shown(value)}", param=name)
    return Path(value).expanduser()


def build(settings: Mapping[str, Any]) -> ServeConfig:
    """A validated :class:`ServeConfig` from plain values (TOML values overridden by the flags that were given)."""
    values: dict[str, Any] = {}
    settings = dict(settings)
    if isinstance(settings.get("denoise"), DenoiseOptions):  # a ServeConfig's own fields, given back
        nested = settings.pop("denoise")
        settings = {**{k: getattr(nested, k) for k in DENOISE_SETTINGS}, **settings}
    for name, value in settings.items():
        if value is None:
            continue
        if name in _LISTS:
            items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
            if items is None or not all(isinstance(v, str) for v in items):
                raise UsageError(f"{name} must be a text or a list of texts, got {type(value).__name__} "
                                 f"{_shown(value)}", param=name)
            if name == "planes" and len(items) == 1 and "," in items[0]:
                items = [s.strip() for s in items[0].split(",")]
            values[name] = tuple(Destination.parse(v) if name == "send" else str(v) for v in items)
        elif name in _PATHS:
            values[name] = path_setting(name, value)
        elif name in _INTS | _FLOATS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or (name in _INTS and value != int(value)):
                raise UsageError(f"{name} must be a{'n integer' if name in _INTS else ' number'}, got {value!r}",
                                 param=name)
            values[name] = int(value) if name in _INTS else float(value)
        elif name in _BOOLS:
            if not isinstance(value, bool):
                raise UsageError(f"{name} must be true or false, got {value!r}", param=name)
            values[name] = value
        else:  # the text settings: host, ae_title, model, device, precision
            if not isinstance(value, str):
                raise UsageError(f"{name} must be a text, got {type(value).__name__} {_shown(value)}", param=name)
            values[name] = value
    if "spool" not in values:
        raise UsageError("spool: a spool folder is required (--spool DIR or spool = \"…\" in the config)",
                         param="spool")
    values["denoise"] = DenoiseOptions(**{k: values.pop(k) for k in DENOISE_SETTINGS if k in values})
    try:
        cfg = ServeConfig(**values)
    except TypeError as exc:
        raise UsageError(f"config: {exc}", param="config") from None
    cfg.validate()
    return cfg
