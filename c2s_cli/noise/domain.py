"""The noise domain of one 3-D frame: where σ comes from, and the map image units ↔ network units.

One object, fitted once per 3-D frame (Style 3), used by ``info``, ``denoise`` (every plane and every TTA pass),
``--adapt``, ``train``, the reference evaluation and guides:

* σ: the user's value, or the estimate of :func:`~c2s_cli.noise.estimate.estimate_noise` (image units, the std of
  the noise in each real channel);
* ``coils`` N of the non-central χ model (1 = Rician) and whether the VST is applied;
* the saturation level (voxels clipped by the scanner are passed through unchanged);
* the scale: the network sees ``f_σ(y) / scale`` (VST) or ``y / scale`` (no VST), intensities ≈ [0, 1], noise std
  σ_d = 1/scale (VST) or σ/scale.

Averages over views (planes and TTA passes) are taken in **image units**: each view is mapped back by the exact
unbiased inverse, and the mean of unbiased estimates of ν is unbiased. Averaging in network units and inverting
once is not (the inverse is nonlinear: Jensen), and it measured 0.01–0.04 dB lower on the quality cases
(``--planes axial,coronal,sagittal``, default and wide; benchmarks/README.md). Both planes and TTA therefore share one
fit and one rule.

Guides (other contrasts of multi-contrast models) get one convention: their own domain, fitted on the guide with
the target's VST setting and coil count (same coil array, same scanner), σ estimated on the guide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from c2s_cli.noise import vst
from c2s_cli.noise.estimate import NoiseEstimate, estimate_noise, saturation_level, valid_mask


class NoiseEstimateError(ValueError):
    """The scan cannot support a noise estimate (too few usable voxels); the caller should ask for ``sigma``."""


@dataclass(frozen=True)
class NoiseDomain:
    """Image units ↔ network units for one 3-D frame.

    Attributes:
        sigma: noise std in image units (> 0).
        scale: divisor after the (optional) VST, so that the network sees ≈ [0, 1].
        use_vst: apply the Rician / nc-χ variance-stabilising transform.
        coils: effective coil count N (1 = Rician).
        saturation: the scanner's clipping level of this frame, or None.
        estimate: the noise estimate σ came from (None when the user gave σ).
    """

    sigma: float
    scale: float
    use_vst: bool
    coils: int = 1
    saturation: float | None = None
    estimate: NoiseEstimate | None = field(default=None, compare=False)

    @property
    def method(self) -> str:
        """Where σ came from: "user", "background" or "object"."""
        return "user" if self.estimate is None else self.estimate.method

    @property
    def sigma_d(self) -> float:
        """Noise std in network units (σ_d of the paper)."""
        return (1.0 if self.use_vst else self.sigma) / self.scale

    @staticmethod
    def identity(sigma_d: float) -> NoiseDomain:
        """The domain of data already in network units with noise σ_d (no VST, scale 1): for scripts and tests
        that work in network units."""
        return NoiseDomain(float(sigma_d), 1.0, False)

    @staticmethod
    def fit(
        data: NDArray[np.floating],
        sigma: float | None = None,
        *,
        use_vst: bool = True,
        coils: int = 1,
        slice_axis: int = 2,
        estimate: NoiseEstimate | None = None,
    ) -> NoiseDomain:
        """Fit the domain of ``data`` (X, Y, Z), image units.

        Args:
            sigma: the user's noise std (image units, > 0); None: estimated from ``data``.
            use_vst / coils: the noise model (magnitude data: VST on; N coils of a sum of squares).
            slice_axis: the through-plane axis (wavelet estimates are taken in the other two).
            estimate: an estimate already computed on ``data`` (reused, not recomputed).
        Raises:
            ValueError: ``sigma`` is not a positive finite number (names the parameter ``sigma``).
            NoiseEstimateError: σ must be estimated and the data cannot support it.
        """
        if sigma is not None:
            if not np.isfinite(sigma) or sigma <= 0:
                raise ValueError(f"sigma must be a positive number, got {sigma}")
            est = None
            s = float(sigma)
        else:
            if estimate is None:
                try:
                    estimate = estimate_noise(data, coils=coils, slice_axis=slice_axis)
                except ValueError as exc:
                    raise NoiseEstimateError(str(exc)) from None
            est, s = estimate, float(estimate.sigma)
        flat = np.ravel(np.asarray(data), order="K")  # a view for C- or F-ordered arrays
        step = max(1, flat.size // 1_000_000)  # a strided subsample bounds memory and time on big volumes
        sample = flat[::step]
        valid = valid_mask(sample)
        values = sample[valid] if valid.any() else sample
        stab = vst.forward(values, s, coils) if use_vst else values
        scale = float(np.percentile(stab, 99.5))
        if not np.isfinite(scale) or scale <= 0:
            scale = float(np.max(np.abs(stab))) or 1.0
        return NoiseDomain(s, scale, use_vst, coils, saturation_level(data), est)

    def forward(self, data: NDArray[np.floating]) -> NDArray[np.float32]:
        """Image units → network units (same shape)."""
        out = vst.forward(data, self.sigma, self.coils) if self.use_vst else np.asarray(data, np.float32)
        return (out / self.scale).astype(np.float32)

    def inverse(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Network units → image units (the exact unbiased inverse with the VST)."""
        e = np.asarray(x, np.float32) * np.float32(self.scale)
        return vst.inverse(e, self.sigma, self.coils) if self.use_vst else e

    def passthrough(self, data: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Voxels returned unchanged: exact zeros, non-finite and saturated voxels (part of this frame allowed)."""
        return ~valid_mask(data, self.saturation)

    def summary(self) -> dict[str, object]:
        """Plain-dict description (for reports): σ, its source, the noise model and the estimator's diagnostics."""
        d: dict[str, object] = {"sigma": self.sigma, "method": self.method, "coils": self.coils, "vst": self.use_vst,
                                "sigma_d": self.sigma_d}
        if self.estimate is not None:
            d.update({k: v for k, v in self.estimate.to_dict().items() if k not in d})
        else:
            d["warnings"] = []
        return d
