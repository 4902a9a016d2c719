"""When does view aggregation (`--planes axial,coronal,sagittal`) help? The MNI slices of the quality benchmark's
held-out band, kept at 1 mm or thinned to every 2nd / 3rd / 5th slice (slice spacing 2–5 mm with 1 mm pixels, as a
thick-slice or gapped acquisition), Rician σ = 5 % / 10 %; c2s zero-shot (σ estimated) along one plane vs three.

Usage: python -m c2s_bench.planes_anisotropy --data ../shared/data [--model default]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from c2s_bench.harness import RESULTS, head_mask, metrics, rician
from c2s_cli.api import Denoiser
from c2s_cli.config import PLANES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", type=Path, default=RESULTS / "planes_anisotropy.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    mni = np.asarray(nib.load(str(args.data / "nifti" / "mni152_2009a_t1_1mm.nii.gz")).dataobj, dtype=np.float64)
    den = Denoiser(args.model, "cpu")
    rows = []
    for step in (1, 2, 3, 5):
        vol = mni[:, :, 80:104] if step == 1 else mni[:, :, 70:114:step]  # inside the band the weights never saw
        clean = (vol / np.percentile(vol[vol > 0], 99.5)).astype(np.float32)
        mask = head_mask(clean)
        for level, seed in ((0.05, 100), (0.10, 101)):
            noisy = rician(clean, level, seed)
            one = metrics(den.denoise(noisy), clean, mask)
            three = metrics(den.denoise(noisy, planes=PLANES), clean, mask)
            rows.append({"slice_spacing_mm": step, "slices": clean.shape[2], "sigma": level,
                         "axial": [round(one[0], 2), round(one[1], 4)], "three_planes": [round(three[0], 2), round(three[1], 4)]})
            print(rows[-1], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python", *sys.argv]),
                                     "model": den.name, "sha256": den.sha256, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
