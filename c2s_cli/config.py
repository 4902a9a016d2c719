"""Every default of c2s, once, in frozen dataclasses.

They are written into a run folder's ``config.json`` and into each checkpoint's metadata, and read back from them.
Units: σ and τ are in *normalised* intensity units (the volume divided by its scale, see ``c2s_cli.data``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

TTA_CHOICES = (1, 2, 4, 8)  # test-time augmentation: in-plane flips / transposes averaged at inference
PLANES = ("axial", "coronal", "sagittal")  # axial = the acquisition's slice axis; coronal, sagittal = the other two


@dataclass(frozen=True)
class ModelConfig:
    """Noise-conditioned 2D U-Net (backbone) and its preconditioning.

    ``context`` neighbouring slices on each side enter as extra channels (2.5D); ``guides`` co-registered other
    contrasts add one channel each (multi-contrast C2S). The output is the centre slice of the target contrast.
    """

    context: int = 1
    guides: int = 0
    guide_names: tuple[str, ...] = ()
    channels: tuple[int, ...] = (16, 32, 64, 128)
    unshuffle: int = 1  # pixel-unshuffle factor f: the U-Net runs at 1/f resolution on f² sub-images (FFDNet)
    emb_dim: int = 64
    attention: bool = False  # noise-conditioned self-attention at the lowest resolution (NVC-MSA)
    attention_heads: int = 4
    sigma_data: float = 0.5  # std of the normalised clean images, for the EDM preconditioning

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1 + self.guides

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
