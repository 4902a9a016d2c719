"""Resource bounds: bounded memory on a big volume, linear grouping of a folder with many files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from c2s_cli.io.dicom import list_series


def test_big_volume_peak_memory(tmp_path: Path, tiny_model: Path) -> None:
    """512×512×128 float32 (134 MB): over its imports, the `c2s denoise` process grows by less than 4 copies of the
    volume (the input, its network-unit copy, the output in network and in image units) plus 256 MB of working
    memory (batches of slices through the network). Measured: +524 MB alone, +651 MB within the suite."""
    shape = (512, 512, 128)
    rng = np.random.default_rng(0)
    data = np.abs(100 + 10 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    src = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(src))
    del data
    # the child reports its own resident size after the imports and its peak (RUSAGE_CHILDREN would keep the
    # maximum of every earlier test's subprocess)
    rss = tmp_path / "rss.txt"
    code = (
        "import resource, runpy, sys, torch, c2s_cli.cli, c2s_cli.api, nibabel\n"
        "base = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')))\n"
        f"sys.argv = ['c2s', 'denoise', {str(src)!r}, '-o', {str(tmp_path / 'o.nii')!r}, '--model', {str(tiny_model)!r},"
        " '-q']\n"
        "try:\n    runpy.run_module('c2s_cli', run_name='__main__')\n"
        f"finally:\n    open({str(rss)!r}, 'w').write(f'{{base}} {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    base_mb, peak_mb = (int(v) / 1024 for v in rss.read_text().split())
    volume_mb = np.prod(shape) * 4 / 2**20
    print(f"peak RSS {peak_mb:.0f} MB, {base_mb:.0f} MB after the imports, for a {volume_mb:.0f} MB volume")
    assert peak_mb - base_mb < 4 * volume_mb + 256
    assert nib.load(str(tmp_path / "o.nii")).shape == shape


def _tiny_files(folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{i + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.499.{i % 50}"
        ds.SeriesNumber = i % 50
        ds.Modality = "MR"
        ds.Rows = ds.Columns = 1
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)


def test_many_files_grouped_linearly(tmp_path: Path) -> None:
    _tiny_files(tmp_path / "small", 800)
    _tiny_files(tmp_path / "large", 4000)
    t0 = time.perf_counter()
    small, _ = list_series(tmp_path / "small")
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    large, _ = list_series(tmp_path / "large")
    t_large = time.perf_counter() - t0
    assert len(small) == 50 and len(large) == 50 and sum(s.count for s in large) == 4000
    print(f"800 files: {t_small:.2f} s, 4000 files: {t_large:.2f} s")
    assert t_large < 5 * t_small * 1.6  # linear would be 5×; quadratic 25×
