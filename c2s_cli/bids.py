"""BIDS mode: denoise a BIDS dataset into a BIDS derivatives dataset (the BIDS-Apps convention), and summarise it.

Entities are parsed from file names as the BIDS specification defines them (no query library needed to run);
outputs keep the source's entities, in the specification's order, and add ``desc-<label>``:
``sub-01/ses-1/anat/sub-01_ses-1_desc-c2s_T1w.nii.gz`` with a JSON sidecar (the source's fields, ``Sources``, and a
``C2S`` block: model, SHA-256, noise, options, timings), DWI ``.bval`` / ``.bvec`` beside, a preview under
``sub-01/figures/``. ``dataset_description.json`` is created once, atomically (two participants running at once
never corrupt it). Every run's record goes to ``logs/sub-<label>_c2s.jsonl`` for the group stage (TSV, JSON, HTML).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2s_cli._version import __version__
from c2s_cli.errors import InputError, UsageError

# the BIDS specification's entity order (the entities a raw MRI file name can carry, then desc)
ENTITIES = ("sub", "ses", "task", "acq", "ce", "trc", "stain", "rec", "dir", "run", "mod", "echo", "flip", "inv",
            "mt", "part", "proc", "hemi", "space", "split", "recording", "chunk", "res", "den", "label", "desc")
DEFAULT_SUFFIXES = ("T1w", "T2w", "PDw", "FLAIR", "T2starw", "dwi")
_NAME = re.compile(r"^(?P<entities>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)(?P<ext>\.nii(?:\.gz)?)$")


@dataclass(frozen=True)
class BidsFile:
    """A raw BIDS image: its path, entities (in file order), suffix and datatype folder."""

    path: Path
    entities: dict[str, str]
    suffix: str
    datatype: str
    extension: str

    def derivative(self, desc: str, suffix: str | None = None, extension: str | None = None) -> Path:
        """The derivative's path relative to the derivatives root: the same folders, the same entities in the
        specification's order, plus ``desc``."""
        ent = {**self.entities, "desc": desc}
        name = "_".join(f"{k}-{ent[k]}" for k in ENTITIES if k in ent)
        folder = Path(f"sub-{self.entities['sub']}")
        if "ses" in self.entities:
            folder /= f"ses-{self.entities['ses']}"
        return folder / self.datatype / f"{name}_{suffix or self.suffix}{extension or self.extension}"


def parse_name(path: Path) -> tuple[dict[str, str], str, str] | None:
    """(entities, suffix, extension) of a BIDS NIfTI name, or None when the name is not one."""
    m = _NAME.match(path.name)
    if not m:
        return None
    pairs = [p.split("-", 1) for p in m.group("entities").rstrip("_").split("_") if p]
    ent = dict(pairs)
    if "sub" not in ent or len(ent) != len(pairs) or any(k not in ENTITIES for k in ent):
        return None
    return ent, m.group("suffix"), m.group("ext")


