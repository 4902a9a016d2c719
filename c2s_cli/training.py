"""The training entry point's library side: read the inputs into a training set, resolve a start model, evaluate
against a clean reference. ``c2s train`` is a thin layer over these and :func:`c2s_cli.loop.train`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from c2s_cli.config import RunConfig
from c2s_cli.errors import UsageError
from c2s_cli.io import read_volume


def load_training_set(
    items: Sequence[tuple[Path, str | None]], cfg: RunConfig, guides: Sequence[Path] = (),
    on_warning: Callable[[str], None] | None = None, sigma_maps: Sequence[Path] = (),
) -> tuple[list[Any], dict[str, Any]]:
    """Read every input (and its K guides, and its σ map if ``sigma_maps`` gives one per input, in input order) and
    build the training volumes (:func:`c2s_cli.data.build`).

    Returns the volumes and the data summary recorded in the model's metadata.
    """
    from c2s_cli.noise.policy import fit_frame as fit_domain
    from c2s_cli.data import Scan, build
    from c2s_cli.pipeline import read_guide, read_sigma_map

    k = cfg.model.guides
    if len(guides) != k * len(items):
        raise UsageError(f"guides: the model takes {k} guide contrast(s) per input: give {k * len(items)}, got "
                         f"{len(guides)}", param="guides")
    if sigma_maps and len(sigma_maps) != len(items):
        raise UsageError(f"sigma_map: give one per input ({len(items)}), got {len(sigma_maps)}", param="sigma_map")
    scans = []
    for i, (p, s) in enumerate(items):
        vol, warnings = read_volume(p, series=s)
        for w in warnings:
            if on_warning:
                on_warning(f"{p}: {w}")
        scans.append(Scan(p.name, vol.data, vol.slice_axis, [read_guide(g, vol) for g in guides[i * k : (i + 1) * k]],
                          vol.meta.get("series_description", ""),
                          read_sigma_map(sigma_maps[i], vol) if sigma_maps else None))
    return build(scans, cfg, fit=fit_domain)


def resolve_init(spec: str) -> tuple[Any, dict[str, str]]:
    """A start model for fine-tuning (name or path), checked against its registry like ``--model``; returns the
    model and its provenance: the file **name** (never a host path) and its SHA-256."""
    from c2s_cli.checkpoint import load_model, resolve_model, sha256

    path, expected = resolve_model(spec)
    model = load_model(path, expected_sha256=expected)[0]
    name = spec if expected is not None else path.name
    return model, {"model": name, "sha256": expected or sha256(path)}


def init_config(spec: str) -> RunConfig:
    """The config of a start model, from its header only (no weights loaded)."""
    from c2s_cli.checkpoint import check_meta, read_header, resolve_model

    path, _ = resolve_model(spec)
    return check_meta(path, read_header(path)[0])


def reference_evaluator(
    item: tuple[Path, str | None], reference: Path, cfg: RunConfig,
) -> tuple[Callable[[Any], float], float]:
    """PSNR (dB, data range = the reference's 99.5th percentile, inside reference > 0) of the first input denoised
    by a model, on up to 8 central slices; the noise domain is fitted once on the whole first frame, as at inference.

    Returns the evaluator and the PSNR of the noisy input.
    """
    from c2s_cli.noise.policy import fit_frame as fit_domain
    from c2s_cli.infer import denoise_frame
    from c2s_cli.volume import same_grid

    vol, _ = read_volume(item[0], series=item[1])
    ref, _ = read_volume(reference)
    same_grid(ref, vol, reference, "reference")
    ax = vol.slice_axis
    data = vol.data if vol.data.ndim == 3 else vol.data[..., 0]
    clean_all = ref.data if ref.data.ndim == 3 else ref.data[..., 0]
    n = data.shape[ax]
    sel = np.arange(max(0, n // 2 - 4), min(n, n // 2 + 4))
    noisy = np.take(data, sel, axis=ax)
    clean = np.take(clean_all, sel, axis=ax)
    dom = fit_domain(data, cfg.noise.sigma, use_vst=cfg.noise.vst, coils=cfg.noise.coils, slice_axis=ax)
    peak = float(np.percentile(clean[clean > 0], 99.5))
    mask = clean > 0

    def psnr(x: np.ndarray) -> float:
        return float(10 * np.log10(peak**2 / np.mean((x[mask] - clean[mask]) ** 2)))

    def evaluate(model: Any) -> float:
        return psnr(denoise_frame(model, noisy, dom, axes=(ax,)))

    return evaluate, psnr(noisy)


def build_config(
    *,
    init: str | None,
    n_targets: int,
    n_guides: int,
    guide_names: Sequence[str] | None,
    model: dict[str, Any],
    gdsm: dict[str, Any],
    train: dict[str, Any],
    noise: dict[str, Any],
) -> RunConfig:
    """The run config of a new training run: the defaults, or a start model's architecture and GDSM settings
    (``init``), overridden by the given fields (None values are ignored). Guides: K = n_guides / n_targets per input."""
    import dataclasses

    from c2s_cli.config import GDSMConfig, ModelConfig, NoiseConfig, TrainConfig

    def given(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    m, g = (ModelConfig(), GDSMConfig()) if init is None else (init_config(init).model, init_config(init).gdsm)
    if n_guides % max(n_targets, 1):
        raise UsageError(f"guides: given {n_guides} times for {n_targets} input(s): give K guides per input",
                         param="guides")
    k = n_guides // max(n_targets, 1)
    names = tuple(guide_names) if guide_names else tuple(f"guide{i + 1}" for i in range(k))
    if len(names) != k:
        raise UsageError(f"guide_names lists {len(names)} names for {k} guide contrast(s)", param="guide_names")
    if init is None:
        m = dataclasses.replace(m, guides=k, guide_names=names)
    elif m.guides != k:
        raise UsageError(f"init: the start model takes {m.guides} guide contrast(s), {k} given", param="init")
    m = dataclasses.replace(m, **given(model))
    try:
        m.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return RunConfig(model=m, gdsm=dataclasses.replace(g, **given(gdsm)),
                     noise=NoiseConfig(**given(noise)), train=dataclasses.replace(TrainConfig(), **given(train)))


def resume_config(run_dir: Path, steps: int | None) -> RunConfig:
    """The config of the run in ``run_dir`` (its ``config.json``), with a new step count if given."""
    import dataclasses

    if not (run_dir / "config.json").is_file():
        raise UsageError(f"resume {run_dir}: no config.json in that folder", param="resume")
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    return cfg if steps is None else dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


def check_run_dir(run_dir: Path, inputs: Sequence[Path], *, resume: bool, force: bool) -> None:
    """A run folder may be reused (it holds c2s's own files) but may not be, hold or lie in an input; an existing,
    non-empty one needs ``resume`` or ``force``."""
    from c2s_cli.io.atomic import check_clear_of_inputs

    check_clear_of_inputs(run_dir, inputs, what="run_dir", param="run_dir", hint="choose another run folder")
    if not resume and run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise UsageError(f"run_dir {run_dir} exists; resume it or force a new run over it", param="run_dir")
    if run_dir.is_dir():  # --force (or --resume) replaces or appends to c2s's own run files, never a user's file
        for name in RUN_FILES:
            f = run_dir / name
            if (f.exists() or f.is_symlink()) and not is_run_file(f):
                raise UsageError(f"run_dir {run_dir}: {name} exists and is not c2s's own run file; --force replaces "
                                 "only what c2s wrote: move it away or choose another run folder", param="run_dir")


RUN_FILES = ("config.json", "stats.jsonl", "model.safetensors", "state.safetensors")


def is_run_file(path: Path) -> bool:
    """Whether ``path`` (one of :data:`RUN_FILES`) is what a c2s run wrote: a RunConfig JSON, JSON Lines of training
    log records, a c2s model, or a training state with its step. A link or anything unreadable is not."""
    from c2s_cli.checkpoint import read_header
    from c2s_cli.io.atomic import is_c2s_output

    try:
        if path.is_symlink() or not path.is_file():
            return False
        if path.name == "config.json":
            return {"model", "gdsm", "noise", "train"} <= set(json.loads(path.read_text()))
        if path.name == "stats.jsonl":
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            return all(isinstance(r, dict) and "step" in r for r in rows)
        if path.name == "model.safetensors":
            return is_c2s_output(path)
        if path.name == "state.safetensors":
            return "step" in json.loads(read_header(path)[0]["info"])
    except Exception:  # noqa: BLE001 - unreadable: not provably ours, so never replaced
        return False
    return False


def check_model_path(output: Path) -> None:
    """A model file is a ``.safetensors``."""
    if output.suffix != ".safetensors":
        raise UsageError(f"output {output}: the model file must end in .safetensors", param="output")


def git_commit() -> str | None:
    """The commit of a c2s checkout this runs from, if any (recorded in trained models)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def fit(
    cfg: RunConfig,
    items: Sequence[tuple[Path, str | None]],
    output: Path,
    run_dir: Path,
    *,
    guides: Sequence[Path] = (),
    sigma_maps: Sequence[Path] = (),
    init: str | None = None,
    resume: bool = False,
    force: bool = False,
    epochs: float | None = None,
    device: str = "auto",
    reference: Path | None = None,
    description: str = "",
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_info: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Any:
    """Train a model on ``items`` and write it to ``output`` (atomically, under an exclusive lock), with the run
    folder ``run_dir``: the library side of ``c2s train``. Under torchrun only rank 0 checks, logs and writes.

    Returns the :class:`~c2s_cli.loop.TrainResult` (None on other ranks).
    """
    import dataclasses

    from c2s_cli.infer import pick_device
    from c2s_cli.io.atomic import OutputLock, atomic_path, check_output
    from c2s_cli.loop import dist_env, train

    world, rank = dist_env()
    if world > 1 and resume:
        raise UsageError("resume is not supported under torchrun yet; resume on a single process", param="resume")
    everything = [p for p, _ in items] + list(guides) + list(sigma_maps) + ([reference] if reference else [])
    if rank == 0:
        check_model_path(output)
        check_output(output, everything, force=force)
        check_run_dir(run_dir, everything, resume=resume, force=force)
        if not resume:
            run_dir.mkdir(parents=True, exist_ok=True)
    try:
        dev = pick_device(device)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"device {device!r}: {exc}", param="device") from None
    volumes, summary = load_training_set(items, cfg, guides, on_warning=on_warning, sigma_maps=sigma_maps)
    if epochs is not None and not resume:
        per_epoch = max(1, sum(v.planes[0].shape[0] for v in volumes) // cfg.train.batch_size)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=max(1, int(epochs * per_epoch))))
    summary["description"] = description
    init_model = None
    if init is not None:
        init_model, summary["init"] = resolve_init(init)  # checked against its registry; file name + SHA-256
    objectives = []
    if cfg.train.distill_planes > 0:  # the start model's 3-plane average as a second target (c2s_cli.distill)
        from c2s_cli.distill import plane_distillation

        if init_model is None:
            raise UsageError("distill_planes: the teacher is the start model; give init", param="distill_planes")
        try:
            objective, summary["distill"] = plane_distillation(
                init_model, volumes, [str(r["input"]) for r in summary["items"]], cfg)
        except ValueError as exc:
            raise UsageError(str(exc), param=str(exc).split(" ")[0]) from None
        objectives.append(objective)
    if on_info:
        on_info(f"training on {len(volumes)} volume(s), {cfg.train.steps} steps, device {dev}, run folder {run_dir}")
    if rank != 0:
        train(cfg, volumes, None, None, data_summary=summary, init=init_model, resume=False, device=str(dev),
              objectives=objectives)
        return None
    evaluate = None
    if reference is not None:
        evaluate, noisy_psnr = reference_evaluator(items[0], reference, cfg)
        if on_info:
            on_info(f"reference {reference}: PSNR of the noisy input {noisy_psnr:.2f} dB")
    commit = git_commit()
    with OutputLock(output), atomic_path(output) as tmp:
        return train(cfg, volumes, tmp, run_dir, data_summary=summary, init=init_model, resume=resume,
                     device=str(dev), on_log=on_log, evaluate=evaluate, objectives=objectives,
                     extra_meta={"git_commit": commit} if commit else None)
