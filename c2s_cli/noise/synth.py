"""Synthetic MRI magnitude noise (training augmentation, tests and benchmarks share this one definition)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def rician(
    clean: NDArray[np.floating], sigma: float | NDArray[np.floating], rng: np.random.Generator, coils: int = 1,
) -> NDArray[np.float32]:
    """Magnitude of ``coils`` complex channels with i.i.d. N(0, σ²) noise per real channel (root sum of squares).

    The signal is in the first channel, so the result is Rician (N = 1) or non-central χ with 2N degrees of freedom.
    ``sigma`` is a scalar or an array broadcastable to ``clean`` (image units). Draws, per channel, the real then
    the imaginary noise of the whole volume from ``rng``.
    """
    acc = np.zeros(np.shape(clean), np.float64)
    for c in range(coils):
        s = clean if c == 0 else 0.0
        acc += (s + sigma * rng.standard_normal(acc.shape)) ** 2 + (sigma * rng.standard_normal(acc.shape)) ** 2
    return np.sqrt(acc).astype(np.float32)