def check_dataset(bids_dir: Path) -> dict[str, Any]:
    """The raw dataset's ``dataset_description.json`` (refused, one line, when missing or unreadable)."""
    desc = bids_dir / "dataset_description.json"
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: not a folder", param="bids_dir")
    if not desc.is_file():
        raise InputError(f"{bids_dir}: no dataset_description.json; not a BIDS dataset", param="bids_dir")
    try:
        return dict(json.loads(desc.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError):
        raise InputError(f"{desc}: not valid JSON", param="bids_dir") from None


def find_inputs(
    bids_dir: Path, *, participants: Iterable[str] = (), sessions: Iterable[str] = (),
    datatypes: Iterable[str] = (), suffixes: Iterable[str] = DEFAULT_SUFFIXES, filters: dict[str, Any] | None = None,
) -> list[BidsFile]:
    """The raw images to denoise, sorted: ``sub-*/[ses-*/]<datatype>/*.nii[.gz]`` filtered by labels (with or
    without the ``sub-`` / ``ses-`` prefix), datatypes, suffixes and a BIDS filter (entity → value or list; null
    means "absent"), as fMRIPrep's ``--bids-filter-file`` takes it."""
    subs = {p.removeprefix("sub-") for p in participants}
    sess = {s.removeprefix("ses-") for s in sessions}
    dts, sfx = set(datatypes), set(suffixes)
    root = Path(os.path.realpath(bids_dir))
    out = []
    for sub in sorted(bids_dir.glob("sub-*")):
        if not sub.is_dir() or (subs and sub.name.removeprefix("sub-") not in subs):
            continue
        if not _within(sub, root):  # a subject folder linked out of the dataset (sub-99 -> /) is not the dataset's
            continue
        for f in _layout_files(sub):
            parsed = parse_name(f)
            if parsed is None or not f.is_file():
                continue
            ent, suffix, ext = parsed
            rel = f.relative_to(bids_dir).parts
            datatype = rel[-2]
            if ent["sub"] != sub.name.removeprefix("sub-") or (len(rel) == 4) != ("ses" in ent) or \
                    (len(rel) == 4 and rel[1] != f"ses-{ent['ses']}"):
                continue  # its entities do not match its folders: not a valid BIDS name there
            if (sess and ent.get("ses") not in sess) or (dts and datatype not in dts) or (sfx and suffix not in sfx):
                continue
            if filters and not _matches(ent, suffix, datatype, filters):
                continue
            if ent.get("part") in COMPANION_PARTS.values():
                continue  # a phase or imaginary image is its magnitude's / real part's companion, not an input
            out.append(BidsFile(f, ent, suffix, datatype, ext))
    return out


# complex data in BIDS (the ``part`` entity): the companion of each input part and the option it fills
COMPANION_PARTS = {"mag": "phase", "real": "imag"}


def complex_companion(bf: BidsFile) -> tuple[str, Path] | None:
    """("phase" | "imaginary", path) of the file that makes ``bf`` complex data — its ``part-phase`` image beside
    a ``part-mag`` one, its ``part-imag`` beside a ``part-real`` — or None (magnitude data alone)."""
    part = bf.entities.get("part")
    if part not in COMPANION_PARTS:
        return None
    other = bf.path.with_name(bf.path.name.replace(f"_part-{part}_", f"_part-{COMPANION_PARTS[part]}_"))
    if not other.is_file():
        return None
    return ("phase" if part == "mag" else "imaginary"), other


def _within(path: Path, root: Path) -> bool:
    """Whether ``path``, links resolved, is ``root`` or lies inside it."""
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def _layout_files(sub: Path) -> list[Path]:
    """The NIfTI files at the depths BIDS puts images: ``sub-X/<datatype>/`` and ``sub-X/ses-Y/<datatype>/``, no
    deeper, following no folder link (a file link, as DataLad writes them, is a file)."""
    found: list[Path] = []
    for first in sorted(sub.iterdir()):
        if first.is_symlink() or not first.is_dir():
            continue
        folders = [first] if not first.name.startswith("ses-") else \
            [d for d in sorted(first.iterdir()) if d.is_dir() and not d.is_symlink()]
        for folder in folders:
            found += [f for f in sorted(folder.iterdir()) if f.name.endswith((".nii", ".nii.gz"))]
    return found


def check_collisions(files: list[BidsFile], desc: str) -> None:
    """Two inputs that would write one output (``x_T1w.nii`` and ``x_T1w.nii.gz``) are refused before any compute,
    naming both: with --force one would silently replace the other."""
    seen: dict[Path, Path] = {}
    for bf in files:
        dst = bf.derivative(desc, extension=".nii.gz")
        if dst in seen:
            raise UsageError(f"bids_dir: {seen[dst]} and {bf.path} would both be written to {dst}; remove one of them "
                             "or select one with --bids-filter-file", param="bids_dir")
        seen[dst] = bf.path


def check_no_links(out_dir: Path, path: Path) -> None:
    """Refuse to write ``path`` (inside ``out_dir``) through a symbolic link: no component between the derivatives
    root and the file may be a link, so nothing lands outside the output tree or on a file the link points to."""
    from c2s_cli.errors import OutputError

    rel = path.relative_to(out_dir)
    cur = out_dir
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            raise OutputError(f"{cur} is a symbolic link; c2s never writes through a link it did not create: remove "
                              "it or choose another output folder", param="output_dir")


def _matches(ent: dict[str, str], suffix: str, datatype: str, filters: dict[str, Any]) -> bool:
    names = {"subject": "sub", "session": "ses", "acquisition": "acq", "reconstruction": "rec", "direction": "dir"}
    for key, want in filters.items():
        key = names.get(key, key)
        have = suffix if key == "suffix" else datatype if key == "datatype" else ent.get(key)
        wants = want if isinstance(want, list) else [want]
        if want is None:
            if have is not None:
                return False
        elif str(have).removeprefix(f"{key}-") not in [str(w).removeprefix(f"{key}-") for w in wants]:
            return False
    return True


def load_filter(path: Path | None) -> dict[str, Any] | None:
    """A ``--bids-filter-file``: one JSON object of entity → value; a top-level query per suffix
    (``{"t1w": {...}}``, as fMRIPrep writes them) is merged into one filter."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"bids_filter_file {path}: not readable JSON ({type(exc).__name__})",
                         param="bids_filter_file") from None
    if not isinstance(data, dict):
        raise UsageError(f"bids_filter_file {path}: expected a JSON object", param="bids_filter_file")
    if all(isinstance(v, dict) for v in data.values()) and data:
        merged: dict[str, Any] = {}
        for v in data.values():
            merged.update(v)
        return merged
    return data


def source_sidecar(bf: BidsFile, bids_dir: Path) -> dict[str, Any]:
    """The source's JSON metadata with BIDS inheritance: top-level and folder sidecars whose entities are a subset
    of the image's, the more specific ones last."""
    meta: dict[str, Any] = {}
    folders = [bids_dir, *[bids_dir.joinpath(*bf.path.relative_to(bids_dir).parts[:i])
                           for i in range(1, len(bf.path.relative_to(bids_dir).parts))]]
    for folder in folders:
        for j in sorted(folder.glob(f"*{bf.suffix}.json")):
            parsed = parse_name(j.with_suffix(".nii"))
            ent = parsed[0] if parsed else _loose_entities(j.name)
            if (parsed is None or parsed[1] == bf.suffix) and all(bf.entities.get(k) == v for k, v in ent.items()):
                try:
                    meta.update(json.loads(j.read_text()))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise InputError(f"{j}: sidecar is not valid JSON") from None
    return meta


def _loose_entities(name: str) -> dict[str, str]:
    """Entities of a top-level sidecar such as ``task-rest_bold.json`` (no ``sub``)."""
    return dict(p.split("-", 1) for p in name.split("_")[:-1] if "-" in p)


def write_json_atomic(path: Path, data: dict[str, Any], *, only_if_absent: bool = False) -> bool:
    """Write JSON under a temporary name and rename (or, with ``only_if_absent``, link: the first writer wins and
    nobody ever sees a half-written file). Returns whether this call wrote it."""
    return write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), only_if_absent=only_if_absent)


