"""The research harness: what every benchmark result records about its run: the date, the machine (CPU capability), threads, the command;
the options the benchmarks on ``../shared/data`` share;
the noise, mask and metrics every quality table uses."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]  # the repository (editable install)
RESULTS = REPO / "benchmarks" / "results"  # every result file, with its command, date and machine
SHARED_DATA = REPO.parent / "shared" / "data"  # the real MRI beside the repository (fetch_data fetches the same)


def command() -> str:
    """The command line as typed: ``python -m c2s_bench.NAME …`` for a module of this package."""
    argv = list(sys.argv)
    here = Path(__file__).resolve().parent
    if argv and argv[0].endswith(".py") and Path(argv[0]).resolve().parent == here:
        argv = ["-m", f"c2s_bench.{Path(argv[0]).stem}", *argv[1:]]
    return shlex.join(["python", *argv])


def run_header(threads: int) -> dict[str, object]:
    """date, machine (architecture, CPUs, torch version and ``get_cpu_capability()``), threads, command line and, where
    set, ``$C2S_WEIGHTS`` (the folder named models were looked up in first)."""
    import torch

    head: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
        "threads": threads,
        "command": command(),
    }
    if os.environ.get("C2S_WEIGHTS"):  # named models came from another folder first (a candidate's registry)
        head["c2s_weights"] = os.environ["C2S_WEIGHTS"]
    return head


@contextlib.contextmanager
def keep_series_context() -> Iterator[dict[str, Any]]:
    """While open, every ``c2s_cli.series.denoise_series`` call leaves the series context it ran with in the yielded
    dict (``"ctx"``: the last one) — for probes that score the context's own parts (its predictions, its subspace)."""
    from c2s_cli import series

    kept: dict[str, Any] = {}
    original = series.denoise_series

    def keep(model: Any, ctx: Any, **kw: Any) -> Any:
        kept["ctx"] = ctx
        return original(model, ctx, **kw)

    series.denoise_series = keep
    try:
        yield kept
    finally:
        series.denoise_series = original


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark on ``../shared/data`` takes: ``--data``, ``--model``,
    ``--threads`` and ``--json`` (default ``results/NAME.json``); the script adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=RESULTS / f"{name}.json")
    return ap


def load_mni_heldout(data: Path) -> np.ndarray:
    """The MNI152 template's held-out axial slab (z 70–113, 197×233×44) divided by its 99.5th percentile: a clean
    reference for validation. Not an unseen subject: the template's other slices are training data."""
    import nibabel as nib

    v = np.asarray(nib.load(str(data / "nifti" / "mni152_2009a_t1_1mm.nii.gz")).dataobj, np.float32)[:, :, 70:114]
    return (v / float(np.percentile(v[v > 0], 99.5))).astype(np.float32)


COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Colin27 (Debian mricron-data): 27 averaged scans, 1 mm


def load_colin_2mm(path: Path = COLIN) -> np.ndarray:
    """Colin27 (MRIcron's ``ch2``, a single subject, 27 averaged 1 mm scans) averaged over 2×2×2 voxels, its central
    40 coronal slices last (90×90×40), divided by its 99.5th percentile: a clean reference with a real subject's
    texture, for validation (in no shipped model's training data; ``apt-get install mricron-data``)."""
    import nibabel as nib

    v = np.asarray(nib.load(str(path)).dataobj, np.float32)
    n = [s // 2 * 2 for s in v.shape]
    v = v[: n[0], : n[1], : n[2]].reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2).mean(axis=(1, 3, 5))
    v = v.transpose(0, 2, 1)  # (x, z, y): coronal slices last, as the unseen subject's
    mid = v.shape[2] // 2
    v = v[:, :, mid - 20 : mid + 20]
    return (v / float(np.percentile(v[v > 0], 99.5))).astype(np.float32)


VALIDATION = "colin-2mm,mni-heldout"  # the validation references (never the test subject)


