from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from c2s_cli.checkpoint import load_model, read_header, resolve_model, save_model
from c2s_cli.config import ModelConfig, RunConfig
from c2s_cli.errors import CheckpointError
from c2s_cli.model import Precond


def test_round_trip(tiny_model: Path) -> None:
    model, cfg, meta = load_model(tiny_model)
    assert cfg.model.channels == (8, 16)
    assert meta["format_version"] == "1" and meta["training"]["description"] == "random init (tests)"
    again = Precond(cfg.model)
    again.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(again(x, torch.tensor([0.1])), model(x, torch.tensor([0.1])))
    header, tensors = read_header(tiny_model)
    assert json.loads(header["config"])["model"]["channels"] == [8, 16]
    assert "net.out.weight" in tensors


def _rewrite_meta(src: Path, dst: Path, **changes: str) -> None:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update(changes)
    body = json.dumps(header).encode()
    body += b" " * ((8 - len(body) % 8) % 8)
    dst.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])


def test_wrong_format_version(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "v9.safetensors"
    _rewrite_meta(tiny_model, bad, format_version="9")
    with pytest.raises(CheckpointError, match="format version '9'"):
        load_model(bad)


def test_truncated_and_garbage(tiny_model: Path, tmp_path: Path) -> None:
    raw = tiny_model.read_bytes()
    t = tmp_path / "t.safetensors"
    t.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(t)
    g = tmp_path / "g.safetensors"
    g.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(g)
    e = tmp_path / "e.safetensors"
    e.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(e)


def test_shape_mismatch(tiny_model: Path, tmp_path: Path) -> None:
    other = RunConfig(model=ModelConfig(channels=(8, 32), emb_dim=16))
    bad = tmp_path / "mismatch.safetensors"
    model, _, _ = load_model(tiny_model)
    save_model(bad, model.state_dict(), other, {})
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(bad)


def test_resolve(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model))[0] == tiny_model
    with pytest.raises(CheckpointError, match="no such model file"):
        resolve_model(str(tmp_path / "missing.safetensors"))
    monkeypatch.setenv("C2S_WEIGHTS", str(tiny_model.parent))
    path, sha = resolve_model("tiny")
    assert path == tiny_model and sha is None
    with pytest.raises(CheckpointError, match="unknown model name"):
        resolve_model("nonexistent-name")