def write_atomic(path: Path, content: bytes, *, only_if_absent: bool = False) -> bool:
    """Write ``content`` under a temporary name and rename it to ``path``: the name is replaced, never written
    through (a link there is replaced, not followed); with ``only_if_absent`` linked instead, so the first writer
    wins. Returns whether this call wrote it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.c2s-tmp-{os.getpid()}")
    tmp.write_bytes(content)
    try:
        if only_if_absent:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def check_output_dir(bids_dir: Path, out_dir: Path) -> None:
    """The derivatives folder is outside the raw dataset, or inside its ``derivatives/`` (BIDS-Apps convention)."""
    raw, out = Path(os.path.realpath(bids_dir)), Path(os.path.realpath(out_dir))
    if out == raw or out in raw.parents:
        raise UsageError(f"output_dir {out_dir} is or holds the raw dataset {bids_dir}; use {bids_dir}/derivatives/c2s "
                         "or a folder outside it", param="output_dir")
    if raw in out.parents and (raw / "derivatives") not in [out, *out.parents]:
        raise UsageError(f"output_dir {out_dir} lies inside the raw dataset but not under its derivatives/ folder",
                         param="output_dir")


def dataset_description(out_dir: Path, bids_dir: Path, raw: dict[str, Any], model: str, sha256: str) -> None:
    """The derivatives' ``dataset_description.json`` (created once)."""
    write_json_atomic(out_dir / "dataset_description.json", {
        "Name": f"c2s denoised: {raw.get('Name', bids_dir.name)}",
        "BIDSVersion": str(raw.get("BIDSVersion", "1.8.0")),
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "c2s", "Version": __version__,
                         "Description": f"Self-supervised MRI denoising (Corruption2Self, Tu, Shi & Lam, ICLR 2025, "
                                        f"arXiv 2505.05631); model {model}, SHA-256 {sha256}"}],
        "SourceDatasets": [{"URL": raw_uri(out_dir, bids_dir)}],
        "DatasetLinks": {"raw": raw_uri(out_dir, bids_dir)},  # defines the "bids:raw:" URIs of the sidecars' Sources
    }, only_if_absent=True)


