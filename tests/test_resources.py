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
    """512×512×128 float32 (128 MiB): the `c2s denoise` process grows by less than 3 copies of the volume (the input
    and the output; the third is slack) plus 128 MiB of working memory (a few normalised slices, one batch through the
    network), over a process that has already denoised a 4-slice volume of the same slice size.

    The peak is the process's own VmHWM, not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the high-water mark
    of the pre-exec image into ``ru_maxrss``, so a child started from a large test process (the suite's, ~0.9 GB by
    then) reported the parent's size (the CI failures of 2026-12-02: "+779 MiB", "+560 MiB"; +295 MiB measured alone).
    The warm-up takes out the code and scratch space the first convolutions page in, which differ between CPUs."""
    shape = (512, 512, 128)
    rng = np.random.default_rng(0)
    src, small = tmp_path / "big.nii", tmp_path / "small.nii"
    data = np.abs(100 + 10 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    nib.save(nib.Nifti1Image(data[..., :4].copy(), np.eye(4)), str(small))
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(src))
    del data
    # the child reports its own resident size after the warm-up and its own peak (VmHWM of its address space)
    rss = tmp_path / "rss.txt"
    code = (
        "import runpy, sys\n"
        "def status(key):\n"
        "    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith(key)))\n"
        "def run(src, out):\n"
        f"    sys.argv = ['c2s', 'denoise', src, '-o', out, '--model', {str(tiny_model)!r}, '-q']\n"
        "    try:\n        runpy.run_module('c2s_cli', run_name='__main__')\n"
        "    except SystemExit as e:\n        assert not e.code, e.code\n"
        f"run({str(small)!r}, {str(tmp_path / 'small_out.nii')!r})\n"
        "base = status('VmRSS')\n"
        f"run({str(src)!r}, {str(tmp_path / 'o.nii')!r})\n"
        f"open({str(rss)!r}, 'w').write(f'{{base}} {{status(\"VmHWM\")}}')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    base_mb, peak_mb = (int(v) / 1024 for v in rss.read_text().split())
    volume_mb = np.prod(shape) * 4 / 2**20
    print(f"peak RSS {peak_mb:.0f} MiB, {base_mb:.0f} MiB after the warm-up, for a {volume_mb:.0f} MiB volume")
    assert peak_mb - base_mb < 3 * volume_mb + 128
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
    """5× the files take about 5× the time, not 25× (a quadratic grouping). A complexity check, not a speed figure:
    each size is timed 3 times and the fastest kept (load on a shared machine only slows runs down), and the bound,
    12×, sits halfway between linear and quadratic in log scale (a single timing once read 8.8× under load)."""
    _tiny_files(tmp_path / "small", 800)
    _tiny_files(tmp_path / "large", 4000)

    def fastest(folder: Path) -> tuple[float, list]:  # type: ignore[type-arg]
        times, found = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            found, _ = list_series(folder)
            times.append(time.perf_counter() - t0)
        return min(times), found

    t_small, small = fastest(tmp_path / "small")
    t_large, large = fastest(tmp_path / "large")
    assert len(small) == 50 and len(large) == 50 and sum(s.count for s in large) == 4000
    print(f"800 files: {t_small:.2f} s, 4000 files: {t_large:.2f} s")
    assert t_large < 12 * t_small  # linear would be 5×; quadratic 25×
