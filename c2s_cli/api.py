"""Python API: ``Denoiser`` loads a model once and denoises arrays, volumes or files.

``Denoiser.denoise_file(src, dst, options)`` is the one per-input pipeline behind ``c2s denoise`` (and the entry
points built on it): every check that can fail runs before the compute, and it returns a record of what happened.
``Denoiser.denoise`` is the array core (arrays in, arrays out).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import c2s_cli.config as config
from c2s_cli.checkpoint import load_model, resolve_model, series_start, sha256
from c2s_cli.config import SELF_SIMILARITY, DenoiseOptions, check_options
from c2s_cli.errors import C2SError, CheckpointError, InputError, UsageError
from c2s_cli.records import DenoiseReport
from c2s_cli.noise.domain import NoiseDomain
from c2s_cli.noise.policy import NoiseFit, NoiseSpec, all_finite, fit_frame, frame_of
from c2s_cli.noise.policy import fit as fit_noise
from c2s_cli.volume import Volume

__all__ = ["DenoiseOptions", "DenoiseReport", "Denoiser", "check_options", "check_planes", "check_tta"]


def check_volume(data: NDArray[np.floating], name: str, *, vst_on: bool) -> None:
    """Refuse, with one line naming ``name``, a volume c2s cannot denoise: not 3-D or 4-D, complex, NaN or Inf,
    beyond float32's reach, negative under the VST (naming ``vst``), or a frame that is all zeros."""
    if data.ndim not in (3, 4):
        raise InputError(f"{name}: expected a 3D or 4D volume, got shape {data.shape}")
    if np.iscomplexobj(data):
        raise InputError(f"{name}: complex data; give the magnitude image")
    if not all_finite(data):
        raise InputError(f"{name}: contains NaN or infinite voxels")
    lo, hi = float(data.min()), float(data.max())
    top = max(abs(lo), abs(hi))
    if top > 1e20:  # squares and VST tables overflow float32 long before the network sees anything
        raise InputError(f"{name}: intensities up to {top:.3g}, beyond what c2s can compute with in float32 "
                         "(a damaged file, or rescale it)")
    if vst_on and lo < 0:
        raise InputError(f"vst: {name} has negative intensities, not a magnitude image; for signed data turn the "
                         "VST off", param="vst")
    frames = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
    for t, v in enumerate(frames):
        if not np.any(v):
            raise InputError(f"{name}: volume {t} is all zeros")


def check_tta(tta: int) -> None:
    """:func:`c2s_cli.config.check_tta` as a :class:`UsageError` naming ``tta``."""
    try:
        config.check_tta(tta)
    except ValueError as exc:
        raise UsageError(str(exc), param="tta") from None


def check_strength(strength: float) -> None:
    """Refuse a conditioning strength that is not a positive number (a :class:`UsageError` naming ``strength``)."""
    if not strength > 0:
        raise UsageError(f"strength must be > 0, got {strength}", param="strength")


def check_planes(planes: tuple[str, ...]) -> None:
    """:func:`c2s_cli.config.check_planes` as a :class:`UsageError` naming ``planes``."""
    try:
        config.check_planes(planes)
    except ValueError as exc:
        raise UsageError(str(exc), param="planes") from None