def raw_uri(out_dir: Path, bids_dir: Path) -> str:
    """The raw dataset as seen from the derivatives: a relative path where the derivatives lie inside it (the
    BIDS-Apps ``derivatives/`` convention; the pair can move together), else a ``file://`` URI."""
    raw, out = Path(os.path.realpath(bids_dir)), Path(os.path.realpath(out_dir))
    if raw in out.parents:
        return os.path.relpath(raw, out) + "/"
    return raw.as_uri()


def _is_c2s_json(path: Path, key: str) -> bool:
    try:
        return key in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_companions(sidecar: Path, companions: list[Path]) -> None:
    """Before any compute: the sidecar and the DWI bval / bvec beside an output may be replaced only when they are
    c2s's own (a sidecar with its ``C2S`` block; bval / bvec beside such a sidecar), never a file c2s did not write."""
    from c2s_cli.errors import OutputError

    ours = sidecar.exists() and _is_c2s_json(sidecar, "C2S")
    for p in [sidecar, *companions]:
        if p.exists() and not ours:
            raise OutputError(f"{p} exists and was not written by c2s; move it away", param="output_dir")


def check_group_outputs(out_dir: Path) -> None:
    """The group files may be replaced only when a previous group run wrote them."""
    from c2s_cli.errors import OutputError

    marks = {"c2s_group.tsv": lambda p: p.read_text().startswith("subject\tsession\t"),
             "c2s_group.json": lambda p: _is_c2s_json(p, "runs"),
             "c2s_report.html": lambda p: "<title>c2s report</title>" in p.read_text()}
    for name, ours in marks.items():
        p = out_dir / name
        try:
            foreign = p.exists() and not ours(p)
        except (OSError, UnicodeDecodeError):
            foreign = True
        if foreign:
            raise OutputError(f"{p} exists and was not written by c2s; move it away", param="output_dir")


@dataclass
class ParticipantRun:
    """What one participant-level run did: one record per file (status ok / skipped / failed)."""

    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.records)


