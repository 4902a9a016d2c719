"""End-to-end `c2s denoise` time of this checkout against another revision, side by side in one run.

The 256×256×176 Rician-noisy volume of `speed.py` is denoised by both code versions in alternating rounds (same
machine, same moment, so load swings hit both), with the same shipped model; slice-wise BM3D (true σ, a few slices,
extrapolated) is timed in the same run for the ratio. Results: a JSON file and a Markdown summary on stdout.

Usage:  python -m c2s_bench.compare_e2e --data ../shared/data --against d3dbafb [--rounds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from c2s_bench.harness import RESULTS

ROOT = Path(__file__).resolve().parents[1]

def run(code_root: Path, inp: Path, out: Path, threads: int, extra: list[str]) -> dict[str, object]:
    """One `c2s denoise` process of the code in ``code_root``: wall time and c2s's own breakdown."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    cmd = [sys.executable, "-m", "c2s_cli", "denoise", str(inp), "-o", str(out), "--force", "--json", "-q",
           "--device", "cpu", "--threads", str(threads), *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=code_root, env=env)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "seconds": json.loads(r.stdout)["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--against", required=True, help="git revision to compare with (archived into a temp folder)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bm3d-slices", type=int, default=4)
    ap.add_argument("--denoise-args", default="")
    ap.add_argument("--json", type=Path, default=RESULTS / "compare_e2e.json")
    args = ap.parse_args()
    import torch

    from c2s_bench.speed import make_volume

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "c2s_cli"], capture_output=True,
                                text=True).stdout.strip())
    res: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": args.threads, "this": head + (" (uncommitted changes)" if dirty else ""), "against": args.against,
        "command": " ".join(["python", *sys.argv]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        vol = Path(tmp) / "vol176.nii.gz"
        sigma = make_volume(args.data, vol, 176)
        extra = args.denoise_args.split()
        runs: dict[str, list[dict[str, object]]] = {"this": [], "against": []}
        for r in range(args.rounds):
            order = (("this", ROOT), ("against", old)) if r % 2 == 0 else (("against", old), ("this", ROOT))
            for name, root in order:
                runs[name].append(run(root, vol, Path(tmp) / f"o_{name}.nii.gz", args.threads, extra))
        import nibabel as nib

        a = np.asarray(nib.load(str(Path(tmp) / "o_this.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(Path(tmp) / "o_against.nii.gz")).dataobj)
        res["outputs_identical"] = bool(np.array_equal(a, b))
        res["outputs_max_abs_diff"] = float(np.abs(a - b).max())
        import bm3d

        noisy = np.asarray(nib.load(str(vol)).dataobj, dtype=np.float64)
        ks = np.linspace(0, noisy.shape[2] - 1, args.bm3d_slices).astype(int)
        t0 = time.perf_counter()
        for k in ks:
            bm3d.bm3d(noisy[:, :, k], sigma_psd=sigma)
        res["bm3d_s_per_volume_extrapolated"] = (time.perf_counter() - t0) / len(ks) * noisy.shape[2]
    res["runs"] = runs
    for name in runs:
        walls = sorted(float(r["wall_s"]) for r in runs[name])  # type: ignore[arg-type]
        res[f"{name}_wall_median_s"] = float(np.median(walls))
        res[f"{name}_wall_range_s"] = [walls[0], walls[-1]]
    res["bm3d_over_this"] = res["bm3d_s_per_volume_extrapolated"] / res["this_wall_median_s"]  # type: ignore[operator]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
