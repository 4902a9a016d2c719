"""What every benchmark result records about its run: the date, the machine (CPU capability), threads, the command;
and the options the benchmarks on ``../shared/data`` share."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def run_header(threads: int) -> dict[str, object]:
    """date, machine (architecture, CPUs, torch version and ``get_cpu_capability()``), threads and command line."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": threads,
        "command": shlex.join(["python", *sys.argv]),
    }


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark on ``../shared/data`` takes: ``--data``, ``--model``,
    ``--threads`` and ``--json`` (default ``results/NAME.json``); the script adds its own."""
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=here.parents[1] / "shared" / "data")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=here / "results" / f"{name}.json")
    return ap


def load_mni_heldout(data: Path) -> np.ndarray:
    """The MNI152 template's held-out axial slab (z 70–113, 197×233×44) divided by its 99.5th percentile: a clean
    reference for validation. Not an unseen subject: the template's other slices are training data."""
    import nibabel as nib

    v = np.asarray(nib.load(str(data / "nifti" / "mni152_2009a_t1_1mm.nii.gz")).dataobj, np.float32)[:, :, 70:114]
    return (v / float(np.percentile(v[v > 0], 99.5))).astype(np.float32)
