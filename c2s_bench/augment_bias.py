"""Bias-field augmentation data for a fine-tune probe (issue 32's "Data" lever): the MNI template's training parts
times a smooth multiplicative field, then Rician noise.

The field is applied to the anatomy *before* the noise is added, so the noise stays uniform and the training data's
noise model (one σ per volume) stays exact; a receive-coil bias that also scales the noise would need a σ map for
every training input (``c2s train --sigma-map`` takes one per input), which this probe does not do.

Field: ``b(r) = exp(Σ_{i+j+k ≤ 3} c_ijk · x^i y^j z^k)`` on coordinates scaled to [−1, 1] over the volume, with
random coefficients, rescaled so that log b spans ``--span`` (default ln 2: the field varies by a factor 2 across
the head, the order of an uncorrected 3 T scan with a head coil) and has mean 0 inside the head (x0 > 10 % of p99.5).
Noise: Rician, σ log-uniform in [1 %, 15 %] of the source's p99.5 (as scripts/prepare_weights_data.py).

    python -m c2s_bench.augment_bias --source ../shared/data --out /tmp/c2s_weights/aug_bias --copies 2 --seed 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from c2s_bench.fetch_data import HELD_OUT_MNI, source_file
from c2s_cli.noise.synth import rician

LEVELS = (0.01, 0.15)
ORDER = 3


def bias_field(shape: tuple[int, int, int], mask: np.ndarray, span: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth positive field (shape ``shape``): exp of a random polynomial of total degree ≤ 3, its log spanning
    ``span`` (natural log units) inside ``mask`` with mean 0 there."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    log_b = np.zeros(shape)
    for i in range(ORDER + 1):
        for j in range(ORDER + 1 - i):
            for k in range(ORDER + 1 - i - j):
                if i + j + k:
                    log_b += rng.standard_normal() / (i + j + k) * x**i * y**j * z**k
    inside = log_b[mask]
    log_b = (log_b - inside.mean()) * span / max(float(np.ptp(inside)), 1e-12)
    return np.exp(log_b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="folder with nifti/ as in shared/data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=2, help="noisy copies per training part (two parts)")
    ap.add_argument("--span", type=float, default=float(np.log(2.0)), help="range of log b inside the head")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    img = nib.load(str(source_file(args.source, "mni152_2009a_t1_1mm.nii.gz")))
    data = np.asarray(img.dataobj, dtype=np.float64)
    ref = float(np.percentile(data[data > 0], 99.5))
    lo, hi = HELD_OUT_MNI
    shift = np.eye(4)
    shift[2, 3] = hi
    parts = {"z0-69": (data[:, :, :lo], img.affine), f"z{hi}-": (data[:, :, hi:], img.affine @ shift)}
    lines = []
    for part, (pdata, affine) in parts.items():
        for c in range(args.copies):
            b = bias_field(pdata.shape, pdata > 0.1 * ref, args.span, rng)
            frac = float(np.exp(rng.uniform(np.log(LEVELS[0]), np.log(LEVELS[1]))))
            path = args.out / f"mni_bias_{part}_n{c}_{100 * frac:.1f}pct.nii.gz"
            out = nib.Nifti1Image(rician(pdata * b, frac * ref, rng), affine)
            out.set_sform(affine, 1)
            out.set_qform(affine, 1)
            nib.save(out, str(path))
            lines.append(f"{path.name}\tMNI part {part} × bias field (b in [{b.min():.2f}, {b.max():.2f}]) + "
                         f"Rician σ = {100 * frac:.2f} % of p99.5")
            print(lines[-1])
    (args.out / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
