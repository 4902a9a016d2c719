"""Copy a trained model into weights/ under a name and record its SHA-256 in weights/registry.json."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from c2s_cli.checkpoint import check_meta, read_header, sha256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--series-start", help="the registered model this one's series (4-D context) mode starts from")
    args = ap.parse_args()
    weights = Path(__file__).resolve().parents[1] / "weights"
    meta, _ = read_header(args.model)
    check_meta(args.model, meta)
    dst = weights / f"{args.name}.safetensors"
    shutil.copyfile(args.model, dst)
    reg_path = weights / "registry.json"
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {}
    training = json.loads(meta.get("training", "{}"))
    reg[args.name] = {"sha256": sha256(dst), "bytes": dst.stat().st_size, "trained_on": training.get("description", "")}
    if args.series_start:
        reg[args.name]["series_start"] = args.series_start
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    print(f"{dst}: sha256 {reg[args.name]['sha256']}")


if __name__ == "__main__":
    main()
