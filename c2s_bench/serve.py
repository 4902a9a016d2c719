"""`c2s serve` under load: ten MR series of 100 slices of 256², sent by dcmtk's storescu, received back by storescp.

Per series: the latency from the node's last received instance to the destination's acknowledgement of the whole
derived series (the node's "sent" event), the denoising time inside it, and storescu's own send time (the network
time in and out is small beside the denoising). Also the throughput (series per minute, first instance sent → last
derived series acknowledged) and the peak RSS of the node (VmHWM). The series come from a real 1 mm T1 head
(pycortex S1, `../shared/data`) with Rician noise at 5 % of the 99.5th percentile, or from a synthetic phantom.

Usage:  python -m c2s_bench.serve [--data ../shared/data] [--series 10] [--slices 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from c2s_bench.harness import RESULTS, run_header

ROOT = Path(__file__).resolve().parents[1]


def dcmtk(tool: str) -> str:
    """dcmtk's ``tool`` (pynetdicom installs apps of the same names into the virtual environment: skipped)."""
    import shutil

    here = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != here)
    found = shutil.which(tool, path=path)
    if found is None:
        raise SystemExit(f"{tool}: dcmtk is needed (apt-get install dcmtk)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def volume(data: Path | None, slices: int) -> np.ndarray:
    """(256, 256, slices) noisy magnitude in 12-bit stored units."""
    rng = np.random.default_rng(0)
    t1 = data / "nifti" / "pycortex_s1_t1_1mm.nii.gz" if data else None
    if t1 is not None and t1.exists():
        import nibabel as nib

        v = np.asarray(nib.load(str(t1)).dataobj, dtype=np.float32)
        z0 = v.shape[2] // 2 - slices // 2
        clean = v[:256, :256, z0:z0 + slices]
    else:
        x, y = np.meshgrid(np.linspace(-1, 1, 256), np.linspace(-1, 1, 256), indexing="ij")
        clean = np.stack([(x**2 + y**2 < 0.8) * (100 + 50 * np.sin(8 * x + k / 10)) for k in range(slices)], -1)
    clean = clean / np.percentile(clean, 99.5) * 3000
    sigma = 0.05 * 3000
    noisy = np.hypot(clean + sigma * rng.standard_normal(clean.shape), sigma * rng.standard_normal(clean.shape))
    return np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)


def write_series(folder: Path, vol: np.ndarray, number: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.PatientName, ds.PatientID = "BENCH^SERVE", "BENCH"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", number, k + 1
        ds.SeriesDescription = "T1 bench"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [-128.0, -128.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.ascontiguousarray(vol[:, :, k].T).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--series", type=int, default=10)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", type=Path, default=RESULTS / "serve.json")
    args = ap.parse_args()
    res: dict[str, object] = {
        **run_header(args.threads),
        "lscpu_flags_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(),
            }
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        vol = volume(args.data if args.data.exists() else None, args.slices)
        for i in range(args.series):
            write_series(tmpd / f"in{i}", vol, i + 1)
        received = tmpd / "pacs"
        received.mkdir()
        dport, port = free_port(), free_port()
        pacs = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", "-od", str(received), str(dport)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = subprocess.Popen(
            [sys.executable, "-m", "c2s_cli", "serve", "--spool", str(tmpd / "spool"), "--port", str(port),
             "--send", f"PACS@127.0.0.1:{dport}", "--stable-seconds", "2", "--keep-days", "0", "--model",
             args.model, "--threads", str(args.threads), "--device", "cpu", "--log-json"],
            stderr=subprocess.PIPE, text=True, cwd=ROOT)
        events: list[dict[str, object]] = []

        def read() -> None:
            assert node.stderr is not None
            for line in node.stderr:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    print(line, end="", file=sys.stderr)

        threading.Thread(target=read, daemon=True).start()
        while not any(e["event"] == "listening" for e in events):
            time.sleep(0.1)
            if node.poll() is not None:
                raise SystemExit("c2s serve did not start")
        sends = []
        t_start = time.time()
        for i in range(args.series):  # one after the other, as a modality sends them
            t0 = time.perf_counter()
            subprocess.run([dcmtk("storescu"), "-aet", "BENCH", "-aec", "C2S", "127.0.0.1", str(port),
                            *sorted(map(str, (tmpd / f"in{i}").iterdir()))], check=True, capture_output=True)
            sends.append(time.perf_counter() - t0)
        while sum(e["event"] == "sent" for e in events) < args.series:
            time.sleep(0.2)
        t_end = time.time()
        status = Path(f"/proc/{node.pid}/status").read_text()
        hwm_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
        node.terminate()
        node.wait(60)
        pacs.terminate()
        pacs.wait(10)
        n_files = sum(1 for _ in received.iterdir())
    sent = [e for e in events if e["event"] == "sent"]
    denoised = [e for e in events if e["event"] == "denoised"]
    lat = [float(e["latency_s"]) for e in sent]  # type: ignore[arg-type]
    res.update({
        "series": args.series, "slices": args.slices, "instances_at_destination": n_files,
        "latency_s": {"median": float(np.median(lat)), "min": min(lat), "max": max(lat), "all": lat},
        "denoise_s": {"median": float(np.median([float(e["seconds"]) for e in denoised])),  # type: ignore[arg-type]
                      "inference_median": float(np.median([float(e["inference_s"]) for e in denoised]))},  # type: ignore[arg-type]
        "node_send_s": {"median": float(np.median([float(e["seconds"]) for e in sent])),  # type: ignore[arg-type]
                        "all": [float(e["seconds"]) for e in sent]},  # type: ignore[arg-type]
        "denoise_all_s": [float(e["seconds"]) for e in denoised],  # type: ignore[arg-type]
        "storescu_send_s": {"median": float(np.median(sends)), "all": sends},
        "throughput_series_per_min": args.series / (t_end - t_start) * 60,
        "wall_s": t_end - t_start, "peak_rss_mb": hwm_mb,
        "note": "latency = last instance received by the node → whole derived series acknowledged by storescp "
                "(includes --stable-seconds 2)",
    })
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
