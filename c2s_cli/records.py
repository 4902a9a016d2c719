"""What the array core reports about one call (torch-free, so that the layers above can import it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from c2s_cli.noise.domain import NoiseDomain
    from c2s_cli.noise.policy import NoiseFit


@dataclass
class DenoiseReport:
    """What happened to one 3D volume (or each 3D volume of a 4D one): its noise fit and the timings (seconds)."""

    domains: list[NoiseDomain] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    fit: NoiseFit | None = None  # the policy's fit the domains came from
    rank_map: Any = None  # a series in the context mode, when asked for: the local model's rank (X, Y, Z) int16
    series_start: dict[str, str] | None = None  # the context mode: the model it trained from (name, SHA-256)
    series_steps: int | None = None  # the context mode: its training steps on the series
    series_floor_spread: float | None = None  # the context mode: the inverse's averaging at the Rician floor (σ units)
    series_prediction_weight: float | None = None  # the context mode: the move towards the prediction from the others
    series_subspace_weight: float | None = None  # the context mode: a diffusion series' move towards its local subspace
    blends: list[Any] = field(default_factory=list)  # per frame: the self-similarity blend's fit (selfsim.BlendFit)

    @property
    def noise(self) -> list[dict[str, object]]:
        """Per-frame noise summaries (σ, its source, diagnostics and warnings)."""
        return [d.summary() for d in self.domains]
