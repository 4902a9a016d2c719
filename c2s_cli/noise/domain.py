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

import dataclasses
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
        sigma_map: spatially varying noise: σ per voxel (image units, the frame's shape), or None. With a map the
            VST is applied with the local σ (``f_σ(y) = f_1(y/σ(x))``), so the network sees unit-σ noise everywhere
            and one σ_d; without the VST the frame is divided by the relative map σ(x)/σ. ``sigma`` is then the
            map's median over the valid voxels (what reports show).
        floor_spread: the uncertainty (std, units of σ) the exact unbiased inverse averages over
            (:func:`c2s_cli.noise.vst.inverse`'s ``spread``): 0, the plain inverse; the series mode sets it
            (:data:`c2s_cli.series.FLOOR_SPREAD`) so that signals at the Rician floor come out small and positive.
    """

    sigma: float
    scale: float
    use_vst: bool
    coils: int = 1
    saturation: float | None = None
    estimate: NoiseEstimate | None = field(default=None, compare=False)
    sigma_map: NDArray[np.float32] | None = field(default=None, compare=False, repr=False)
    source: str | None = field(default=None, compare=False)
    floor_spread: float = 0.0

    @property
    def method(self) -> str:
        """Where σ came from: ``source`` when the noise policy set it ("map (estimated)", "map (series)",
        "object (σ-map blocks)", "background (map not trusted)"), else "user", "background" or "object"; "map
        (user)" with a given σ map."""
        if self.source is not None:
            return self.source
        if self.sigma_map is not None:
            return "map (user)"
        return "user" if self.estimate is None else self.estimate.method

    def with_source(self, source: str) -> NoiseDomain:
        """The same domain, recording where its σ came from (:mod:`c2s_cli.noise.policy`)."""
        return dataclasses.replace(self, source=source)

    def local(self, axis: int, index: object) -> float | NDArray[np.float32]:
        """σ (image units) for ``np.moveaxis(frame, axis, 0)[index]``: the scalar, or the matching block of the map."""
        if self.sigma_map is None:
            return self.sigma
        return np.moveaxis(self.sigma_map, axis, 0)[index]  # type: ignore[index]

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
        sigma_map: NDArray[np.floating] | None = None,
    ) -> NoiseDomain:
        """Fit the domain of ``data`` (X, Y, Z), image units.

        Args:
            sigma: the user's noise std (image units, > 0); None: estimated from ``data``.
            use_vst / coils: the noise model (magnitude data: VST on; N coils of a sum of squares).
            slice_axis: the through-plane axis (wavelet estimates are taken in the other two).
            estimate: an estimate already computed on ``data`` (reused, not recomputed).
            sigma_map: σ per voxel (image units, ``data``'s shape): spatially varying noise. Non-finite or ≤ 0
                entries (outside a tool's mask) take the median of the positive ones; ``sigma`` is then ignored.
        Raises:
            ValueError: ``sigma`` is not a positive finite number (names the parameter ``sigma``).
            NoiseEstimateError: σ must be estimated and the data cannot support it.
        """
        smap = None
        if sigma_map is not None:
            smap = clean_map(sigma_map, np.shape(data))
            sigma = float(np.median(smap))
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
        order = "F" if np.isfortran(np.asarray(data)) else "C"  # a view for C- or F-ordered arrays (NIfTI is F)
        flat = np.ravel(np.asarray(data), order=order)
        step = max(1, flat.size // 1_000_000)  # a strided subsample bounds memory and time on big volumes
        sample = flat[::step]
        valid = valid_mask(sample)
        values = sample[valid] if valid.any() else sample
        if est is not None:  # a degenerate estimate (e.g. a plateau of identical values) is not a noise level
            top = float(np.max(np.abs(values))) if values.size else 0.0
            if not s > 1e-6 * top:
                raise NoiseEstimateError(f"the estimate σ = {s:.3g} is implausibly small against intensities up "
                                         f"to {top:.3g}")
        local: float | NDArray[np.float32] = s
        if smap is not None:
            mflat = np.ravel(smap, order=order)[::step]  # the same traversal as the data's
            local = mflat[valid] if valid.any() else mflat
        stab = vst.forward(values, local, coils) if use_vst else values * np.float32(s) / local
        scale = float(np.percentile(stab, 99.5))
        if not np.isfinite(scale) or scale <= 0:
            scale = float(np.max(np.abs(stab))) or 1.0
        if not np.isfinite(scale):
            raise ValueError(f"sigma = {s:.3g} is too small for intensities up to {float(np.max(np.abs(values))):.3g}")
        return NoiseDomain(s, scale, use_vst, coils, saturation_level(data), est, smap)

    def _sigma(self, data: NDArray[np.floating], sigma: float | NDArray[np.floating] | None) -> object:
        if sigma is not None:
            return sigma
        if self.sigma_map is not None:
            if np.shape(data) != self.sigma_map.shape:
                raise ValueError("a part of a frame needs its block of the σ map (NoiseDomain.local)")
            return self.sigma_map
        return self.sigma

    def forward(self, data: NDArray[np.floating], sigma: float | NDArray[np.floating] | None = None,
                ) -> NDArray[np.float32]:
        """Image units → network units (same shape). ``sigma``: the σ block matching ``data`` when it is a part of
        the frame and the domain has a map (:meth:`local`)."""
        s = self._sigma(data, sigma)
        if self.use_vst:
            out = vst.forward(data, s, self.coils)
        else:
            out = np.asarray(data, np.float32)
            if self.sigma_map is not None:
                out = out * (np.float32(self.sigma) / np.asarray(s, np.float32))
        return (out / self.scale).astype(np.float32)

    def inverse(self, x: NDArray[np.floating], sigma: float | NDArray[np.floating] | None = None,
                ) -> NDArray[np.float32]:
        """Network units → image units (the exact unbiased inverse with the VST, with the local σ)."""
        s = self._sigma(x, sigma)
        e = np.asarray(x, np.float32) * np.float32(self.scale)
        if self.use_vst:
            return vst.inverse(e, s, self.coils, self.floor_spread)
        if self.sigma_map is not None:
            e = e * (np.asarray(s, np.float32) / np.float32(self.sigma))
        return e

    def expected(self, signal: NDArray[np.floating]) -> NDArray[np.float32]:
        """Noise-free signal ν (image units) → E[forward(y) | ν] (network units): what :meth:`inverse` inverts, so
        ``inverse(expected(ν)) = ν``; without the VST the same map as :meth:`forward`."""
        if not self.use_vst:
            return self.forward(signal)
        s = self._sigma(signal, None)
        return (vst.expected(signal, s, self.coils) / np.float32(self.scale)).astype(np.float32)

    def level(self, snr: float) -> float:
        """E[forward(y) | ν = snr·σ] in network units: the same at every voxel, also with a σ map (the VST with
        the local σ is f_1(y/σ(x)); without the VST the map divides by σ(x)/σ)."""
        if not self.use_vst:
            return float(snr * self.sigma / self.scale)
        return float(vst.expected(np.array([snr], np.float32), 1.0, self.coils)[0] / self.scale)

    def passthrough(self, data: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Voxels returned unchanged: exact zeros, non-finite and saturated voxels (part of this frame allowed)."""
        return ~valid_mask(data, self.saturation)

    def sigma_volume(self, shape: tuple[int, ...]) -> NDArray[np.float32]:
        """The σ used at every voxel (image units): the map, or the scalar broadcast (for ``--save-sigma-map``)."""
        if self.sigma_map is not None:
            return self.sigma_map
        return np.full(shape, self.sigma, np.float32)

    def summary(self) -> dict[str, object]:
        """Plain-dict description (for reports): σ, its source, the noise model and the estimator's diagnostics."""
        d: dict[str, object] = {"sigma": self.sigma, "method": self.method, "coils": self.coils, "vst": self.use_vst,
                                "sigma_d": self.sigma_d}
        if self.sigma_map is not None:
            d["map"] = map_summary(self.sigma_map)
        if self.estimate is not None:
            d.update({k: v for k, v in self.estimate.to_dict().items() if k not in d})
        else:
            d["warnings"] = []
        return d


def clean_map(sigma_map: NDArray[np.floating], shape: tuple[int, ...]) -> NDArray[np.float32]:
    """A σ map made usable: float32, ``shape``, non-finite or ≤ 0 entries (outside another tool's mask) set to the
    median of the positive ones. Raises ValueError (naming ``sigma_map``) for a wrong shape or no positive entry."""
    m = np.asarray(sigma_map, dtype=np.float32)
    if m.shape != tuple(shape):
        raise ValueError(f"sigma_map has shape {m.shape}, the frame {tuple(shape)}")
    good = np.isfinite(m) & (m > 0)
    if not good.any():
        raise ValueError("sigma_map has no positive finite value")
    if not good.all():
        m = np.where(good, m, np.float32(np.median(m[good])))
    return m


def map_summary(m: NDArray[np.floating]) -> dict[str, float]:
    """min / median / max of a σ map, and the ratio of its centre (the central 1/27 of the box) to its edge (the
    outer shell, one sixth of each axis): > 1 for parallel-imaging g-factor maps."""
    m = np.asarray(m, np.float32)
    sl = tuple(slice(n // 3, max(n // 3 + 1, 2 * n // 3)) for n in m.shape[:3])
    shell = np.ones(m.shape[:3], bool)
    shell[tuple(slice(max(1, n // 6), n - max(1, n // 6)) for n in m.shape[:3])] = False
    centre, edge = float(np.median(m[sl])), float(np.median(m[shell])) if shell.any() else float(np.median(m))
    return {"min": float(m.min()), "median": float(np.median(m)), "max": float(m.max()),
            "centre_edge_ratio": centre / edge if edge > 0 else float("nan")}