def _default_batch(device: Any) -> int | None:
    """Slices per pass: None on CPU (sized per volume from the slice area, see ``infer``); on CUDA from free memory
    (≈ 60 MB per 256² slice at fp32), ≤ 64."""
    if device.type != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(64, free * 0.5 // (60 * 2**20))))


class Denoiser:
    """A loaded C2S model.

    Args:
        model: a model name (``default``, others in ``weights/`` or ``$C2S_WEIGHTS``) or a ``.safetensors`` path;
            a named model is checked against the SHA-256 in its registry.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: slices per forward pass (the output does not depend on it).
        threads: CPU threads for torch (None: torch's default).
        precision: ``auto`` (bf16 autocast where the hardware runs it natively: a CUDA GPU with bf16, a CPU with
            AVX512_BF16 or AMX; fp32 elsewhere), ``fp32`` or ``bf16``.
    Example:
        >>> den = Denoiser()                                              # doctest: +SKIP
        >>> clean = den.denoise(noisy_array)          # (X, Y, Z), σ estimated  # doctest: +SKIP
        >>> record = den.denoise_file(Path("t2.nii.gz"), Path("t2_c2s.nii.gz"), DenoiseOptions())  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path = "default",
        device: str = "auto",
        *,
        batch_size: int | None = None,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        import torch

        from c2s_cli.infer import native_bf16, pick_device

        if threads is not None:
            if threads < 1:
                raise UsageError(f"threads must be ≥ 1, got {threads}", param="threads")
            torch.set_num_threads(threads)
        if batch_size is not None and batch_size < 1:
            raise UsageError(f"batch_size must be ≥ 1, got {batch_size}", param="batch_size")
        try:
            config.check_precision(precision)
        except ValueError as exc:
            raise UsageError(str(exc), param="precision") from None
        try:
            self.device = pick_device(device)
        except (ValueError, RuntimeError) as exc:
            raise UsageError(str(exc) if str(exc).startswith("device") else f"device {device!r}: {exc}",
                             param="device") from None
        t0 = time.perf_counter()
        self.path, expected = resolve_model(str(model))
        self.model, self.config, self.meta = load_model(self.path, expected_sha256=expected)
        self.sha256 = expected or sha256(self.path)
        # a registered model may name another start model for the series mode (checkpoint.series_start)
        self.series_start = series_start(self.path) if expected else None
        self._series_model: tuple[Any, config.RunConfig, str] | None = None
        self.model.to(self.device)
        self.load_seconds = time.perf_counter() - t0
        self.batch_size = batch_size or _default_batch(self.device)
        self.bf16 = native_bf16(self.device) if precision == "auto" else precision == "bf16"
        self.precision = "bf16" if self.bf16 else "fp32"

    @property
    def plain(self) -> bool:
        """A plain model: no context volumes, guides or NL channel (the self-similarity blend applies)."""
        m = self.model.cfg
        return not (m.volumes or m.guides or m.nonlocal_radius)

    @property
    def name(self) -> str:
        return self.path.stem

    def noise_model(self, use_vst: bool | None = None, coils: int | None = None) -> tuple[bool, int]:
        """(VST on, coil count): the caller's overrides, else the model's settings."""
        return (self.config.noise.vst if use_vst is None else use_vst,
                self.config.noise.coils if coils is None else coils)

    def noise_spec(
        self, sigma: float | None = None, *, sigma_map: NDArray[np.floating] | None = None, noise: str = "default",
        use_vst: bool | None = None, coils: int | None = None, slice_axis: int = 2, map_source: str = "map (user)",
    ) -> NoiseSpec:
        """The :class:`~c2s_cli.noise.policy.NoiseSpec` of a call: the caller's σ / map / mode and noise-model
        overrides, else the model's settings."""
        vst_on, n_coils = self.noise_model(use_vst, coils)
        return NoiseSpec(sigma=sigma, sigma_map=sigma_map, mode=noise, use_vst=vst_on, coils=n_coils,
                         slice_axis=slice_axis, map_source=map_source)

    def fit_noise(
        self, x: Volume | NDArray[np.floating], sigma: float | None = None, *,
        sigma_map: NDArray[np.floating] | None = None, noise: str = "default", use_vst: bool | None = None,
        coils: int | None = None, slice_axis: int | None = None, on_warning: Callable[[str], None] | None = None,
        map_source: str = "map (user)",
    ) -> NoiseFit:
        """The noise policy (:func:`c2s_cli.noise.policy.fit`) for ``x`` with this model's noise settings: what
        :meth:`denoise` uses when it is not given a fit. ``noise``: "default", "auto" or "none"; ``map_source``:
        where a given ``sigma_map`` came from (the domain's ``method``)."""
        data = x.data if isinstance(x, Volume) else np.asarray(x, dtype=np.float32)
        axis = slice_axis if slice_axis is not None else (x.slice_axis if isinstance(x, Volume) else 2)
        spec = self.noise_spec(sigma, sigma_map=sigma_map, noise=noise, use_vst=use_vst, coils=coils, slice_axis=axis,
                               map_source=map_source)
        name = str(getattr(x, "path", "input"))
        check_volume(data, name, vst_on=spec.use_vst)
        return fit_noise(data, spec, name=name, on_warning=on_warning)

    def guide_domains(
        self, guides: Sequence[NDArray[np.floating]], *, use_vst: bool | None = None, coils: int | None = None,
        slice_axis: int = 2,
    ) -> list[tuple[NDArray[np.floating], NoiseDomain]]:
        """The domains of guide contrasts (one convention: each guide's own whole-scan estimate, the target's VST
        and coil settings)."""
        vst_on, n_coils = self.noise_model(use_vst, coils)
        return [(g, fit_frame(g, None, use_vst=vst_on, coils=n_coils, slice_axis=slice_axis)) for g in guides]

    def denoise(
        self,
        x: Volume | NDArray[np.floating],
        sigma: float | None = None,
        *,
        strength: float = 1.0,
        use_vst: bool | None = None,
        coils: int | None = None,
        slice_axis: int | None = None,
        guides: Sequence[NDArray[np.floating]] | None = None,
        report: DenoiseReport | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        tta: int = 1,
        planes: tuple[str, ...] = ("axial",),
        sigma_map: NDArray[np.floating] | None = None,
        noise: str = "default",
        fitted: NoiseFit | None = None,
        self_similarity: bool = True,
    ) -> NDArray[np.float32]:
        """Denoise a (X, Y, Z) or (X, Y, Z, T) magnitude volume; returns the same shape in the same units.

        The noise comes from the one noise policy (:mod:`c2s_cli.noise.policy`), as for files: the array API and
        ``denoise_file`` give the same result for the same data.

        Args:
            x: a :class:`Volume` or an array (image units).
            sigma: noise std in image units (None: the policy chooses).
            sigma_map: spatially varying noise, σ per voxel in image units: (X, Y, Z) for every frame or
                (X, Y, Z, T).
            noise: the policy's mode when neither is given: "default", "auto" (always a σ map) or "none" (one
                whole-scan σ per volume).
            fitted: a :class:`~c2s_cli.noise.policy.NoiseFit` of ``x`` already made (:meth:`fit_noise`); then
                ``sigma``, ``sigma_map`` and ``noise`` are not used.
            strength: multiplies σ_d for the network's conditioning (1 = as estimated).
            use_vst / coils: override the model's noise-domain settings.
            slice_axis: axis to slice along (default: the volume's acquisition axis, or 2 for arrays).
            guides: co-registered other contrasts (same shape) for multi-contrast models.
            report: filled with the noise fit, each frame's :class:`NoiseDomain` and the timings.
            tta: test-time augmentation: the mean over 1, 2, 4 or 8 in-plane flips / transposes of each slice.
            planes: denoise slice by slice along each of these planes ("axial" = ``slice_axis``, "coronal" and
                "sagittal" = the other two axes) and average (in image units, one noise domain per frame).
            self_similarity: blend each frame's output with its non-local-means estimate by the weight SURE
                chooses (:mod:`c2s_cli.selfsim`; plain models only, else ignored); False: the network's output alone.
        """
        from c2s_cli.data import plane_axes
        from c2s_cli.infer import denoise_frame, self_similarity as fit_blend

        data = x.data if isinstance(x, Volume) else np.asarray(x, dtype=np.float32)
        axis = slice_axis if slice_axis is not None else (x.slice_axis if isinstance(x, Volume) else 2)
        name = getattr(x, "path", "input")
        if fitted is not None:  # else fit_noise checks it
            check_volume(data, name, vst_on=self.noise_model(use_vst, coils)[0])
        self.check_volume_by_volume()
        self.check_guides(len(guides or []))
        check_strength(strength)
        check_tta(tta)
        check_planes(planes)
        report = report if report is not None else DenoiseReport()
        frames = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
        if fitted is None:
            fitted = self.fit_noise(x, sigma, sigma_map=sigma_map, noise=noise, use_vst=use_vst, coils=coils,
                                    slice_axis=axis)
        if len(fitted.domains) != len(frames):
            raise UsageError(f"fitted: a noise fit of {len(fitted.domains)} frame(s) for {len(frames)}", param="fitted")
        report.fit = fitted
        report.seconds["noise"] = report.seconds.get("noise", 0.0) + fitted.seconds  # where it was made
        out = np.empty_like(data, dtype=np.float32) if data.ndim == 4 else data
        axes = tuple(plane_axes(axis)[p] for p in planes)
        for t, v in enumerate(frames):
            t0 = time.perf_counter()
            dom = fitted.domains[t]
            gds = self.guide_domains([frame_of(gv, t) for gv in guides or []], use_vst=use_vst, coils=coils,  # type: ignore[misc]
                                     slice_axis=axis)
            report.domains.append(dom)
            report.seconds["noise"] += time.perf_counter() - t0
            blend = None
            if self_similarity and self.plain:  # one fit per plane (planes = the mean of the one-plane runs)
                t0 = time.perf_counter()
                blend = [fit_blend(self.model, v, dom, SELF_SIMILARITY, axis=ax, device=self.device,
                                   batch_size=self.batch_size, strength=strength) for ax in axes]
                report.blends.extend(blend)
                report.seconds["self-similarity"] = report.seconds.get("self-similarity", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            res = denoise_frame(self.model, v, dom, axes=axes, guides=gds or None, strength=strength,
                                batch_size=self.batch_size, device=self.device, bf16=self.bf16,
                                on_progress=on_progress, tta=tta, blend=blend)
            if not all_finite(res):
                raise C2SError("the network produced NaN or infinite values")
            report.seconds["inference"] = report.seconds.get("inference", 0.0) + time.perf_counter() - t0
            if data.ndim == 3:
                out = res
            else:
                out[..., t] = res
        return out

    def denoise_series(
        self,
        x: Volume | NDArray[np.floating],
        *,
        bvals: NDArray[np.floating] | None = None,
        bvecs: NDArray[np.floating] | None = None,
        steps: int | None = None,
        neighbours: int = 2,
        lr: float = 5e-4,
        seed: int = 0,
        strength: float = 1.0,
        match_variance: bool = True,
        floor_spread: float | None = None,
        prediction_weight: float | None = None,
        subspace_weight: float | None = None,
        rank_map: bool = False,
        self_similarity: bool = True,
        sigma: float | None = None,
        noise: str = "default",
        use_vst: bool | None = None,
        slice_axis: int | None = None,
        fitted: NoiseFit | None = None,
        report: DenoiseReport | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        on_volume: Callable[[int, int], None] | None = None,
    ) -> NDArray[np.float32]:
        """Denoise a 4-D series (X, Y, Z, T) with the other volumes as context (:mod:`c2s_cli.series`): the noise is
        fitted once for the series (by the noise policy, as :meth:`denoise`), this model is widened by the context
        channels and trained ``steps`` GDSM steps on the series itself, then each volume is denoised with its context.

        Args:
            bvals / bvecs: the gradient table ((T,) s/mm², (T, 3)): neighbours in q-space and shells; None: in time.
            neighbours: nearest volumes given as context (plus the prediction from the others and the pooled mean).
            steps, lr, seed: the training on the series (0 steps: the start model untrained; None: its
                :func:`c2s_cli.series.default_steps`, 200 from a start model trained with context, else 400).
            fitted: the series' noise fit already made (:meth:`fit_noise`); then ``sigma`` and ``noise`` are not used.
            strength: multiplies σ_d for the network's conditioning at inference (as in :meth:`denoise`).
            match_variance: with a gradient table, give each shell (of enough volumes for MP-PCA) the directional spread the data
                show (:func:`c2s_cli.series.match_variance`: undoes the posterior mean's shrinkage of FA).
            floor_spread: the uncertainty (std, units of σ) the unbiased inverse averages over, so that signals at
                the Rician floor come out small and positive, not 0 (None: :data:`c2s_cli.series.FLOOR_SPREAD`).
            prediction_weight: move each volume's estimate towards its prediction from the other volumes by this
                weight in network units (None: :data:`c2s_cli.series.PREDICTION_WEIGHT`).
            subspace_weight: with a gradient table, move the estimate towards its projection on the noisy series'
                local low-rank subspace by this weight, before ``match_variance``
                (:func:`c2s_cli.series.project_subspace`; None: :data:`c2s_cli.series.SUBSPACE_WEIGHT`; 0: off).
            rank_map: also put the rank of the local low-rank model behind the predictions (X, Y, Z) in
                ``report.rank_map`` (:func:`c2s_cli.series.local_rank`; as ``dwidenoise -rank``).
            self_similarity: blend each volume's output with its NL-means estimate by SURE's weight (as
                :meth:`denoise` does; the context volumes as unmoved extra channels). Chosen on the validation phantom
                of the training anatomy (``c2s_bench.dwi_floor_spread --self-similarity off,on``, session 19).
        Returns:
            (X, Y, Z, T) float32 in image units.
        """
        from c2s_cli import series

        data = x.data if isinstance(x, Volume) else np.asarray(x, dtype=np.float32)
        if data.ndim != 4 or data.shape[3] < 2:
            raise UsageError(f"a series needs a 4-D input with at least 2 volumes, got shape {data.shape}",
                             param="series_mode")
        n = data.shape[3]
        for name, arr, shape in (("bvals", bvals, (n,)), ("bvecs", bvecs, (n, 3))):
            if arr is not None and np.shape(arr) != shape:
                raise UsageError(f"{name}: {np.shape(arr)} for {n} volumes (want {shape})", param=name)
        check_strength(strength)
        cfg = series.SeriesConfig(neighbours=neighbours, steps=steps, lr=lr, seed=seed, match_variance=match_variance,
                                  floor_spread=series.FLOOR_SPREAD if floor_spread is None else floor_spread,
                                  prediction_weight=series.PREDICTION_WEIGHT if prediction_weight is None
                                  else prediction_weight,
                                  subspace_weight=series.SUBSPACE_WEIGHT if subspace_weight is None
                                  else subspace_weight)
        try:
            cfg.validate()
        except ValueError as exc:
            raise UsageError(str(exc), param=str(exc).split(" ", 1)[0]) from None
        start, start_config, start_sha = self.series_model()
        try:
            series.check_start(start_config.model.volumes, neighbours)
        except ValueError as exc:
            raise UsageError(str(exc), param="series_neighbours") from None
        axis = slice_axis if slice_axis is not None else (x.slice_axis if isinstance(x, Volume) else 2)
        report = report if report is not None else DenoiseReport()
        fitted = fitted if fitted is not None else self.fit_noise(x, sigma, noise=noise, use_vst=use_vst,
                                                                  slice_axis=axis)
        if len(fitted.domains) != n:
            raise UsageError(f"fitted: a noise fit of {len(fitted.domains)} frame(s) for {n}", param="fitted")
        report.fit = fitted
        report.domains.extend(fitted.domains)
        report.seconds["noise"] = report.seconds.get("noise", 0.0) + fitted.seconds
        frames = [data[..., t] for t in range(n)]
        t0 = time.perf_counter()
        domains = [dataclasses.replace(d, floor_spread=cfg.floor_spread) for d in fitted.domains]
        ctx = series.SeriesContext(frames, domains, series.neighbours(n, neighbours, bvals, bvecs),
                                   series.pools(n, bvals))
        report.series_start = {"model": self.series_start or self.name, "sha256": start_sha}
        model, used = series.train_on_series(start, start_config, ctx, cfg, slice_axis=axis, on_log=on_log,
                                             bf16=self.bf16)
        report.series_steps = used.train.steps
        report.series_floor_spread = cfg.floor_spread
        report.series_prediction_weight = cfg.prediction_weight
        report.seconds["training"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = series.denoise_series(model.to(self.device), ctx, slice_axis=axis, batch_size=self.batch_size,
                                    device=self.device, bf16=self.bf16, on_volume=on_volume, strength=strength,
                                    self_similarity=config.SERIES_SELF_SIMILARITY if self_similarity else None,
                                    fits=report.blends, prediction_weight=cfg.prediction_weight)
        report.series_subspace_weight = cfg.subspace_weight if bvals is not None else 0.0
        if bvals is not None:
            series.project_subspace(out, ctx, cfg.subspace_weight)  # weight 0: unchanged
        if cfg.match_variance and bvals is not None:
            series.match_variance(out, ctx, series.shell_groups(bvals))
        if rank_map:
            report.rank_map = ctx.rank()
        if not all_finite(out):
            raise C2SError("the network produced NaN or infinite values")
        report.seconds["inference"] = time.perf_counter() - t0
        return out

    def series_model(self) -> tuple[Any, config.RunConfig, str]:
        """The model the series mode widens and trains (its run config and SHA-256): this model, or the registered
        start model it names (:func:`c2s_cli.checkpoint.series_start`), loaded and checked once."""
        if self.series_start is None:
            return self.model, self.config, self.sha256
        if self._series_model is None:
            path, expected = resolve_model(self.series_start)
            model, cfg, _ = load_model(path, expected_sha256=expected)
            if cfg.model.guides != self.config.model.guides:
                raise CheckpointError(f"model {self.name}: its series start model {self.series_start} takes "
                                      f"{cfg.model.guides} guide(s), not {self.config.model.guides}", param="model")
            self._series_model = (model.to(self.device), cfg, expected or sha256(path))
        return self._series_model

    def check_volume_by_volume(self) -> None:
        """Refuse to denoise volume by volume with a series start model (one that takes context volumes): a
        UsageError naming ``model``."""
        if self.config.model.volumes:
            raise UsageError(f"model: {self.name} is a series start model (it takes {self.config.model.volumes} "
                             "context volumes): it denoises a 4-D series in the context mode (--series-mode "
                             "context), not volume by volume", param="model")

    def check_guides(self, n: int) -> None:
        """Refuse a guide count the model does not take (a UsageError naming ``guides``)."""
        k = self.config.model.guides
        if n != k:
            if k == 0:
                raise UsageError(f"guides: model {self.name} is single-contrast; it takes no guide", param="guides")
            raise UsageError(f"guides: model {self.name} needs {k} guide contrast(s), got {n}", param="guides")

    def adapted(
        self,
        data: NDArray[np.floating],
        steps: int,
        *,
        sigma: float | None = None,
        use_vst: bool | None = None,
        coils: int | None = None,
        slice_axis: int = 2,
        guides: Sequence[NDArray[np.floating]] | None = None,
        seed: int = 0,
        lr: float = 2e-4,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        sigma_map: NDArray[np.floating] | None = None,
        domain: NoiseDomain | None = None,
    ) -> Denoiser:
        """A copy of this denoiser fine-tuned on one scan with the GDSM loss (self-supervised, nothing but the scan),
        in the same noise domain as the inference that follows (the caller's ``sigma`` / ``sigma_map`` /
        ``use_vst`` / ``coils``). With a σ map the training volume is in the map's unit-σ domain, so the GDSM
        re-corruption τ is, in image units, scaled by the local σ: the loss stays exact per voxel.

        Args:
            data: (X, Y, Z) magnitude volume in image units.
            steps: optimisation steps (a few hundred are minutes on a CPU).
            lr: peak learning rate (small: this fine-tunes trained weights).
            domain: the scan's fitted noise domain (:meth:`fit_noise`); None: fitted here by the noise policy.
        Returns:
            a Denoiser whose model is the fine-tuned copy and whose config records the domain it was adapted in.
        """
        import copy
        import dataclasses

        from c2s_cli.data import make_train_volume
        from c2s_cli.loop import train

        if steps < 1:
            raise UsageError(f"adapt must be ≥ 1, got {steps}", param="adapt")
        data = np.asarray(data, dtype=np.float32)
        vst_on, n_coils = self.noise_model(use_vst, coils)
        dom = domain if domain is not None else self.fit_noise(
            data, sigma, sigma_map=sigma_map, use_vst=vst_on, coils=n_coils, slice_axis=slice_axis).domains[0]
        gds = self.guide_domains(guides or (), use_vst=vst_on, coils=n_coils, slice_axis=slice_axis)
        planes = ("axial", "coronal", "sagittal") if min(data.shape) >= 16 else ("axial",)
        tv = make_train_volume(data, dom, slice_axis=slice_axis, planes=planes, name="adapt",
                               guides=[gd.forward(g) for g, gd in gds])
        cfg = dataclasses.replace(
            self.config,
            noise=dataclasses.replace(self.config.noise, vst=vst_on, coils=n_coils),
            train=dataclasses.replace(
                self.config.train, steps=steps, lr=lr, warmup=min(20, max(1, steps // 5)), val_fraction=0.0,
                patch_size=64, batch_size=8, ema_halflife=max(5, steps // 5), planes=planes, seed=seed,
                log_every=max(1, steps // 20), add_noise=None,
            ),
        )
        res = train(cfg, [tv], None, None, data_summary={}, init=self.model, on_log=on_log)  # trains a copy
        other = copy.copy(self)
        other.model = res.model.eval().to(self.device)
        other.config = cfg
        return other

    def denoise_file(
        self,
        src: Path,
        dst: Path,
        options: DenoiseOptions | None = None,
        *,
        inputs: Sequence[Path] = (),
        on_progress: Callable[[str, int, int], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Denoise one scan file or DICOM series ``src`` into ``dst``: the pipeline behind ``c2s denoise``.

        Every check that can fail runs before the compute (options, output type, output safety against ``src`` and
        every other input of the run in ``inputs``, writability, the DICOM dry run, mask and guide grids), and an
        exclusive lock is held on each output while it is written.

        Args:
            src / dst: input (NIfTI file, DICOM file or folder) and output (NIfTI file or DICOM series folder).
            options: a :class:`DenoiseOptions` (default: all defaults).
            inputs: the other inputs of a batch (outputs may not land on or in them).
            on_progress: ``(stage, done, total)`` for "adapt" (steps) and "denoise" (slices).
            on_warning: called with each warning as it happens (they are also in the record).
        Returns:
            the record (plain dict, as ``--json`` prints it): input, series, output, status, model, sha256, device,
            noise (per frame), warnings, clipped_voxels, options, seconds.
        """
        from c2s_cli.pipeline import run_file

        return run_file(self, src, dst, options or DenoiseOptions(), inputs=inputs, on_progress=on_progress,
                        on_warning=on_warning)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "path": str(self.path), "sha256": self.sha256, "device": str(self.device),
                "precision": self.precision}