def add_validation_args(ap: argparse.ArgumentParser) -> None:
    """``--colin`` (Colin27's path) and ``--subjects`` (validation references, comma-separated) for the probes that
    score the validation references only."""
    ap.add_argument("--colin", default=str(COLIN))
    ap.add_argument("--subjects", default=VALIDATION)


def validation_references(args: argparse.Namespace) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, clean reference, head mask) of each of ``args.subjects``: ``colin-2mm`` (:func:`load_colin_2mm` of
    ``args.colin``) or ``mni-heldout`` (:func:`load_mni_heldout` of ``args.data``)."""
    for subject in args.subjects.split(","):
        if subject not in VALIDATION.split(","):
            raise SystemExit(f"--subjects: {subject!r} is not a validation reference ({VALIDATION})")
        ref = load_colin_2mm(Path(args.colin)) if subject == "colin-2mm" else load_mni_heldout(args.data)
        yield subject, ref, head_mask(ref)


def start_probe(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Set torch's threads to ``args.threads``, load ``args.model`` on the CPU; return it and the result's header with
    an empty ``rows`` list."""
    import torch

    from c2s_cli.api import Denoiser

    torch.set_num_threads(args.threads)
    return Denoiser(args.model, "cpu", threads=args.threads), {**run_header(args.threads), "rows": []}


def head_mask(clean: np.ndarray) -> np.ndarray:
    m = ndimage.gaussian_filter(clean, (2, 2, 0)) > 0.08
    return np.stack([ndimage.binary_fill_holes(m[:, :, k]) for k in range(m.shape[2])], axis=2)


def metrics(x: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    mse = float(np.mean((x[mask] - clean[mask]) ** 2))
    ssims = []
    for k in range(clean.shape[2]):
        _, smap = structural_similarity(clean[:, :, k], x[:, :, k], data_range=1.0, full=True)
        ssims.append(smap[mask[:, :, k]])
    return 10 * np.log10(1.0 / mse), float(np.mean(np.concatenate(ssims)))


def bm3d_slices(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package, given σ) on each axial slice of an (X, Y, Z) volume; float32."""
    import bm3d

    return np.stack([bm3d.bm3d(noisy[:, :, k], sigma_psd=sigma) for k in range(noisy.shape[2])], axis=2).astype(np.float32)


def rician(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sqrt((clean + sigma * rng.standard_normal(clean.shape)) ** 2 + (sigma * rng.standard_normal(clean.shape)) ** 2).astype(np.float32)


def anchor_rows(record: Any, noisy: np.ndarray, sigma: float, want: Any, what: str = "true σ") -> None:
    """The anchor rows of a quality table, timed: BM4D and slice-wise BM3D given ``sigma`` (when ``want`` names
    them), each passed to ``record(method, output, seconds)``."""
    import time

    if "bm4d" in want:
        import bm4d

        t0 = time.perf_counter()
        record(f"BM4D ({what})", bm4d.bm4d(noisy, sigma_psd=sigma), time.perf_counter() - t0)
    if "bm3d" in want:
        t0 = time.perf_counter()
        record(f"BM3D slice-wise ({what})", bm3d_slices(noisy, sigma), time.perf_counter() - t0)


def run_rows(res: dict[str, Any], methods: str, run: Any, score: Any, path: Path) -> None:
    """Run each comma-separated method side by side in this process: ``run(name) -> (output, note)``, timed, scored
    by ``score(output) -> dict``, appended to ``res["rows"]``, printed as one JSON line and saved to ``path`` after
    every row (an interrupted run keeps what it measured)."""
    import json
    import time

    res.setdefault("rows", [])
    for name in methods.split(","):
        t0 = time.perf_counter()
        out, note = run(name)
        seconds = time.perf_counter() - t0
        add_row(res, {"method": name, **score(out), "seconds": round(seconds, 1), "note": note}, path)


def add_row(res: dict[str, Any], row: dict[str, Any], path: Path) -> None:
    """Append ``row`` to ``res["rows"]``, print it as one JSON line and save ``res`` to ``path`` (an interrupted run
    keeps what it measured)."""
    import json

    res.setdefault("rows", []).append(row)
    print(json.dumps(row), flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
