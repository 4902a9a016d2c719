"""Mutation fuzzing of c2s's readers and the denoise path (outside CI; figures go to benchmarks/README.md).

Seeds: a small NIfTI and a 3-file DICOM series made like the tests' fixtures. Each trial mutates one seed (random
byte flips, truncation, header-field overwrites, inserted garbage, dropped DICOM files, an unknown VR in the DICOM
file meta, a damaged deflate stream or gzip trailer) with a seeded RNG, then runs the pipeline `c2s denoise` runs,
in-process: ``Denoiser.denoise_file`` (pre-flight checks and DICOM dry run → read → noise → denoise with a tiny
random model → atomic write). A trial passes when it either succeeds or raises a c2s error (one-line message,
distinct exit code); any other exception is a crash. Two more oracles: a damaged gzip stream must never be accepted
("damaged accepted"), and no c2s temporary name may be left behind ("leftover").

Engines: ``random`` (a seeded NumPy mutator) or ``hypothesis`` (Hypothesis draws the seed file, the byte edits and
the truncation point; derandomised, no example database).

Usage: python -m c2s_bench.fuzz --trials 2000 --seed 0 [--engine hypothesis]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from c2s_bench.phantoms import head_phantom, make_series, rician


def damage_gzip(raw: bytes, rng: np.random.Generator) -> bytes:
    """Flip bytes inside the deflate stream, or in the CRC-32 / ISIZE trailer (the stream itself stays decodable)."""
    b = bytearray(raw)
    if rng.random() < 0.5 and len(b) > 40:
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(20, len(b) - 8))
            b[pos] ^= int(rng.integers(1, 256))
    else:
        b[len(b) - 8 + int(rng.integers(8))] ^= int(rng.integers(1, 256))
    return bytes(b)


def unknown_vr(raw: bytes, rng: np.random.Generator) -> bytes:
    """Replace the VR of one file-meta element (group 0002, explicit VR) with two random upper-case letters."""
    b = bytearray(raw)
    spots = [i for i in range(132, min(len(b) - 6, 400)) if b[i] == 0x02 and b[i + 1] == 0x00 and
             chr(b[i + 4]).isupper() and chr(b[i + 5]).isupper()]
    if spots:
        i = spots[int(rng.integers(len(spots)))]
        b[i + 4 : i + 6] = bytes(int(v) for v in rng.integers(65, 91, 2))
    return bytes(b)


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(raw)
    kind = rng.integers(4)
    if kind == 0 and len(b):  # flip random bytes
        for _ in range(int(rng.integers(1, 20))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(len(b) + 1))]
    elif kind == 2 and len(b) > 400:  # overwrite a header region with extreme values
        pos = int(rng.integers(0, 400))
        b[pos : pos + 8] = rng.choice([b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff\xff\xff\xff\x7f"])
    else:  # insert garbage
        pos = int(rng.integers(len(b) + 1))
        b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return bytes(b)


def run_once(path: Path, out: Path, model: object) -> None:
    from c2s_cli.api import Denoiser

    assert isinstance(model, Denoiser)
    dst = out / ("o.nii.gz" if path.name.endswith((".nii", ".nii.gz")) else "s")
    model.denoise_file(path, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", choices=("random", "hypothesis"), default="random")
    args = ap.parse_args()
    import nibabel as nib

    from c2s_cli.api import Denoiser
    from c2s_cli.checkpoint import save_model
    from c2s_cli.config import ModelConfig, RunConfig
    from c2s_cli.errors import C2SError
    from c2s_cli.model import Precond

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="c2s_fuzz_"))
    cfg = RunConfig(model=ModelConfig(channels=(8, 16), emb_dim=16))
    save_model(work / "tiny.safetensors", Precond(cfg.model).state_dict(), cfg, {})
    den = Denoiser(str(work / "tiny.safetensors"), "cpu")
    data = np.rint(rician(head_phantom((40, 40, 6), seed=0) * 1000, 40, seed=1))
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.eye(4)), str(work / "seed.nii.gz"))
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(work / "seed.nii"))
    make_series(work / "seed_series", data[:, :, :3])
    seeds = [work / "seed.nii.gz", work / "seed.nii", work / "seed_series"]
    outcomes: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    runtime: list[str] = []  # the first exit-1 rejections, to say what they were
    t0 = time.time()

    def attempt(target: Path, case: Path, label: str, damaged: bool = False) -> None:
        out = case / "out"
        out.mkdir()
        try:
            run_once(target, out, den)
            outcomes["ok"] += 1
            if damaged:
                outcomes["DAMAGED ACCEPTED"] += 1
                crashes.append(f"{label}: a damaged gzip stream was read as data")
        except C2SError as exc:
            outcomes[f"rejected (exit {exc.exit_code})"] += 1
            if exc.exit_code == 1 and len(runtime) < 5:
                runtime.append(f"{label}: {exc}")
        except Exception:  # a crash: not a c2s error
            outcomes["CRASH"] += 1
            crashes.append(f"{label}: {traceback.format_exc(limit=3)}")
        left = [p.name for p in case.rglob("*") if ".c2s-tmp-" in p.name or p.name.endswith((".c2s-old", ".c2s-lock"))]
        if left:
            outcomes["LEFTOVER"] += 1
            crashes.append(f"{label}: left {left}")
        shutil.rmtree(case, ignore_errors=True)

    if args.engine == "hypothesis":
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        counter = iter(range(10**9))

        @settings(max_examples=args.trials, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.integers(0, len(seeds) - 1), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=24),
               st.one_of(st.none(), st.floats(0, 1)), st.integers(0, 2))
        def check(which: int, edits: list[tuple[float, int]], cut: float | None, victim_idx: int) -> None:
            trial = next(counter)
            case = work / f"h{trial}"
            case.mkdir()
            seed = seeds[which]
            if seed.is_dir():
                target = case / "series"
                shutil.copytree(seed, target)
                victim = sorted(target.iterdir())[victim_idx]
            else:
                target = victim = case / seed.name
                victim.write_bytes(seed.read_bytes())
            b = bytearray(victim.read_bytes())
            for pos, val in edits:
                if b:
                    b[min(len(b) - 1, int(pos * len(b)))] = val
            if cut is not None:
                b = b[: int(cut * len(b))]
            victim.write_bytes(bytes(b))
            attempt(target, case, f"hypothesis example {trial} ({seed.name})")

        check()
        print(f"{sum(outcomes.values())} inputs in {time.time() - t0:.0f} s (hypothesis): {dict(outcomes)}")
        for c in crashes[:10]:
            print(c)
        shutil.rmtree(work, ignore_errors=True)
        return
    for trial in range(args.trials):
        seed = seeds[int(rng.integers(len(seeds)))]
        case = work / f"t{trial}"
        case.mkdir()
        damaged = False
        if seed.is_dir():
            target = case / "series"
            shutil.copytree(seed, target)
            files = sorted(target.iterdir())
            victim = files[int(rng.integers(len(files)))]
            u = rng.random()
            if u < 0.15:
                victim.unlink()
            elif u < 0.3:
                victim.write_bytes(unknown_vr(victim.read_bytes(), rng))
            else:
                victim.write_bytes(mutate(victim.read_bytes(), rng))
        else:
            target = case / seed.name
            if seed.name.endswith(".gz") and rng.random() < 0.3:
                target.write_bytes(damage_gzip(seed.read_bytes(), rng))
                damaged = True
            else:
                target.write_bytes(mutate(seed.read_bytes(), rng))
        attempt(target, case, f"trial {trial} ({seed.name})", damaged)
    print(f"{args.trials} inputs in {time.time() - t0:.0f} s (seed {args.seed}): {dict(outcomes)}")
    for c in crashes[:10]:
        print(c)
    for m in runtime:
        print("exit 1:", m)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
