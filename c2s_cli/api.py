"""Python API: ``Denoiser`` loads a model once and denoises arrays or volumes (the CLI is a thin layer over it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.checkpoint import load_model, resolve_model, sha256
from c2s_cli.config import PLANES, TTA_CHOICES
from c2s_cli.errors import C2SError, InputError, UsageError
from c2s_cli.noise.estimate import NoiseEstimate, estimate_noise
from c2s_cli.volume import Volume


@dataclass
class DenoiseReport:
    """What happened to one 3D volume (or each 3D volume of a 4D one)."""

    noise: list[NoiseEstimate] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _all_finite(a: NDArray[np.floating]) -> bool:
    """No NaN/Inf, checked 16 planes at a time (no volume-sized temporary)."""
    return all(np.isfinite(a[i : i + 16]).all() for i in range(0, a.shape[0], 16))


def check_tta(tta: int) -> None:
    """Refuse a test-time augmentation count other than 1, 2, 4 or 8 (a :class:`UsageError` naming ``--tta``)."""
    if tta not in TTA_CHOICES:
        raise UsageError(f"--tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")


def check_planes(planes: tuple[str, ...]) -> None:
    """Refuse an empty, repeated or unknown plane list (a :class:`UsageError` naming ``--planes``)."""
    if not planes or len(set(planes)) != len(planes) or any(p not in PLANES for p in planes):
        raise UsageError(f"--planes {','.join(planes)!r}: give one or more of {', '.join(PLANES)}, each once")


def _default_batch(device: Any) -> int | None:
    """Slices per pass: None on CPU (sized per volume from the slice area, see ``infer``); on CUDA from free memory
    (≈ 60 MB per 256² slice at fp32), ≤ 64."""
    if device.type != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(64, free * 0.5 // (60 * 2**20))))


def _offset_progress(
    on_progress: Callable[[int, int], None] | None, index: int, count: int
) -> Callable[[int, int], None] | None:
    """Report plane ``index`` of ``count`` (each of ``total`` slices) as part of one count-times-longer job."""
    if on_progress is None or count == 1:
        return on_progress
    return lambda done, total: on_progress(index * total + done, count * total)


class Denoiser:
    """A loaded C2S model.

    Args:
        model: a model name (``default``, others in ``weights/`` or ``$C2S_WEIGHTS``) or a ``.safetensors`` path.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: slices per forward pass (the output does not depend on it).
        threads: CPU threads for torch (None: torch's default).
    Example:
        >>> den = Denoiser()                       # doctest: +SKIP
        >>> clean = den.denoise(noisy_array)       # (X, Y, Z) float array, σ estimated  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path = "default",
        device: str = "auto",
        *,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        from c2s_cli.infer import pick_device

        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads must be ≥ 1, got {threads}")
            torch.set_num_threads(threads)
        try:
            self.device = pick_device(device)
        except (ValueError, RuntimeError) as exc:
            raise UsageError(str(exc)) from None
        t0 = time.perf_counter()
        self.path, expected = resolve_model(str(model))
        self.sha256 = sha256(self.path)
        if expected is not None and expected != self.sha256:
            raise C2SError(
                f"{self.path}: SHA-256 {self.sha256[:16]}… does not match the registry ({expected[:16]}…); "
                "the shipped weights are damaged, reinstall c2s"
            )
        self.model, self.config, self.meta = load_model(self.path)
        self.model.to(self.device)
        self.load_seconds = time.perf_counter() - t0
        self.batch_size = batch_size or _default_batch(self.device)
        self.bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    @property
    def name(self) -> str:
        return self.path.stem

    def estimate(self, data: NDArray[np.floating], *, coils: int = 1, slice_axis: int = 2) -> NoiseEstimate:
        """Noise estimate of a 3D magnitude volume (image units)."""
        try:
            return estimate_noise(data, coils=coils, slice_axis=slice_axis)
        except ValueError as exc:
            raise InputError(f"cannot estimate the noise: {exc}; pass --sigma") from None

    def denoise(
        self,
        x: Volume | NDArray[np.floating],
        sigma: float | None = None,
        *,
        strength: float = 1.0,
        use_vst: bool | None = None,
        coils: int | None = None,
        slice_axis: int | None = None,
        guides: list[NDArray[np.floating]] | None = None,
        report: DenoiseReport | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        tta: int = 1,
        planes: tuple[str, ...] = ("axial",),
    ) -> NDArray[np.float32]:
        """Denoise a (X, Y, Z) or (X, Y, Z, T) magnitude volume; returns the same shape in the same units.

        Args:
            x: a :class:`Volume` or an array (image units).
            sigma: noise std in image units (None: estimated per 3D volume).
            strength: multiplies σ for the network's conditioning (1 = as estimated).
            use_vst / coils: override the model's noise-domain settings.
            slice_axis: axis to slice along (default: the volume's acquisition axis, or 2 for arrays).
            guides: co-registered other contrasts (same shape) for multi-contrast models.
            tta: test-time augmentation: the mean over 1, 2, 4 or 8 in-plane flips / transposes of each slice
                (that many forward passes; benchmarks/README.md measures the gain).
            planes: denoise slice by slice along each of these planes ("axial" = ``slice_axis``, "coronal" and
                "sagittal" = the other two axes) and return the mean (view aggregation; that many times the work).
        """
        from c2s_cli.data import plane_axes
        from c2s_cli.infer import denoise_array

        data = x.data if isinstance(x, Volume) else np.asarray(x, dtype=np.float32)
        axis = slice_axis if slice_axis is not None else (x.slice_axis if isinstance(x, Volume) else 2)
        if data.ndim not in (3, 4):
            raise InputError(f"expected a 3D or 4D volume, got shape {data.shape}")
        if not _all_finite(data):
            raise InputError(f"{getattr(x, 'path', 'input')}: contains NaN or infinite voxels")
        if np.iscomplexobj(data):
            raise InputError("complex data: give the magnitude image")
        if data.min() < 0 and (use_vst if use_vst is not None else self.config.noise.vst):
            raise InputError(
                f"{getattr(x, 'path', 'input')}: negative intensities, not a magnitude image; use --no-vst for "
                "signed data"
            )
        n_guides = len(guides or [])
        if n_guides != self.config.model.guides:
            if self.config.model.guides == 0:
                raise UsageError(f"model {self.name} is single-contrast; it does not take --guide")
            raise UsageError(f"model {self.name} needs {self.config.model.guides} --guide contrast(s), got {n_guides}")
        vst_on = self.config.noise.vst if use_vst is None else use_vst
        n_coils = self.config.noise.coils if coils is None else coils
        if strength <= 0:
            raise UsageError(f"--strength must be > 0, got {strength}")
        check_tta(tta)
        check_planes(planes)
        report = report if report is not None else DenoiseReport()
        vols = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
        out = np.empty_like(data, dtype=np.float32) if data.ndim == 4 else data
        for t, v in enumerate(vols):
            if not np.any(v):
                raise InputError(f"{getattr(x, 'path', 'input')}: volume {t} is all zeros")
            t0 = time.perf_counter()
            if sigma is None:
                est = self.estimate(v, coils=n_coils, slice_axis=axis)
            else:
                if sigma <= 0:
                    raise UsageError(f"--sigma must be > 0, got {sigma}")
                est = NoiseEstimate(sigma=float(sigma), method="user", coils=n_coils)
            report.noise.append(est)
            report.seconds["noise"] = report.seconds.get("noise", 0.0) + time.perf_counter() - t0
            g = [(gv if gv.ndim == 3 else gv[..., t], self.estimate(gv if gv.ndim == 3 else gv[..., t]).sigma) for gv in guides or []]
            t0 = time.perf_counter()
            axes = plane_axes(axis)

            def along(i: int) -> NDArray[np.float32]:  # slice-wise denoising along planes[i]
                return denoise_array(
                    self.model,
                    v,
                    est.sigma,
                    use_vst=vst_on,
                    coils=n_coils,
                    strength=strength,
                    slice_axis=axes[planes[i]],
                    guides=g or None,
                    batch_size=self.batch_size,
                    device=self.device,
                    bf16=self.bf16,
                    on_progress=_offset_progress(on_progress, i, len(planes)),
                    tta=tta,
                )

            res = along(0)
            for i in range(1, len(planes)):
                res += along(i)
            if len(planes) > 1:
                res /= np.float32(len(planes))
            if not _all_finite(res):
                raise C2SError("the network produced NaN or infinite values")
            report.seconds["inference"] = report.seconds.get("inference", 0.0) + time.perf_counter() - t0
            if data.ndim == 3:
                out = res
            else:
                out[..., t] = res
        return out

    def adapted(
        self,
        data: NDArray[np.floating],
        steps: int,
        *,
        sigma: float | None = None,
        slice_axis: int = 2,
        guides: list[NDArray[np.floating]] | None = None,
        seed: int = 0,
        lr: float = 2e-4,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> Denoiser:
        """A copy of this denoiser fine-tuned on one scan with the GDSM loss (self-supervised, nothing but the scan).

        Args:
            data: (X, Y, Z) magnitude volume in image units.
            steps: optimisation steps (a few hundred are minutes on a CPU).
            lr: peak learning rate (small: this fine-tunes trained weights).
        """
        import copy
        import dataclasses

        from c2s_cli.data import Normalizer, make_train_volume
        from c2s_cli.train import train

        if steps < 1:
            raise UsageError(f"--adapt must be ≥ 1, got {steps}")
        data = np.asarray(data, dtype=np.float32)
        s = sigma if sigma is not None else self.estimate(data, coils=self.config.noise.coils, slice_axis=slice_axis).sigma
        norm = Normalizer.fit(data, s, use_vst=self.config.noise.vst, coils=self.config.noise.coils)
        gn = [Normalizer.fit(g, self.estimate(g).sigma, use_vst=self.config.noise.vst).forward(g) for g in guides or []]
        planes = ("axial", "coronal", "sagittal") if min(data.shape) >= 16 else ("axial",)
        tv = make_train_volume(data, norm, slice_axis=slice_axis, planes=planes, name="adapt", guides=gn)
        cfg = dataclasses.replace(
            self.config,
            train=dataclasses.replace(
                self.config.train, steps=steps, lr=lr, warmup=min(20, max(1, steps // 5)), val_fraction=0.0,
                patch_size=64, batch_size=8, ema_halflife=max(5, steps // 5), planes=planes, seed=seed,
                log_every=max(1, steps // 20), add_noise=None,
            ),
        )
        res = train(cfg, [tv], None, None, data_summary={}, init=self.model, on_log=on_log)  # trains a copy
        other = copy.copy(self)
        other.model = res.model.eval().to(self.device)
        return other

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "path": str(self.path), "sha256": self.sha256, "device": str(self.device)}