def run_participant(
    den: Any, bids_dir: Path, out_dir: Path, files: list[BidsFile], options: Any, *, desc: str = "c2s",
    skip_existing: bool = False, on_file: Callable[[BidsFile, dict[str, Any]], None] | None = None,
    on_warning: Callable[[str], None] | None = None, residual: bool = False, sigma_map: bool = False,
    command: str | None = None,
) -> ParticipantRun:
    """Denoise ``files`` into ``out_dir`` through the one runner (:func:`c2s_cli.runner.run`: BIDS adds its link
    checks, names, sidecars and bval / bvec copies as hooks); a failing file is a failed record, never the end of the
    participant. ``residual`` / ``sigma_map``: also write input − output and the σ used per voxel, as
    ``desc-<desc>residual`` and ``desc-<desc>sigma`` images beside the output."""
    import dataclasses

    if not re.fullmatch(r"[a-zA-Z0-9]+", desc):
        raise UsageError(f"desc {desc!r}: BIDS labels are alphanumeric", param="desc")
    raw = check_dataset(bids_dir)
    check_output_dir(bids_dir, out_dir)
    check_collisions(files, desc)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in sorted({bf.entities["sub"] for bf in files}):
        check_no_links(out_dir, out_dir / "logs" / f"sub-{sub}_c2s.jsonl")
    check_no_links(out_dir, out_dir / "dataset_description.json")
    dataset_description(out_dir, bids_dir, raw, den.name, den.sha256)
    from c2s_cli import runner

    run = ParticipantRun()
    plan: dict[Path, tuple[BidsFile, Path, list[Path], list[Path], Path]] = {}  # output → file, sidecar,
    # bval/bvec, every path written, the figure
    jobs = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for bf in files:
        dst = out_dir / bf.derivative(desc, extension=".nii.gz")
        figure = out_dir / f"sub-{bf.entities['sub']}" / "figures" / bf.derivative(desc, extension=".png").name
        extra = {"residual": out_dir / bf.derivative(f"{desc}residual", extension=".nii.gz") if residual else None,
                 "save_sigma_map": out_dir / bf.derivative(f"{desc}sigma", extension=".nii.gz") if sigma_map
                 else None}
        side_path = dst.with_name(dst.name.removesuffix(".nii.gz") + ".json")
        companions = [out_dir / bf.derivative(desc, extension=e) for e in (".bval", ".bvec")] \
            if bf.suffix == "dwi" else []
        targets = [dst, figure, side_path, *companions, *(v for v in extra.values() if v is not None)]
        plan[dst] = (bf, side_path, companions, targets, figure)
        pair = complex_companion(bf)  # an input, not an output: not among the targets
        cplx = {pair[0]: pair[1]} if pair is not None else {}
        jobs.append(runner.Job(bf.path, dst, dataclasses.replace(options, preview=figure, **extra, **cplx), fields={
            "input": str(bf.path.relative_to(bids_dir)), "output": str(dst.relative_to(out_dir)),
            "subject": bf.entities["sub"], "session": bf.entities.get("ses"), "suffix": bf.suffix,
            "model": den.name, "sha256": den.sha256, "c2s_version": __version__, "date": started,
            "command": command}))

    def before(job: runner.Job) -> None:
        _, side_path, companions, targets, figure = plan[job.output]
        for target in targets:
            check_no_links(out_dir, target)  # before any folder is made: a linked sub-XX gets nothing
        job.output.parent.mkdir(parents=True, exist_ok=True)
        figure.parent.mkdir(parents=True, exist_ok=True)
        check_companions(side_path, companions)

    def after(job: runner.Job, result: dict[str, Any]) -> dict[str, Any]:
        bf, side_path, _, _, figure = plan[job.output]
        write_json_atomic(side_path, {**source_sidecar(bf, bids_dir),
                                      "Sources": [f"bids:raw:{bf.path.relative_to(bids_dir).as_posix()}"],
                                      "C2S": {k: result[k] for k in ("model", "sha256", "noise", "warnings", "tta",
                                                                     "planes", "seconds", "clipped_voxels",
                                                                     "series_mode", "series_context", "complex")
                                             if result.get(k) is not None}})
        if bf.suffix == "dwi":
            for ext in (".bval", ".bvec"):
                src = bf.path.with_name(bf.path.name.removesuffix(bf.extension) + ext)
                if src.is_file():
                    write_atomic(out_dir / bf.derivative(desc, extension=ext), src.read_bytes())
        maps = result.get("sigma_map_estimate") or [{}]
        return {"sigma": result["noise"][0]["sigma"], "method": result["noise"][0]["method"],
                "reason": result.get("noise_reason", ""),
                "sigma_map": {k: maps[0][k] for k in ("varying", "used", "p95_p5_ratio", "min", "median", "max")
                              if k in maps[0]},
                "warnings": result["warnings"], "seconds": result["seconds"]["total"], "timings": result["seconds"],
                "figure": str(figure.relative_to(out_dir))}

    def on_record(rec: runner.Record) -> None:
        d = rec.to_dict(full=False)
        run.records.append(d)
        if on_file:
            on_file(plan[rec.job.output][0], d)

    runner.run(den, jobs, keep_going=True, skip_existing=skip_existing, full_records=False, before=before,
               after=after, on_record=on_record,
               on_warning=(lambda job, w: on_warning(f"{job.input}: {w}")) if on_warning else None)
    for sub in sorted({bf.entities["sub"] for bf in files}):
        log = out_dir / "logs" / f"sub-{sub}_c2s.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            for r in run.records:
                if r["subject"] == sub:
                    fh.write(json.dumps(r, default=str) + "\n")
    return run


