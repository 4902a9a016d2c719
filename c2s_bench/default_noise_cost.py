"""What the default noise choice costs end to end on a 3-D volume it is in doubt about (benchmarks/README.md,
"The default for 3-D volumes").

The volume: the unseen pycortex T1, central 176 coronal slices (256×256×176; air zeroed in the scan, so after adding
Rician noise at 5 % of the 99.5th percentile the object reads above the background: in doubt, the σ map is
estimated). `c2s denoise` runs with no noise flag (the default) and with `--sigma-map none` (the whole-scan σ only),
alternating in each round, so that load swings hit both; wall time and c2s's own breakdown per run. On this volume
the map is flat and both runs use the same σ: the outputs are compared to show it.

Usage:  python -m c2s_bench.default_noise_cost --data ../shared/data [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from c2s_bench.compare_e2e import ROOT, run
from c2s_bench.harness import parser, rician, run_header


def main() -> None:
    ap = parser(__doc__, "default_noise_cost")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    v = np.asarray(nib.load(str(args.data / "nifti" / "pycortex_s1_t1_1mm.nii.gz")).dataobj, np.float32)[:, :, 40:216]
    ref = v / float(np.percentile(v[v > 0], 99.5))
    res: dict[str, object] = {**run_header(args.threads), "volume": "pycortex S1 T1, coronal 40-215 (256×256×176), "
                              "Rician 5 % of p99.5", "runs": {"default": [], "none": []}}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "vol.nii.gz"
        nib.save(nib.Nifti1Image(np.rint(rician(ref, 0.05, seed=7) * 1000).astype(np.int16), np.eye(4)), str(src))
        for i in range(args.rounds):
            for name, extra in (("default", []), ("none", ["--sigma-map", "none"])):
                r = run(ROOT, src, Path(tmp) / f"{name}.nii.gz", args.threads, extra)
                res["runs"][name].append(r)  # type: ignore[index]
                print(f"round {i} {name:<8} {r['wall_s']:6.2f} s  {r['seconds']}", flush=True)
        a = np.asarray(nib.load(str(Path(tmp) / "default.nii.gz")).dataobj, np.float32)
        b = np.asarray(nib.load(str(Path(tmp) / "none.nii.gz")).dataobj, np.float32)
        res["max_abs_output_difference"] = float(np.max(np.abs(a - b)))
    for name in ("default", "none"):
        walls = sorted(r["wall_s"] for r in res["runs"][name])  # type: ignore[index]
        res[f"{name}_median_wall_s"] = round(walls[len(walls) // 2], 2)
    print({k: v for k, v in res.items() if k != "runs"})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
