#!/usr/bin/env python3
"""Give a model a non-local-means input channel (issue 32's self-similarity lever), with zero first-layer weights,
so that it computes exactly what the given model computes until ``c2s train --init`` trains it to read the channel.

  python scripts/widen_nonlocal.py default /tmp/default_nl2.safetensors --radius 2
  c2s train DATA -o nl.safetensors --init /tmp/default_nl2.safetensors --steps 3000 …
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from c2s_cli.checkpoint import load_model, resolve_model, save_model
from c2s_cli.model.precond import with_nonlocal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a registered name or a .safetensors file")
    ap.add_argument("out", type=Path)
    ap.add_argument("--radius", type=int, default=2, help="search radius in pixels (window 2r+1, in 3 slices)")
    ap.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = ap.parse_args()
    if args.out.exists() and not args.force:
        ap.error(f"out {args.out} exists; give --force to replace it")
    path, sha = resolve_model(args.model)
    model, cfg, meta = load_model(path, expected_sha256=sha)
    wide = with_nonlocal(model, args.radius)
    cfg = dataclasses.replace(cfg, model=wide.cfg)
    training = dict(meta.get("training", {}))
    training["description"] = (f"{path.name} with a non-local-means input channel (radius {args.radius}, zero "
                               f"weights) added; before: {training.get('description', '')}")
    save_model(args.out, wide.state_dict(), cfg, {**{k: v for k, v in meta.items() if k == "training"},
                                                  "training": training})
    print(f"{args.out}: {wide.cfg.in_channels} input channels (the last: non-local means, radius {args.radius})")


if __name__ == "__main__":
    main()