def run_group(out_dir: Path, on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Summarise every participant's records: ``c2s_group.tsv``, ``c2s_group.json`` and ``c2s_report.html``
    (each run's preview). The last record of each output wins (a re-run replaces a failure). A line that is not a
    c2s record (truncated by a killed run, edited) is skipped with a warning naming the file and line."""
    latest: dict[str, dict[str, Any]] = {}
    for log in sorted((out_dir / "logs").glob("sub-*_c2s.jsonl")):
        for k, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                r = None
            if not (isinstance(r, dict) and isinstance(r.get("status"), str) and isinstance(r.get("output"), str)
                    and (r["status"] != "ok" or all(k in r for k in ("sigma", "method", "seconds", "figure")))):
                if on_warning:
                    on_warning(f"{log} line {k}: not a c2s record (truncated or edited?); skipped")
                continue
            if r["status"] != "skipped" or r["output"] not in latest:
                latest[r["output"]] = r
    if not latest:
        raise InputError(f"{out_dir}: no participant records under logs/; run the participant level first",
                         param="output_dir")
    check_group_outputs(out_dir)
    for name in ("c2s_group.tsv", "c2s_group.json", "c2s_report.html"):
        check_no_links(out_dir, out_dir / name)
    rows = sorted(latest.values(), key=lambda r: r["output"])
    cols = ("subject", "session", "suffix", "input", "output", "status", "sigma", "method", "seconds", "error")
    lines = ["\t".join(cols)] + ["\t".join("n/a" if r.get(c) in (None, "") else str(r[c]) for c in cols) for r in rows]
    (out_dir / "c2s_group.tsv").write_text("\n".join(lines) + "\n")
    summary = {"files": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
               "failed": sum(r["status"] == "failed" for r in rows), "runs": rows}
    write_json_atomic(out_dir / "c2s_group.json", summary)
    (out_dir / "c2s_report.html").write_text(_html(rows))
    return summary


def _html(rows: list[dict[str, Any]]) -> str:
    """The QC report a lab signs off on (as MRIQC and fMRIPrep reports): a summary (files ok / failed / skipped, the
    model and its SHA-256, the commands, the dates, the c2s version), the failures with their one-line reason, then
    per file: σ and how it was chosen, the σ-map summary, warnings, timings and the before / after / residual
    picture (oriented, readable size)."""
    import html

    def esc(v: Any) -> str:
        return html.escape("" if v is None else str(v))

    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    models = sorted({(r.get("model"), r.get("sha256")) for r in rows if r.get("sha256")})
    versions = sorted({r.get("c2s_version") for r in rows if r.get("c2s_version")})
    dates = sorted(r["date"] for r in rows if r.get("date"))
    commands = sorted({r["command"] for r in rows if r.get("command")})
    parts = ["<!doctype html><html lang='en'><meta charset='utf-8'><title>c2s report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em} img{max-width:100%}"
             " table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             " .failed{color:#b00} .ok{color:#060} .warn{color:#a60} code{font-size:90%}</style>",
             f"<h1>c2s {esc(__version__)}: denoising report</h1>",
             "<section id='summary'><h2>Summary</h2><table>",
             f"<tr><th>files</th><td>{len(rows)}: <span class='ok'>{len(ok)} ok</span>, "
             f"<span class='failed'>{len(failed)} failed</span>, {len(skipped)} skipped</td></tr>",
             "<tr><th>model</th><td>" + "<br>".join(f"{esc(m)} <code>sha256 {esc(h)}</code>" for m, h in models)
             + "</td></tr>",
             f"<tr><th>c2s version</th><td>{esc(', '.join(str(v) for v in versions))}</td></tr>",
             f"<tr><th>run dates</th><td>{esc(dates[0] if dates else '')} – {esc(dates[-1] if dates else '')}</td></tr>",
             "<tr><th>commands</th><td>" + "<br>".join(f"<code>{esc(c)}</code>" for c in commands) + "</td></tr>",
             "</table></section>"]
    if failed:
        parts.append("<section id='failures'><h2 class='failed'>Failures</h2><ul>")
        parts += [f"<li><b>{esc(r['input'])}</b>: {esc(r.get('error'))}</li>" for r in failed]
        parts.append("</ul></section>")
    parts.append("<section id='files'><h2>Files</h2>")
    for r in rows:
        parts.append(f"<article class='file' data-status='{esc(r['status'])}'>"
                     f"<h3 class='{esc(r['status'])}'>{esc(r['output'])} — {esc(r['status'])}</h3>"
                     f"<p>input <code>{esc(r.get('input'))}</code></p>")
        if r["status"] == "ok":
            smap = r.get("sigma_map") or {}
            timing = ", ".join(f"{esc(k)} {float(v):.1f} s" for k, v in (r.get("timings") or {}).items()
                               if isinstance(v, (int, float)))
            why = str(r.get("reason") or "")
            if why.startswith("σ = "):  # the sentence repeats σ: keep its "why"
                why = why.split(", ", 1)[1] if ", " in why else why.split(": ", 1)[-1]
            parts.append(f"<p class='noise'>σ = {float(r['sigma']):.4g}, from {esc(r['method'])}"
                         + (f": {esc(why)}" if why else "") + "</p>")
            smap = {k: v for k, v in smap.items() if v is not None}
            if smap:
                parts.append("<p class='sigma-map'>σ map: " + ", ".join(f"{esc(k)} {esc(v)}" for k, v in smap.items())
                             + "</p>")
            warn = "".join(f"<li class='warn'>{esc(w)}</li>" for w in r.get("warnings") or [])
            parts.append(f"<ul class='warnings'>{warn}</ul>" if warn else "")
            parts.append(f"<p class='timings'>{float(r['seconds']):.1f} s in all" + (f" ({timing})" if timing else "")
                         + "</p>")
            parts.append(f"<img src='{esc(r['figure'])}' alt='{esc(r['output'])}: input | c2s | residual'>")
        elif r["status"] == "failed":
            parts.append(f"<p class='failed'>{esc(r.get('error'))}</p>")
        parts.append("</article>")
    parts.append("</section></html>")
    return "\n".join(parts) + "\n"
