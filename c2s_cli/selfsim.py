"""The self-similarity blend: the network's output moved towards a non-local-means estimate by a weight that
Stein's unbiased risk estimate (SURE) chooses per scan (issue 32).

The network's one pass D(y) is a posterior mean under the prior it learned; a non-local-means estimate NL(y)
(:func:`c2s_cli.model.nonlocal_means.nonlocal_means_volume`) draws on the scan's own repeated structure. Their
errors differ, so a blend f_a = D + a·(NL − D) can beat both — by how much depends on the scan (a fine-textured
head gains more than a smooth template; ``benchmarks/README.md``). The weight is therefore fitted on the scan itself,
in network units where the noise is close to Gaussian with std σ_d (after the variance-stabilising transform), by
minimising SURE (Stein 1981) over a:

    SURE(a) = ‖f_a − y‖² − N·σ_d² + 2σ_d²·div f_a,       div f_a = (1 − a)·div D + a·div NL

    ⇒  a* = (⟨NL − D, y − D⟩ − σ_d²·(div NL − div D)) / ‖NL − D‖²,

clipped to [0, ``max_weight``]. The divergences are Monte-Carlo estimates (Ramani, Blu & Unser 2008): with b a
Rademacher vector and a small ε, div f ≈ ⟨b, f(y + ε·b) − f(y)⟩ / ε. SURE is unbiased for the MSE on any fixed set of
voxels; the sums run over the object (voxels whose estimate is above the stabilised level of a signal of
``MASK_SNR``·σ), where the stabilised noise is close to Gaussian — the background's is not.

Several NL estimates (3×3 and 3×3×3 patches, session 22) each get their a*, and the one with the largest fall of SURE,
SURE(0) − SURE(a*) = 2a*⟨NL − D, y − D⟩ − a*²‖NL − D‖² − 2σ_d²·a*·(div NL − div D) (:attr:`BlendFit.sure_gain`), is
kept: an estimate of the squared error each removes, from the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MASK_SNR = 3.0  # the object for SURE's sums: D above the stabilised level of a signal of MASK_SNR·σ


@dataclass(frozen=True)
class BlendFit:
    """The blend weight of one 3-D frame and what SURE saw.

    Attributes:
        weight: a in f = D + a·(NL − D), in [0, max_weight].
        raw: SURE's minimiser before clipping.
        voxels: how many voxels the sums ran over (0: none; the weight is then 0).
        div_d, div_nl: the divergences per voxel of D and NL (Monte-Carlo estimates).
        radius, h, depth: the NL estimate the weight is for (:class:`c2s_cli.config.SelfSimilarity`).
        sure_gain: SURE(0) − SURE(weight) per voxel, in units of σ_d²: the squared error the blend is expected to
            remove (the variant with the largest is kept when several are fitted).
        candidates: (depth, weight, sure_gain) of every NL variant fitted for this choice.
    """

    weight: float
    raw: float
    voxels: int
    div_d: float
    div_nl: float
    radius: int = 2
    h: float = 1.0
    depth: int = 1
    sure_gain: float = 0.0
    candidates: tuple[tuple[int, float, float], ...] = ()

    def summary(self) -> dict[str, object]:
        return {"weight": round(self.weight, 4), "sure_minimiser": round(self.raw, 4), "voxels": self.voxels,
                "div_d": round(self.div_d, 4), "div_nl": round(self.div_nl, 4), "radius": self.radius, "h": self.h,
                "depth": self.depth, "sure_gain": round(self.sure_gain, 6),
                "candidates": [{"depth": d, "weight": round(w, 4), "sure_gain": round(g, 6)}
                               for d, w, g in self.candidates]}


@dataclass
class SureSums:
    """The sums SURE's weight needs, accumulated part by part (float64 scalars; memory: one part's temporaries).

    For the object voxels (``d`` > ``mask_level``) of every part added: their count, ⟨NL − D, y − D⟩, ‖NL − D‖² and
    the two divergence sums ⟨b, D(y + εb) − D(y)⟩, ⟨b, NL(y + εb) − NL(y)⟩ (not yet divided by ε)."""

    mask_level: float
    voxels: int = 0
    uv: float = 0.0
    uu: float = 0.0
    div_d: float = 0.0
    div_nl: float = 0.0

    def add(self, y: NDArray[np.floating], d: NDArray[np.floating], nl: NDArray[np.floating],
            d_moved: NDArray[np.floating], nl_moved: NDArray[np.floating], probe: NDArray[np.floating]) -> None:
        """Add the voxels of one part (any equal shapes, network units): see :func:`sure_weight`."""
        arrays = [np.asarray(a) for a in (y, d, nl, d_moved, nl_moved, probe)]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError("y, d, nl, d_moved, nl_moved and probe must have one shape")
        y, d, nl, dm, nlm, b = arrays
        mask = d > self.mask_level
        u = (nl[mask] - d[mask]).astype(np.float64)
        self.voxels += int(u.size)
        self.uv += float(u @ (y[mask] - d[mask]).astype(np.float64))
        self.uu += float(u @ u)
        bm = b[mask].astype(np.float64)
        self.div_d += float(bm @ (dm[mask] - d[mask]).astype(np.float64))
        self.div_nl += float(bm @ (nlm[mask] - nl[mask]).astype(np.float64))

    def fit(self, epsilon: float, sigma_d: float, max_weight: float, *, radius: int = 2, h: float = 1.0,
            depth: int = 1) -> BlendFit:
        """SURE's minimiser a* from the sums, clipped to [0, ``max_weight``] (see the module docstring)."""
        if not epsilon > 0 or not sigma_d > 0:
            raise ValueError(f"epsilon and sigma_d must be > 0, got {epsilon} and {sigma_d}")
        if not 0 <= max_weight <= 1:
            raise ValueError(f"max_weight must be in [0, 1], got {max_weight}")
        n = self.voxels
        if n == 0:
            return BlendFit(0.0, 0.0, 0, 0.0, 0.0, radius, h, depth)
        div_d, div_nl = self.div_d / epsilon, self.div_nl / epsilon
        if self.uu == 0.0:
            return BlendFit(0.0, 0.0, n, div_d / n, div_nl / n, radius, h, depth)
        raw = (self.uv - sigma_d**2 * (div_nl - div_d)) / self.uu
        if not np.isfinite(raw):
            raise ValueError("SURE's blend weight is not finite (NaN or infinite estimates)")
        a = float(np.clip(raw, 0.0, max_weight))
        # SURE(0) − SURE(a), per voxel, in units of σ_d²: what the blend is expected to remove from the squared error
        gain = (2 * a * self.uv - a * a * self.uu - 2 * sigma_d**2 * a * (div_nl - div_d)) / (n * sigma_d**2)
        return BlendFit(a, raw, n, div_d / n, div_nl / n, radius, h, depth, gain)


def sure_weight(
    y: NDArray[np.floating], d: NDArray[np.floating], nl: NDArray[np.floating],
    d_moved: NDArray[np.floating], nl_moved: NDArray[np.floating], probe: NDArray[np.floating], epsilon: float,
    sigma_d: float, max_weight: float, mask_level: float, *, radius: int = 2, h: float = 1.0, depth: int = 1,
) -> BlendFit:
    """SURE's blend weight from estimates on the same voxels (any equal shapes, network units): one
    :class:`SureSums` part.

    Args:
        y: the noisy input; d, nl: the network's and the NL estimate of it.
        d_moved, nl_moved: the same estimates of ``y + epsilon·probe``.
        probe: the Rademacher vector (±1) that moved the input.
        epsilon: the step (network units, > 0).
        sigma_d: the noise std in network units (> 0).
        max_weight: the largest weight returned (0 … 1).
        mask_level: the sums run over the voxels where ``d`` > mask_level (network units; the object).
        radius, h, depth: recorded in the fit (the NL estimate it is for).
    """
    sums = SureSums(mask_level)
    sums.add(y, d, nl, d_moved, nl_moved, probe)
    return sums.fit(epsilon, sigma_d, max_weight, radius=radius, h=h, depth=depth)
