"""Every default of c2s, once, in frozen dataclasses.

They are written into a run folder's ``config.json`` and into each checkpoint's metadata, and read back from them.
Units: σ and τ are in *normalised* intensity units (the volume divided by its scale, see ``c2s_cli.data``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TTA_CHOICES = (1, 2, 4, 8)  # test-time augmentation: in-plane flips / transposes averaged at inference
PLANES = ("axial", "coronal", "sagittal")  # axial = the acquisition's slice axis; coronal, sagittal = the other two
PRECISIONS = ("auto", "fp32", "bf16")
# a 4-D series: each volume alone ("volumes"), or with the other volumes as context after training on the series
# itself ("context", c2s_cli.series)
SERIES_MODES = ("auto", "volumes", "context")  # how a 4-D series is denoised (DenoiseOptions.series_mode)


def check_tta(tta: int) -> None:
    """Refuse a test-time augmentation count other than 1, 2, 4 or 8 (ValueError naming ``tta``)."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")


def check_precision(precision: str) -> None:
    """Refuse an inference precision other than auto, fp32 or bf16 (ValueError naming ``precision``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")


def check_planes(planes: tuple[str, ...]) -> None:
    """Refuse an empty, repeated or unknown plane list (ValueError naming ``planes``)."""
    if not planes or len(set(planes)) != len(planes) or any(p not in PLANES for p in planes):
        raise ValueError(f"planes {','.join(planes)!r}: give one or more of {', '.join(PLANES)}, each once")


@dataclass(frozen=True)
class ModelConfig:
    """Noise-conditioned 2D U-Net (backbone) and its preconditioning.

    ``context`` neighbouring slices on each side enter as extra channels (2.5D); ``volumes`` other volumes of the same
    4-D series (in the target's noise domain, their noise independent of the target's) add one channel each, after
    them (:mod:`c2s_cli.series`); ``guides`` co-registered other contrasts add one channel each, last (multi-contrast
    C2S). The output is the centre slice of the target. ``nonlocal_radius`` > 0 adds one more channel, last: a
    non-local-means estimate of the centre slice from the network's own input (:mod:`c2s_cli.model.nonlocal_means`,
    searched over ±radius pixels in every target slice), a deterministic function of (x, σ), so the GDSM objective
    stays exact.
    """

    context: int = 1
    volumes: int = 0
    guides: int = 0
    guide_names: tuple[str, ...] = ()
    channels: tuple[int, ...] = (16, 32, 64, 128)
    unshuffle: int = 1  # pixel-unshuffle factor f: the U-Net runs at 1/f resolution on f² sub-images (FFDNet)
    emb_dim: int = 64
    attention: bool = False  # noise-conditioned self-attention at the lowest resolution (NVC-MSA)
    attention_heads: int = 4
    sigma_data: float = 0.5  # std of the normalised clean images, for the EDM preconditioning
    nonlocal_radius: int = 0  # > 0: a non-local-means channel searched over ±radius pixels (0: none)

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1 + self.volumes + self.guides + (1 if self.nonlocal_radius else 0)

    def validate(self) -> None:
        """Refuse values no c2s model can have, before a network is built (a damaged or hostile model file must
        not allocate gigabytes or yield an all-zero output). Raises ValueError naming the field."""
        checks = {
            "context": 0 <= self.context <= 8,
            "volumes": isinstance(self.volumes, int) and 0 <= self.volumes <= 16,
            "guides": 0 <= self.guides <= 8 and len(self.guide_names) in (0, self.guides),
            "channels": 1 <= len(self.channels) <= 6 and all(1 <= int(c) <= 1024 for c in self.channels),
            "unshuffle": 1 <= self.unshuffle <= 8,
            "emb_dim": 1 <= self.emb_dim <= 1024,
            "attention_heads": 1 <= self.attention_heads <= 64,
            "sigma_data": isinstance(self.sigma_data, (int, float)) and 1e-3 <= float(self.sigma_data) <= 100,
            "nonlocal_radius": isinstance(self.nonlocal_radius, int) and 0 <= self.nonlocal_radius <= 8,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"ModelConfig.{bad[0]} = {getattr(self, bad[0])!r} is out of range")
        params = sum(int(a) * int(b) * 9 for a, b in zip(self.channels, self.channels[1:])) * 4
        if params > 200_000_000:
            raise ValueError(f"ModelConfig.channels = {self.channels!r} is implausibly large")

    @staticmethod
    def large() -> ModelConfig:
        """A wider option for GPUs."""
        return ModelConfig(channels=(64, 128, 192, 256), emb_dim=128, attention=True)


@dataclass(frozen=True)
class GDSMConfig:
    """Generalised denoising score matching (C2S, Eq. 3 with the τ reparameterisation).

    τ ~ U(0, tau_max·σ_d] (relative to each sample's σ_d, so one setting serves every noise level);
    σ_tg = target_fraction·σ_d (0: clean target; > 0: detail refinement);
    w = (τ² + σ_d²)^alpha · γ^(−gamma_power). The paper's weight is the first factor; the second (our addition,
    chosen by ablation, see benchmarks/README.md) compensates the γ² that multiplies the network's error in the
    loss, so small τ — the levels next to the one used at inference — are not starved of gradient.
    """

    tau_max: float = 1.0
    alpha: float = -1.0
    gamma_power: float = 1.0
    target_fraction: float = 0.0


@dataclass(frozen=True)
class NoiseConfig:
    """How the noise level is obtained and which domain the network works in."""

    vst: bool = True  # Rician / nc-χ variance stabilisation (magnitude data)
    coils: int = 1  # effective coil count N (1 = Rician)
    sigma: float | None = None  # user override, image units


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    patch_size: int = 96
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 1.0
    ema_halflife: int = 200  # steps; EMA decay = 0.5 ** (1 / ema_halflife)
    schedule: str = "cosine"  # cosine | constant
    planes: tuple[str, ...] = ("axial",)  # axial (the slice axis), coronal, sagittal: the other two
    augment: bool = True  # flips, 90° rotations, intensity scaling
    val_fraction: float = 0.05
    seed: int = 0
    bf16: bool = False
    guide_dropout: float = 0.0
    # contrast inversion: probability of training on 1 − y (network units) instead of y; the Gaussian noise of the
    # VST domain is symmetric, so the GDSM target stays exact and the model sees dark-on-bright and bright-on-dark
    invert: float = 0.0
    # synthetic Rician noise added to training volumes: (min, max) fraction of the 99.5th percentile, or None
    add_noise: tuple[float, float] | None = None
    noisy_copies: int = 1  # noisy copies per input volume with add_noise
    log_every: int = 25
    checkpoint_every: int = 500
    # self-distillation of the start model's 3-plane average (c2s_cli.distill; needs --init): λ of the term (0: off),
    # the volumes it is drawn from (name contains distill_match) and the teacher's TTA
    distill_planes: float = 0.0
    distill_match: str = "mni152"
    distill_tta: int = 2


@dataclass(frozen=True)
class SelfSimilarity:
    """The self-similarity blend of a plain model's output (:mod:`c2s_cli.selfsim`): f = D + a·(NL − D), with NL
    the non-local-means estimate of the frame in network units and a chosen per frame by SURE.

    radius / h: NL's in-plane search radius (pixels, in the slice and its two neighbours) and filtering strength
    (units of σ_d); depths: NL's patches, 3×3 in-plane (1) and/or 3×3×3 (3): SURE fits a weight for each and
    keeps the one it expects to remove more error (session 22); fit_slices: slices (evenly spaced along the
    acquisition axis) on which SURE is evaluated, in fp32, with one extra network pass each; epsilon: the
    Monte-Carlo divergence step (units of σ_d); max_weight: the largest weight; seed: the Rademacher probe's
    generator seed (the weight is deterministic).
    """

    radius: int = 2
    h: float = 1.0
    depths: tuple[int, ...] = (1, 3)
    fit_slices: int = 12
    epsilon: float = 0.01
    max_weight: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        depths_ok = 0 < len(self.depths) == len(set(self.depths)) and all(d in (1, 3) for d in self.depths)
        checks = {"radius": 1 <= self.radius <= 4, "h": 0 < self.h <= 10, "depths": depths_ok,
                  "fit_slices": 1 <= self.fit_slices <= 256,
                  "epsilon": 0 < self.epsilon <= 1, "max_weight": 0 <= self.max_weight <= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"SelfSimilarity.{bad[0]} = {getattr(self, bad[0])!r} is out of range")


SELF_SIMILARITY = SelfSimilarity()  # the default blend (Denoiser.denoise)
# the series (context) mode's: one fit per shell on 3 slices, NL radius 1 (session 19, chosen on the validation phantom
# of the training anatomy: 3 and 9 fit slices scored the same; radius 1 saved 1 s per 65 volumes)
SERIES_SELF_SIMILARITY = SelfSimilarity(radius=1, depths=(1,), fit_slices=3)

@dataclass(frozen=True)
class DenoiseOptions:
    """Every option of one denoising job (``Denoiser.denoise_file``; the CLI, ``serve`` and ``bids`` fill it).

    σ in image units; None for ``sigma`` / ``coils`` / ``vst`` means "estimate" / "the model's setting". Paths are
    extra outputs (``residual``: input − output as NIfTI; ``preview``: a PNG montage; ``save_sigma_map``: the σ used
    per voxel) or co-registered inputs (``mask``, ``guides``, ``sigma_map``) on the input's grid.
    """

    sigma: float | None = None
    coils: int | None = None
    vst: bool | None = None
    strength: float = 1.0
    tta: int = 1
    planes: tuple[str, ...] = ("axial",)
    slice_axis: int | None = None
    series: str | None = None
    dtype: str = "float32"  # NIfTI output of a NIfTI input: float32 or "input"
    mask: Path | None = None
    guides: tuple[Path, ...] = ()
    adapt: int = 0  # GDSM fine-tuning steps on the scan itself before denoising
    adapt_lr: float = 2e-4
    # a 4-D series: "volumes" (each alone), "context" (the other volumes as input channels, GDSM training on the
    # series itself for series_steps steps; the gradient table from the NIfTI's .bval / .bvec beside it or the DICOM
    # diffusion attributes, else neighbours in time) or "auto": context for a diffusion series (one with a gradient
    # table) when no option it cannot take is given, volumes otherwise (fMRI: the context mode measured an attenuated
    # and spread activation; benchmarks/README.md)
    series_mode: str = "auto"
    series_steps: int | None = None  # None: the start model's (c2s_cli.series.default_steps)
    sigma_map: Path | None = None  # σ per voxel (NIfTI on the input's grid): spatially varying noise
    estimate_sigma_map: bool = False  # estimate the σ map from the scan itself (noise.sigma_map)
    # given neither sigma nor a map: a 4-D series of ≥ 8 volumes gets one map over its volumes (MP-PCA, as
    # dwidenoise; measured no loss on white noise, +1.2 to +3.0 dB on varying noise), a 3-D volume whose whole-scan
    # estimate is in doubt gets the map's verdict (noise.sigma_map.choose_noise; benchmarks/README.md); False: one σ
    # per volume by the whole-scan estimate alone (CLI --sigma-map none)
    default_sigma_map: bool = True
    save_sigma_map: Path | None = None  # write the σ per voxel that was used (NIfTI)
    save_rank_map: Path | None = None  # a series in the context mode: the local model's rank (NIfTI, 3-D)
    residual: Path | None = None
    preview: Path | None = None
    force: bool = False
    threads: int | None = None  # gzip threads for .nii.gz outputs
    # complex data (a complex NIfTI input needs neither): the phase of a magnitude input (radians or Siemens
    # −4096 … 4095) or the imaginary part of a real input, on its grid; complex_out writes the denoised complex image
    # (NIfTI complex64) instead of its magnitude
    phase: Path | None = None
    imaginary: Path | None = None
    complex_out: bool = False
    # blend a plain model's output with the frame's non-local-means estimate by the weight SURE chooses per frame
    # (c2s_cli.selfsim, SELF_SIMILARITY); False: the network's output alone (CLI --no-self-similarity)
    self_similarity: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field (before any file is read)."""
        if self.sigma is not None and not (self.sigma > 0 and self.sigma < float("inf")):
            raise ValueError(f"sigma must be a positive number, got {self.sigma}")
        if self.sigma is not None and self.sigma_map is not None:
            raise ValueError("sigma and sigma_map both given: give one")
        if self.estimate_sigma_map and (self.sigma is not None or self.sigma_map is not None):
            raise ValueError("sigma_map auto estimates the map: give it without sigma and without a map file")
        if self.coils is not None and self.coils < 1:
            raise ValueError(f"coils must be ≥ 1, got {self.coils}")
        if not self.strength > 0:
            raise ValueError(f"strength must be > 0, got {self.strength}")
        check_tta(self.tta)
        check_planes(self.planes)
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.dtype not in ("float32", "input"):
            raise ValueError(f"dtype must be float32 or input, got {self.dtype!r}")
        if self.adapt < 0:
            raise ValueError(f"adapt must be ≥ 0, got {self.adapt}")
        if self.series_mode not in SERIES_MODES:
            raise ValueError(f"series_mode must be {', '.join(SERIES_MODES)}, got {self.series_mode!r}")
        if self.series_steps is not None and self.series_steps < 0:
            raise ValueError(f"series_steps must be ≥ 0, got {self.series_steps}")
        if self.phase is not None and self.imaginary is not None:
            raise ValueError("phase and imaginary both given: give the phase of a magnitude input or the imaginary "
                             "part of a real input")
        if (self.phase is not None or self.imaginary is not None) and self.complex_conflict():
            raise ValueError(f"{self.complex_conflict()} is not available with complex input (the noise is Gaussian "
                             "once the phase is removed)")
        if self.series_mode == "context" and self.context_conflict():
            raise ValueError(f"{self.context_conflict()} is not available with series_mode context (it trains on the "
                             "series itself); give series_mode volumes")

    def complex_conflict(self) -> str | None:
        """The first option complex data cannot take (coils and vst: the noise model of magnitudes; adapt; guides;
        dtype input), or None."""
        for name, value, plain in (("coils", self.coils, None), ("vst", self.vst or None, None),
                                   ("adapt", self.adapt, 0), ("guides", self.guides, ()), ("dtype", self.dtype, "float32")):
            if value != plain:
                return name
        return None

    def context_conflict(self) -> str | None:
        """The first option the series context mode cannot take (planes, tta, adapt, guides), or None."""
        for name, value, plain in (("planes", self.planes, ("axial",)), ("tta", self.tta, 1), ("adapt", self.adapt, 0),
                                   ("guides", self.guides, ())):
            if value != plain:
                return name
        return None

    def series_mode_for(self, has_table: bool) -> str:
        """The mode a 4-D series gets: ``series_mode``, with "auto" resolved (context for a diffusion series with a
        gradient table and no option the context mode cannot take; volumes otherwise)."""
        if self.series_mode != "auto":
            return self.series_mode
        return "context" if has_table and self.context_conflict() is None else "volumes"


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run or a checkpoint needs to be reproduced."""

    model: ModelConfig = field(default_factory=ModelConfig)
    gdsm: GDSMConfig = field(default_factory=GDSMConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunConfig:
        return RunConfig(
            model=_build(ModelConfig, d.get("model", {})),
            gdsm=_build(GDSMConfig, d.get("gdsm", {})),
            noise=_build(NoiseConfig, d.get("noise", {})),
            train=_build(TrainConfig, d.get("train", {})),
        )


def _build(cls: type[T], values: dict[str, Any]) -> T:
    """Instantiate a config dataclass from JSON values (lists back to tuples; unknown keys are an error)."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)


def check_options(options: DenoiseOptions) -> None:
    """Validate :class:`DenoiseOptions` (a :class:`~c2s_cli.errors.UsageError` naming the field)."""
    from c2s_cli.errors import UsageError

    try:
        options.validate()
    except ValueError as exc:
        msg = str(exc)
        raise UsageError(msg, param=msg.split(" ", 1)[0]) from None
