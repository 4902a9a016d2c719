"""4-D series with the other volumes as context (issue 31): arrays in, arrays out.

A diffusion or functional series holds dozens of volumes of the same anatomy, each with independent noise. The series
mode denoises each volume ``t`` with, as extra input channels beside its 2·context + 1 slices,

* its prediction from all the other volumes: in each 8³ block, a regression on the other volumes corrected for their
  noise, or (many volumes) the leave-one-out prediction of the block's low-rank model (:func:`local_predictions`;
  Patch2Self, Fadnavis et al. 2020, regresses globally with ordinary least squares, which flattens the directions'
  contrast): the series' redundancy in one channel, with the noise of the others averaged down;
* the mean of the other volumes of its shell (all other volumes for fMRI): a high-SNR picture of the anatomy;
* its ``k`` nearest other volumes — in q-space for diffusion (q = √(b / b_max)·g, antipodally symmetric, so the b = 0
  volumes are each other's nearest), in time otherwise,

all mapped to the target's network units by the target's noise domain. None of them holds the target's noise (the
prediction is fitted with the target among N = 512 voxels per block: a dependence of order √(p / N) of σ in the
prediction, measured ≤ 0.2 σ in the tests, neglected), so the GDSM loss stays exact when only the
target's slices are re-corrupted and the loss is on the target (Tu et al. 2025, Eq. 3; the minimiser is
E[x₀ | x_t, context], which at τ → 0 is the posterior mean given the whole series).

The network is the shipped one, widened at its first convolution by zero weights for the new channels (so before
training it is exactly the shipped network), then trained self-supervised on the series itself with the one training
loop (:func:`c2s_cli.loop.train`). The number of volumes may be anything from 2 up: the channels are a fixed number
of neighbours, one pooled mean and one prediction (``neighbours + 2`` channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from c2s_cli.config import RunConfig, SelfSimilarity
from c2s_cli.model import Precond
from c2s_cli.model.precond import with_zero_inputs
from c2s_cli.noise.domain import NoiseDomain

B0_THRESHOLD = 50.0  # s/mm²: b-values at or below are b = 0 volumes (as dipy and MRtrix)
SHELL_TOLERANCE = 100.0  # s/mm²: b-values closer than this are one shell


def shells(bvals: NDArray[np.floating]) -> NDArray[np.int64]:
    """Shell index of each volume (T,): b = 0 volumes are shell 0, then one index per distinct b-value, b-values within
    :data:`SHELL_TOLERANCE` of a shell's first member joining it."""
    b = np.asarray(bvals, np.float64)
    out = np.zeros(len(b), np.int64)
    centres: list[float] = []
    for i in np.argsort(b, kind="stable"):
        if b[i] <= B0_THRESHOLD:
            continue
        for j, c in enumerate(centres):
            if abs(b[i] - c) < SHELL_TOLERANCE:
                out[i] = j + 1
                break
        else:
            centres.append(float(b[i]))
            out[i] = len(centres)
    return out


def neighbours(n: int, k: int, bvals: NDArray[np.floating] | None = None,
               bvecs: NDArray[np.floating] | None = None) -> NDArray[np.int64]:
    """(n, k) indices of each volume's ``k`` nearest other volumes, nearest first.

    With a gradient table (``bvals`` (n,), ``bvecs`` (n, 3) unit vectors): the distance is min(|q_i − q_j|,
    |q_i + q_j|) with q = √(b / b_max)·g; ties go to the nearer index. Without: the nearest in time (t − 1, t + 1,
    t − 2, …). A series with fewer than k + 1 volumes repeats its nearest ones.
    """
    if n < 2:
        raise ValueError(f"a series needs at least 2 volumes for context, got {n}")
    idx = np.arange(n)
    if bvals is not None and bvecs is not None:
        b = np.asarray(bvals, np.float64)
        g = np.asarray(bvecs, np.float64).reshape(n, 3)
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        g = np.where(norm > 0, g / np.where(norm > 0, norm, 1), 0)
        q = np.sqrt(np.clip(b, 0, None) / max(float(b.max()), 1.0))[:, None] * g
        q[b <= B0_THRESHOLD] = 0
        d = np.minimum(np.linalg.norm(q[:, None] - q[None], axis=2), np.linalg.norm(q[:, None] + q[None], axis=2))
    else:
        d = np.abs(idx[:, None] - idx[None]).astype(np.float64)
    d = d + np.abs(idx[:, None] - idx[None]) * 1e-9  # ties: the nearer index first (t − 1 before t + 1 by order)
    d[idx, idx] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, : n - 1]
    reps = -(-k // (n - 1))
    return np.tile(order, (1, reps))[:, :k].astype(np.int64)


def shell_groups(bvals: NDArray[np.floating]) -> list[NDArray[np.int64]]:
    """The volumes of each diffusion shell (b > 0), one index array per shell."""
    sh = shells(bvals)
    return [np.nonzero(sh == k)[0] for k in range(1, int(sh.max()) + 1)] if len(sh) else []


def pools(n: int, bvals: NDArray[np.floating] | None = None) -> list[NDArray[np.int64]]:
    """For each volume, the other volumes whose mean is its pooled context: the rest of its shell (the whole series
    without a gradient table, or when the shell has no other member)."""
    sh = shells(bvals) if bvals is not None else np.zeros(n, np.int64)
    out = []
    for t in range(n):
        same = np.nonzero((sh == sh[t]) & (np.arange(n) != t))[0]
        out.append(same if len(same) else np.array([i for i in range(n) if i != t], np.int64))
    return out


class SeriesContext:
    """The context channels of every volume of a series, in each target's network units.

    Each frame is stabilised once (``domain.forward(frame) · domain.scale``: the VST with the frame's σ or σ map,
    before the per-volume scale). Where the frames share their σ (the series map, or one σ), that is the same map for
    every frame, so volume j seen in volume t's units is that array divided by t's scale, and t's pooled mean is the
    mean of its pool's stabilised arrays divided by t's scale. Frames with different σ are mapped by the target's own
    domain instead (exact, slower). The predictions from the other volumes are made once, for the whole series.
    """

    def __init__(self, frames: Sequence[NDArray[np.floating]], domains: Sequence[NoiseDomain], nbrs: NDArray[np.int64],
                 pool: Sequence[NDArray[np.int64]], block: int = 8) -> None:
        if not len(frames) == len(domains) == len(nbrs) == len(pool):
            raise ValueError("frames, domains, neighbours and pools must have one entry per volume")
        self.frames, self.domains, self.nbrs, self.pool = frames, domains, nbrs, pool
        self.shared = all(_same_noise(domains[0], d) for d in domains)
        self.stab = [d.forward(f) * np.float32(d.scale) for f, d in zip(frames, domains)] if self.shared else None
        self.block = block
        self.predictions: NDArray[np.float32] | None = None  # (T, X, Y, Z), stabilised units
        self.valid = np.ones(np.shape(frames[0]), bool)  # voxels non-zero in every frame
        for f in frames:
            self.valid &= np.asarray(f) != 0  # as valid_mask: signed (complex-demodulated) data too

    def stabilised(self, t: int) -> NDArray[np.float32]:
        """Frame t in stabilised units (its domain's forward map times its scale; kept when the frames share σ)."""
        if self.stab is not None:
            return self.stab[t]
        d = self.domains[t]
        return d.forward(self.frames[t]) * np.float32(d.scale)

    def _model_inputs(self) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """The stacked stabilised frames (T, X, Y, Z) and their noise variances (T,) in those units."""
        noise_var = np.array([(d.sigma_d * d.scale) ** 2 for d in self.domains])
        return np.stack([self.stabilised(j) for j in range(len(self.frames))], 0), noise_var

    def predict(self, t: int) -> NDArray[np.float32]:
        """Volume t predicted from the other volumes (stabilised units): :func:`local_predictions`, made for the
        whole series at the first call."""
        if self.predictions is None:
            stab, noise_var = self._model_inputs()
            self.predictions = local_predictions(stab, self.valid, noise_var, self.block)
        return self.predictions[t]

    def rank(self) -> NDArray[np.int16]:
        """The rank of the local low-rank model behind the predictions (:func:`local_rank`), (X, Y, Z)."""
        stab, noise_var = self._model_inputs()
        return local_rank(stab, self.valid, noise_var, self.block)

    def __call__(self, t: int) -> list[NDArray[np.float32]]:
        """Volume ``t``'s context: its prediction from the others, the mean of its pool, then its neighbours; (X, Y, Z)
        each, in t's network units."""
        dom = self.domains[t]
        inv = np.float32(1.0 / dom.scale)
        out = [self.predict(t) * inv]
        if self.stab is not None:
            acc = np.zeros_like(self.stab[t])
            for j in self.pool[t]:
                acc += self.stab[j]
            out.append(acc * np.float32(1.0 / (len(self.pool[t]) * dom.scale)))
            out += [self.stab[j] * inv for j in self.nbrs[t]]
            return out
        out.append(np.mean([dom.forward(self.frames[j]) for j in self.pool[t]], axis=0).astype(np.float32))
        out += [dom.forward(self.frames[j]) for j in self.nbrs[t]]
        return out


# block grids, offset by block/N along every axis, whose predictions are averaged (each still never reads the target):
# on the DWI phantom 1 / 2 / 4 / 8 grids gave DW 34.48 / 34.63 / 34.77 / 34.80 dB, b0 32.59 / 32.62 / 32.66 / 32.67,
# FA WM 0.078 / 0.077 / 0.076 / 0.076, in 55 / 52 / 52 / 70 s (2 threads; dipy's MP-PCA averages its overlapping
# patches in the same spirit)
PREDICTION_GRIDS = 4
EIV_MAX_VOLUMES = 32  # up to this many volumes the per-target regression; above, the closed-form leave-one-out


class _Blocks:
    """A series cut into ``block``³ blocks for the local low-rank model (:func:`local_predictions`, :func:`local_rank`):
    ``a`` (B, T + 1, N) the blocks' frames and the constant row (the valid mask × √v̄), ``v`` (B, N) the valid mask,
    ``n_valid`` (B,) their valid voxels, ``nvar`` (T + 1,) the rows' noise variances, ``thr`` (B, 1) the eigenvalue
    threshold."""

    def __init__(self, stab: NDArray[np.float32], valid: NDArray[np.bool_], noise_var: NDArray[np.floating],
                 block: int, margin: float) -> None:
        self.t_n, self.shape, self.block = stab.shape[0], stab.shape[1:], block
        self.pad = [(0, (-n) % block) for n in self.shape]
        self.nb = [(n + (-n) % block) // block for n in self.shape]
        # the frames' noise variance: 1 in the VST's units, σ² without the VST (signed or complex data); the constant
        # row and the noise threshold scale with it, so that the model does not depend on the units (a unit-variance
        # threshold on data in image units kept noise components: b0 −1.8 dB on the DWI phantom without the VST)
        level = float(np.mean(np.asarray(noise_var, np.float64)))
        level = level if level > 0 else 1.0  # noiseless frames: the unit threshold (above rounding's components)
        v = self.cut(valid.astype(np.float32))  # (B, n)
        # a = [frames × v; √level · v] in float64, written once (torch: no float32 temporaries, both cores)
        frames, vt = torch.from_numpy(self.cut(stab)), torch.from_numpy(v)[:, None, :]
        a = torch.empty((frames.shape[0], self.t_n + 1, frames.shape[2]), dtype=torch.float64)
        torch.mul(frames, vt, out=a[:, : self.t_n])
        torch.mul(vt[:, 0], float(np.sqrt(level)), out=a[:, self.t_n])
        self.a = a.numpy()
        self.v = v  # (B, N) the valid mask per block
        self.n_valid = np.maximum(v.sum(1), 1.0).astype(np.float64)
        self.nvar = np.append(np.asarray(noise_var, np.float64), 0.0)  # the constant row has no noise
        # the Marchenko–Pastur spread of pure noise above its floor
        t_n, nv = self.t_n, self.n_valid
        self.thr = (margin * level * nv * (2 * np.sqrt(t_n / nv) + t_n / nv))[:, None]

    # cut and join are pure copies; torch's permute-and-copy runs them 3-4× faster than numpy's on two cores
    # (0.30 → 0.08 s for 65 volumes of 90×106×36: they took 2.4 of the series mode's 25 s on the DWI phantom)
    def cut(self, x: NDArray[Any]) -> NDArray[Any]:
        """(..., X, Y, Z) → (blocks, ..., block³), zero-padded to whole blocks."""
        b, lead, k = self.block, x.shape[:-3], x.ndim - 3
        t = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(x)),
                                    [0, self.pad[2][1], 0, self.pad[1][1], 0, self.pad[0][1]])
        t = t.reshape(*lead, self.nb[0], b, self.nb[1], b, self.nb[2], b)
        t = t.permute(k, k + 2, k + 4, *range(k), k + 1, k + 3, k + 5)
        return t.reshape(-1, *lead, b**3).numpy()

    def join(self, x: NDArray[Any]) -> NDArray[Any]:
        """(blocks, T, block³) → (T, X, Y, Z), the inverse of :meth:`cut`."""
        b, nb, t = self.block, self.nb, x.shape[1]
        y = torch.from_numpy(np.ascontiguousarray(x)).reshape(nb[0], nb[1], nb[2], t, b, b, b)
        y = y.permute(3, 0, 4, 1, 5, 2, 6).reshape(t, nb[0] * b, nb[1] * b, nb[2] * b)
        return y[:, : self.shape[0], : self.shape[1], : self.shape[2]].contiguous().numpy()


def local_predictions(stab: NDArray[np.float32], valid: NDArray[np.bool_], noise_var: NDArray[np.floating],
                      block: int = 8, margin: float = 1.0) -> NDArray[np.float32]:
    """Each volume (T, X, Y, Z stabilised units; noise variance ``noise_var`` (T,)) predicted from the others, block by
    block (``block``³, voxels in ``valid``): with up to :data:`EIV_MAX_VOLUMES` volumes the errors-in-variables
    regression of :func:`_eiv_predictions` (one (T − 1)² eigendecomposition per volume and block: the least
    dependence on the target's own noise, cheap for few volumes), above it the closed-form leave-one-out prediction
    of the block's low-rank model (:func:`_loo_predictions`: one eigendecomposition per block, T times cheaper).
    Measured: with 10 volumes of a rank-1 toy, a fresh noise draw of the target moves the prediction by 0.11 σ
    (regression) against 0.26 σ (leave-one-out); with 40, 0.089 against 0.099 σ; on the 65-volume DWI phantom the
    two give the same context-mode scores (b0 32.6, DW 34.53 dB, FA WM 0.078) in 54 s against 7 s (1 thread).
    The predictions of :data:`PREDICTION_GRIDS` block grids, offset along every axis, are averaged."""

    def predict(bl: _Blocks, pad: list[tuple[int, int]]) -> NDArray[np.float32]:
        fn = _eiv_predictions if bl.t_n <= EIV_MAX_VOLUMES else _loo_predictions
        return fn(bl.a, bl.n_valid, bl.nvar, bl.thr)

    return _over_grids(stab, valid, noise_var, block, margin, predict)


def _over_grids(stab: NDArray[np.float32], valid: NDArray[np.bool_], noise_var: NDArray[np.floating], block: int,
                margin: float, fn: Callable[[_Blocks, list[tuple[int, int]]], NDArray[np.float32]]
                ) -> NDArray[np.float32]:
    """The mean over :data:`PREDICTION_GRIDS` block grids, offset by a fraction of the block along every axis, of
    ``fn(blocks, pad)`` → (B, T, block³), ``blocks`` the series cut on that grid after padding by ``pad``; joined
    back to (T, X, Y, Z)."""
    total: NDArray[np.float32] | None = None
    weight: NDArray[np.float32] | None = None
    for k in range(PREDICTION_GRIDS):
        o = k * block // PREDICTION_GRIDS  # each grid offset by a fraction of the block along every axis
        pad = [(0, 0)] + [(o, 0)] * 3
        bl = _Blocks(np.pad(stab, pad), np.pad(valid, pad[1:]), noise_var, block, margin)
        out = bl.join(fn(bl, pad))[:, o:, o:, o:]
        if k == 0:  # the aligned grid counts everywhere; an offset one only where its block is at least half full
            total, weight = out, None
            continue
        full = (bl.n_valid >= block**3 / 2).astype(np.float32)
        w = bl.join(np.ascontiguousarray(np.broadcast_to(full[:, None, None], (len(full), 1, block**3))))[0, o:, o:, o:]
        assert total is not None
        total = total + out * w
        weight = (1.0 + w) if weight is None else weight + w
    assert total is not None
    return total if weight is None else (total / weight).astype(np.float32)


def project_subspace(out: NDArray[np.float32], context: SeriesContext, weight: float, *, margin: float = 1.0
                     ) -> NDArray[np.float32]:
    """Move each volume's estimate towards its projection on the series' local low-rank subspace: in stabilised
    units (ẑ_t = expected(x̂_t)·scale_t, as :func:`match_variance`), per ``block``³ block,

        ẑ ← ẑ + w·(U·Uᵀ·ẑ − ẑ),

    with U the eigenvectors of the **noisy** block's noise-corrected Gram matrix (its frames and the constant row)
    that stand clear of the noise — the subspace :func:`local_predictions` predicts in (MP-PCA's model, Veraart et
    al. 2016) — averaged over the :data:`PREDICTION_GRIDS` offset grids, then inverted (``inverse(ẑ / scale)``).
    The network denoises each volume with the others as context, but what it leaves of the noise is independent from
    volume to volume, so most of it lies outside the series' subspace; U is a function of the noisy series alone (no
    clean data). Where a block's subspace misses a weak component (a direction's contrast in white matter), the
    projection shrinks it, which :func:`match_variance` (run after it) gives back where the data show it.

    ``out`` (X, Y, Z, T) image units, changed in place and returned; ``weight`` w in [0, 1] (0: unchanged);
    ``margin``: the eigenvalue threshold's factor, as :func:`local_predictions`. Memory: the series twice in float64
    per grid (as the predictions).
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"series_subspace_weight must be 0 to 1, got {weight}")
    if weight == 0:
        return out
    t_n = out.shape[-1]
    doms = context.domains
    stab, noise_var = context._model_inputs()
    zh = np.stack([d.expected(out[..., t]) * np.float32(d.scale) for t, d in enumerate(doms)], 0).astype(np.float32)

    def project(bl: _Blocks, pad: list[tuple[int, int]]) -> NDArray[np.float32]:
        at = torch.from_numpy(bl.a)
        u = _signal_subspace(at, bl.n_valid, bl.nvar, bl.thr).float()  # float32 from here: 2× faster, ~1e-7
        b = torch.empty((at.shape[0], t_n + 1, at.shape[2]), dtype=torch.float32)
        v = torch.from_numpy(bl.v)
        torch.mul(torch.from_numpy(bl.cut(np.pad(zh, pad))), v[:, None, :], out=b[:, :t_n])  # the estimate's rows
        b[:, t_n] = at[:, t_n]  # the same constant row
        return (u[:, :t_n] @ (u.mT @ b)).numpy()

    proj = _over_grids(stab, context.valid, noise_var, context.block, margin, project)
    w = np.float32(weight)
    for t, d in enumerate(doms):
        z = (zh[t] + w * (proj[t] - zh[t])) / np.float32(d.scale)
        out[..., t] = np.where(context.valid, d.inverse(z.astype(np.float32)), out[..., t])
    return out


def local_rank(stab: NDArray[np.float32], valid: NDArray[np.bool_], noise_var: NDArray[np.floating],
               block: int = 8, margin: float = 1.0) -> NDArray[np.int16]:
    """The rank of each block's low-rank model (X, Y, Z; the same value over a ``block``³ block, 0 where it has no
    valid voxel): the components of the series (its frames and the constant row) that stand clear of the noise, as
    :func:`local_predictions` keeps them — what ``dwidenoise -rank`` maps for MP-PCA's sliding window, here per
    block. Arguments as :func:`local_predictions`."""
    bl = _Blocks(stab, valid, noise_var, block, margin)
    gram = _gram(bl.a) - bl.n_valid[:, None, None] * np.diag(bl.nvar)[None]
    rank = (np.linalg.eigvalsh(gram) > bl.thr).sum(-1)
    rank = np.where(bl.cut(valid.astype(np.float32)).any(-1), rank, 0)
    full = np.broadcast_to(rank[:, None, None].astype(np.int16), (rank.shape[0], 1, block**3))
    return bl.join(np.ascontiguousarray(full))[0]


def _eiv_predictions(a: NDArray[np.float64], n_valid: NDArray[np.float64], nvar: NDArray[np.float64],
                     thr: NDArray[np.float64]) -> NDArray[np.float32]:
    """Each volume predicted from the others, block by block, by a regression corrected for the others' noise:
    ``a`` (B, T + 1, N) the blocks' frames and constant row, ``n_valid`` (B,) their valid voxels, ``nvar`` (T + 1,)
    the rows' noise variances, ``thr`` (B, 1) the eigenvalue threshold; returns (B, T, N).

    In each ``block``³ block with N valid voxels, S the frames and a constant column and
    G = SᵀS, E[G] = G₀ + N·diag(v): ordinary least squares would shrink the weights of every low-variance signal
    component — the directions' contrast first (measured on the DWI phantom: FA in white matter −0.18 with one global
    regression). The weights of frame t solve (G − N·diag(v))_{−t,−t}·w = G_{−t,t} on the eigen-components of the
    corrected matrix that stand clear of the noise (eigenvalue > margin·v̄·N·(2√(p/N) + p/N), the Marchenko–Pastur
    spread of pure noise of the frames' mean variance v̄): an errors-in-variables regression, local because the signal's dependence on direction
    differs from voxel to voxel (with blocks of 8: FA bias −0.03; Patch2Self regresses globally, MP-PCA is local but
    uses the target itself). The prediction of t never reads t's own values; its weights are fitted with them
    (p numbers over N voxels: a dependence of order √(p / N) of σ). Cost: T batched p × p eigendecompositions per
    block.
    """
    t_n = a.shape[1] - 1
    gram = _gram(a)
    out = np.zeros((a.shape[0], t_n, a.shape[2]), np.float32)
    for t in range(t_n):
        others = np.array([j for j in range(t_n) if j != t] + [t_n])
        g = gram[:, others][:, :, others] - n_valid[:, None, None] * np.diag(nvar[others])[None]
        vals, vecs = np.linalg.eigh(g)
        keep = vals > thr
        rhs = np.matmul(vecs.transpose(0, 2, 1), gram[:, others, t][..., None])[..., 0]
        w = np.matmul(vecs, np.where(keep, rhs / np.where(keep, vals, 1.0), 0.0)[..., None])
        out[:, t] = np.matmul(w.transpose(0, 2, 1), a[:, others])[:, 0]
    return out


def _loo_predictions(a: NDArray[np.float64], n_valid: NDArray[np.float64], nvar: NDArray[np.float64],
                     thr: NDArray[np.float64]) -> NDArray[np.float32]:
    """Each volume predicted from the others, block by block: the leave-one-out prediction of a low-rank model
    (arguments and result as :func:`_eiv_predictions`).

    In each ``block``³ block with N valid voxels, every voxel's T values are
    modelled as U·c (MP-PCA's model, Veraart et al. 2016): U the eigenvectors of the Gram matrix over the block's
    voxels corrected for the noise, G − N·diag(v), whose eigenvalues stand clear of the noise (> margin·v̄·N·(2√(p/N) +
    p/N), the Marchenko–Pastur spread of pure noise of the frames' mean variance v̄). Volume t is predicted from the others alone: c fitted by least
    squares to the other T − 1 values, then U_t·c — with H = UUᵀ, in closed form

        p_t = Σ_{j≠t} H_tj·y_j / (1 − H_tt)        (the leave-one-out identity of a projection)

    (1 − H_tt is floored at 0.1: a volume the others cannot explain gets a damped prediction). The noise is in the
    fitted values, not in the design, so the prediction keeps the directions' contrast (slope 1: no regression
    dilution, which flattened FA with ordinary least squares on the other volumes, as Patch2Self regresses). Measured
    on the DWI phantom against the errors-in-variables regression (:func:`_eiv_predictions`): the same context-mode
    scores (b0 32.61 / DW 34.53 dB, FA WM 0.078), predictions 7 s instead of 54 s. A constant row (the valid mask,
    no noise) is part of the model, as in the regression. The prediction of t never reads t's own values; U is
    estimated with them (a dependence that falls with T: 0.26 σ with 10 volumes, 0.10 σ with 40). Cost: one
    (T + 1)² eigendecomposition and one (T + 1)² × N product per block, batched in torch (float64; a quarter of numpy's
    time on one thread; the same values up to rounding: the DWI phantom's scores move by ≤ 0.03 dB).
    """
    t_n = a.shape[1] - 1
    at = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    u = _signal_subspace(at, n_valid, nvar, thr)
    hat = (u @ u.mT)[:, :t_n]  # rows: the frames; columns: the frames and the constant
    idx = torch.arange(t_n)
    diag = hat[:, idx, idx].clone()
    hat[:, idx, idx] = 0.0
    return ((hat @ at) / torch.clamp(1.0 - diag, min=0.1)[:, :, None]).float().numpy()


def _signal_subspace(at: torch.Tensor, n_valid: NDArray[np.float64], nvar: NDArray[np.float64],
                     thr: NDArray[np.float64]) -> torch.Tensor:
    """(B, p, p) float64: each block's eigenvectors of its noise-corrected Gram matrix G − N·diag(v) (``at`` (B, p, N)
    float64 rows, arguments as :func:`_eiv_predictions`) whose eigenvalues exceed the threshold, the others zeroed:
    the local low-rank model's subspace (MP-PCA's, Veraart et al. 2016)."""
    gram = at @ at.mT - torch.from_numpy(n_valid)[:, None, None] * torch.diag(torch.from_numpy(nvar))[None]
    vals, vecs = torch.linalg.eigh(gram)
    return vecs * (vals > torch.from_numpy(np.asarray(thr, np.float64)))[:, None, :]


def _gram(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """(B, p, N) → (B, p, p), each block's a·aᵀ (batched BLAS through torch, on torch's threads; numpy's stacked
    ``matmul`` runs one thread)."""
    at = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    return (at @ at.mT).numpy()


# match_variance: a shell's spread counts where it stands this many standard errors clear of the noise's, and then as
# measured (a test, not a deduction). On the DWI phantom (2026-12-03, the shipped default, estimated σ map), FA RMSE
# in white matter / DW PSNR: the deduction of 2 SE shipped before 0.076 / 34.72 dB at 5 % noise, 0.145 / 28.81 at
# 10 %; the test at 3 SE 0.069 / 34.70, 0.126 / 28.70; at 4 SE 0.069 / 34.71, 0.128 / 28.75; at 6 SE 0.069 / 34.72,
# 0.136 / 28.80. A shell without directional signal keeps α = 1 at 3 SE and above (tests/test_series.py), not at 2.
MATCH_MARGIN_SD = 4.0


def match_variance(out: NDArray[np.float32], context: SeriesContext, groups: Sequence[NDArray[np.int64]], *,
                   smooth: float = 1.0, max_gain: float = 2.0, margin_sd: float = MATCH_MARGIN_SD
                   ) -> NDArray[np.float32]:
    """Give each group's denoised volumes (a diffusion shell) the spread about their mean that the data show.

    A posterior mean shrinks what varies from volume to volume — in a shell, the signal's dependence on direction —
    towards the shell's mean, and a tensor fit then reads a lower FA (measured on the DWI phantom: −0.06 in white
    matter). Constrained Bayes (Louis 1984; Ghosh 1992) restores the ensemble's spread instead. In stabilised units
    (z_k = forward(y_k)·scale_k, where the noise is Gaussian with about one variance everywhere), per voxel over the
    group's n volumes,

        V_y = Σ_k (z_k − z̄)² / n − (n − 1)/n · s²      (the data's spread less the noise's)
        V_x = Σ_k (ẑ_k − m)² / n                         (ẑ_k = expected(x̂_k)·scale_k, m their mean)
        ẑ_k ← m + α·(ẑ_k − m),  α = clip(√((G * V_y − δ) / G * V_x), 1, max_gain),  x̂_k = inverse(ẑ_k / scale_k)

    with G a Gaussian of ``smooth`` voxels over the valid voxels (one voxel's V_y from ~30 volumes is too noisy); G * V_y
    counts only where it exceeds δ, ``margin_sd`` standard errors of G * V_y where there is only noise (so that a shell
    without directional signal keeps α = 1 instead of getting its noise back), and is taken as it is there (deducting
    δ instead biased FA low: :data:`MATCH_MARGIN_SD`). The noise variance s² is measured on the group's own
    stabilised volumes by MP-PCA over the volumes (:func:`c2s_cli.noise.policy.stabilised_noise`), not taken from
    the fitted σ: a σ too low inflates α (measured with the uncorrected series map: 1.1 dB lost). α ≥ 1: it only
    undoes shrinkage, and the group's mean is unchanged. On the DWI phantom at 5 % noise: FA RMSE in white matter
    0.088 → 0.069 (bias −0.065 → −0.046), DW +0.07 dB (with the true σ and the test at 2 SE: 0.086 → 0.056).

    ``out`` (X, Y, Z, T) image units, changed in place and returned; ``groups``: volume indices (groups with fewer
    volumes than MP-PCA needs are left as they are). Memory: the group's stabilised volumes.
    """
    from scipy import ndimage

    from c2s_cli.noise.policy import stabilised_noise

    valid = context.valid
    w = valid.astype(np.float32)
    den = np.maximum(ndimage.gaussian_filter(w, smooth), 1e-6)
    for idx in groups:
        n = len(idx)
        doms = [context.domains[t] for t in idx]
        z = np.stack([context.stabilised(t) for t in idx], -1)
        s = stabilised_noise(z)
        if s is None:
            continue  # too few volumes or blocks to measure the noise: left as it is
        s2 = np.square(s, dtype=np.float64)
        zh = np.stack([d.expected(out[..., t]) * np.float32(d.scale) for t, d in zip(idx, doms)], -1)
        m = zh.mean(-1, dtype=np.float64)
        v_y = z.var(-1, dtype=np.float64) - (n - 1) / n * s2
        v_x = zh.var(-1, dtype=np.float64)
        g_y = ndimage.gaussian_filter((v_y * w).astype(np.float32), smooth) / den
        g_x = ndimage.gaussian_filter((v_x * w).astype(np.float32), smooth) / den
        # V_y's own error: its noise part has std s²·√(2/(n − 1)) per voxel, averaged over the Gaussian's
        # (2√π·smooth)³ voxels; only a spread clearly above it counts (else α = 1: noise is not put back)
        margin = margin_sd * s2 * np.sqrt(2.0 / (n - 1)) / (2 * np.sqrt(np.pi) * smooth) ** 1.5
        g_y = np.where(g_y > margin, g_y, 0.0)  # a test, not a deduction: a clear spread is taken as measured
        alpha = np.where(valid, np.clip(np.sqrt(g_y / np.maximum(g_x, 1e-12)), 1.0, max_gain), 1.0)
        for j, (t, d) in enumerate(zip(idx, doms)):
            res = d.inverse(((m + alpha * (zh[..., j] - m)) / d.scale).astype(np.float32))
            out[..., t] = np.where(valid, res, out[..., t])
    return out


def _same_noise(a: NoiseDomain, b: NoiseDomain) -> bool:
    """The two domains stabilise with the same σ (the same map, or the same scalar) and the same noise model."""
    if a.use_vst != b.use_vst or a.coils != b.coils:
        return False
    if a.sigma_map is not None or b.sigma_map is not None:
        return a.sigma_map is b.sigma_map or (a.sigma_map is not None and b.sigma_map is not None
                                             and np.array_equal(a.sigma_map, b.sigma_map))
    return a.sigma == b.sigma


def check_start(start_volumes: int, neighbours: int) -> None:
    """Refuse fewer ``neighbours`` than a start model trained with ``start_volumes`` context volumes takes (its
    prediction and pooled mean, then its neighbours): a ValueError naming ``series_neighbours``."""
    if start_volumes > neighbours + 2:
        raise ValueError(f"series_neighbours: the series start model takes {start_volumes - 2} neighbours; give at "
                         f"least that many, not {neighbours}")


def widen(model: Precond, volumes: int) -> Precond:
    """``model`` taking ``volumes`` context volumes after its target slices: the shipped (or any context-free) network,
    or a start model already trained with fewer context volumes (``scripts/train_series_start.py``), gets the missing
    channels with zero first-layer weights (after its own), so it computes exactly what ``model`` computes until
    trained; a model with exactly ``volumes`` is copied as it is. (Starting the prediction channel from half the
    centre slice's weights instead was measured and did not help: the note of 2026-12-03.)"""
    have = model.cfg.volumes
    check_start(have, volumes - 2)
    cfg = dataclasses.replace(model.cfg, volumes=volumes)
    return with_zero_inputs(model, cfg, model.n_target + have, volumes - have)


# training steps on the series when none are given: from a start model already trained with its context channels
# (scripts/train_series_start.py) 200 — on the DWI phantom at 5 % (2026-12-03, 2 threads) 0 / 200 / 400 steps gave
# DW 35.19 / 35.70 / 35.69 dB, b0 33.45 / 33.56 / 33.61, in 25 / 37 / 48 s; from a context-free start model, whose
# context channels start at zero weight, 400 (the earlier sweep: 400 → 1000 steps still +0.8 dB DW)
STEPS_TRAINED_START = 200
STEPS_FRESH_START = 400

# the series mode's exact unbiased inverse averages over this uncertainty of the network's stabilised estimate (std,
# units of σ; NoiseDomain.floor_spread): without it a third of the b = 2000 values in CSF came out exactly 0 on the
# DWI phantom, and a tensor fit reads an exact zero as infinite diffusivity along that direction. Chosen on a
# validation phantom from the training anatomy (MNI z 0-33, series_from_t1 seed 7; 2026-12-03, session 18), spread
# 0 / 0.25 / 0.5 / 1: DW 34.13 / 34.40 / 34.59 / 34.36 dB, FA RMSE brain 0.122 / 0.087 / 0.082 / 0.077, WM 0.050 /
# 0.046 / 0.045 / 0.047 at 5 % noise; DW 27.14 / 27.58 / 27.94 / 27.53, FA brain 0.214 / 0.150 / 0.142 / 0.153 at 10 %
FLOOR_SPREAD = 0.5
# the series mode's estimate moved towards each volume's prediction from the other volumes (the first context channel)
# by this weight, in network units before the inverse (SeriesConfig.prediction_weight). Measured on the validation
# phantom of the training anatomy (c2s_bench.dwi_prediction_weight, session 20) at w 0 / 0.1 / 0.15 / 0.2: b0 +0.05 to
# +0.16 dB, DW +0.05 to +0.21 dB, but FA RMSE in the brain flat (mean 0.0981 / 0.0981 / 0.0981 / 0.0982), in white
# matter +0.0002 to +0.0005, MD +0.0003 to +0.0015: by the rule written before (the lowest FA brain) it stays 0
PREDICTION_WEIGHT = 0.0
# a diffusion series' estimate moved towards its projection on the noisy series' local low-rank subspace by this
# weight (project_subspace), before match_variance (SeriesConfig.subspace_weight). Chosen on the validation phantom of
# the training anatomy (c2s_bench.dwi_project_probe, session 21) by a rule written before the unseen phantom was run:
# see benchmarks/notes/2026-12-04-session-21-the-series-subspace.md
SUBSPACE_WEIGHT = 1.0


def default_steps(start_volumes: int) -> int:
    """The training steps on the series for a start model that takes ``start_volumes`` context volumes."""
    return STEPS_TRAINED_START if start_volumes else STEPS_FRESH_START


@dataclasses.dataclass(frozen=True)
class SeriesConfig:
    """The series mode's settings: ``neighbours`` nearest volumes (plus one pooled mean and one prediction) as
    context; ``steps`` of self-supervised training on the series (batch 8, 64² patches, axial; None: the start
    model's :func:`default_steps`), learning rate ``lr``; ``seed``; ``match_variance``: give each diffusion shell the
    directional spread the data show (:func:`match_variance`); ``subspace_weight``: before that, move a diffusion
    series' estimate towards its projection on the series' local subspace (:func:`project_subspace`)."""

    neighbours: int = 2
    steps: int | None = None
    lr: float = 5e-4
    seed: int = 0
    match_variance: bool = True  # restore each diffusion shell's directional spread (match_variance)
    floor_spread: float = FLOOR_SPREAD  # the inverse's averaging at the Rician floor (NoiseDomain.floor_spread)
    prediction_weight: float = PREDICTION_WEIGHT  # f = D + w·(P − D), P the prediction from the other volumes
    subspace_weight: float = SUBSPACE_WEIGHT  # a diffusion series: the move towards the local subspace (project_subspace)

    def validate(self) -> None:
        if not 0 <= self.neighbours <= 14:
            raise ValueError(f"series_neighbours must be 0 to 14, got {self.neighbours}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"series_steps must be ≥ 0, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"series_lr must be > 0, got {self.lr}")
        if not 0 <= self.floor_spread <= 2:
            raise ValueError(f"series_floor_spread must be 0 to 2, got {self.floor_spread}")
        if not 0 <= self.prediction_weight <= 1:
            raise ValueError(f"series_prediction_weight must be 0 to 1, got {self.prediction_weight}")
        if not 0 <= self.subspace_weight <= 1:
            raise ValueError(f"series_subspace_weight must be 0 to 1, got {self.subspace_weight}")


def train_on_series(
    model: Precond, run_config: RunConfig, context: SeriesContext, cfg: SeriesConfig, *, slice_axis: int = 2,
    on_log: Callable[[dict[str, Any]], None] | None = None, bf16: bool = False,
) -> tuple[Precond, RunConfig]:
    """Widen ``model`` to the series' context channels and train it with the GDSM loss on the series itself (every
    volume a training volume, its context as the extra channels), with bf16 autocast when ``bf16`` (the Denoiser's
    precision: where the CPU runs bf16 natively; measured on the DWI phantom: 0.03 dB below fp32, about a third
    faster). Returns the EMA model and the run config used."""
    from c2s_cli.loop import train

    cfg.validate()
    steps = cfg.steps if cfg.steps is not None else default_steps(model.cfg.volumes)
    net = widen(model, cfg.neighbours + 2)
    rc = series_run_config(run_config, net, steps=steps, lr=cfg.lr, seed=cfg.seed, bf16=bf16)
    if steps == 0:
        return net.eval(), rc
    res = train(rc, train_volumes(context, slice_axis=slice_axis), None, None, data_summary={}, init=net,
                on_log=on_log)
    return res.model.eval(), rc


def series_run_config(run_config: RunConfig, net: Precond, *, steps: int, lr: float, seed: int, bf16: bool,
                      warmup: int | None = None, ema_halflife: int | None = None, log_every: int | None = None
                      ) -> RunConfig:
    """The run config of GDSM training with context (:func:`train_on_series`, and the start model's training in
    ``scripts/train_series_start.py``): ``net``'s model config, batch 8 of 64² axial patches, no validation split, no
    augmentation beyond flips; warmup, EMA half-life and log interval by default from ``steps`` (1/8, 1/8, 1/20)."""
    return dataclasses.replace(
        run_config, model=net.cfg,
        train=dataclasses.replace(
            run_config.train, steps=steps, lr=lr, warmup=warmup if warmup is not None else min(50, max(1, steps // 8)),
            val_fraction=0.0, patch_size=64, batch_size=8,
            ema_halflife=ema_halflife if ema_halflife is not None else max(5, steps // 8), planes=("axial",),
            seed=seed, log_every=log_every if log_every is not None else max(1, steps // 20), add_noise=None,
            invert=0.0, guide_dropout=0.0, distill_planes=0.0, bf16=bf16))


def train_volumes(context: SeriesContext, *, slice_axis: int = 2, name: str = "") -> list[Any]:
    """Every volume of the series as a training volume (axial slices), its context as the extra channels."""
    from c2s_cli.data import make_train_volume

    return [make_train_volume(np.asarray(frame, np.float32), dom, slice_axis=slice_axis, planes=("axial",),
                              name=f"{name}volume {t}", guides=context(t))
            for t, (frame, dom) in enumerate(zip(context.frames, context.domains))]


def denoise_series(
    model: Precond, context: SeriesContext, *, slice_axis: int = 2, batch_size: int | None = None,
    device: torch.device | None = None, bf16: bool = False, on_volume: Callable[[int, int], None] | None = None,
    strength: float = 1.0, self_similarity: SelfSimilarity | None = None, fits: list[Any] | None = None,
    prediction_weight: float = 0.0,
) -> NDArray[np.float32]:
    """x̂_t = D(y_t, context_t, strength·σ_d) for every volume of the series (image units, (X, Y, Z, T)).
    ``self_similarity``: blend each volume's output with its NL-means estimate by SURE's weight
    (:func:`c2s_cli.infer.self_similarity`, the context as extra channels), one weight per shell fitted on its middle
    volume; each shell's fit is appended to ``fits``. ``prediction_weight`` w: then move it towards the volume's
    prediction from the other volumes P (the first context channel), f ← f + w·(P − f) in network units
    (:func:`c2s_cli.infer.denoise_frame`'s ``context_weight``)."""
    from c2s_cli.infer import denoise_frame, self_similarity as fit_blend

    frames = context.frames
    out = np.empty(np.shape(frames[0]) + (len(frames),), np.float32)
    unit = NoiseDomain.identity(1.0)  # the context is already in the target's network units
    # one weight per shell (the volumes that pool each other; the whole series without a gradient table), fitted on
    # the shell's middle volume: SURE's weight follows the SNR, which the volumes of a shell share
    shell_of = [min(int(t), *(int(i) for i in context.pool[t])) for t in range(len(frames))]
    members: dict[int, list[int]] = {}
    for t, key in enumerate(shell_of):
        members.setdefault(key, []).append(t)
    shell_fit: dict[int, Any] = {}
    for t, (frame, dom) in enumerate(zip(frames, context.domains)):
        guides = [(c, unit) for c in context(t)]
        blend = None
        if self_similarity is not None:
            key = shell_of[t]
            if key not in shell_fit:
                group = members[key]
                m = group[len(group) // 2]
                shell_fit[key] = fit_blend(model, frames[m], context.domains[m], self_similarity, axis=slice_axis,
                                           device=device, batch_size=batch_size, strength=strength,
                                           guides=[(c, unit) for c in context(m)])
                if fits is not None:
                    fits.append(shell_fit[key])
            blend = [shell_fit[key]]
        out[..., t] = denoise_frame(model, frame, dom, axes=(slice_axis,), guides=guides, batch_size=batch_size,
                                    device=device, bf16=bf16, strength=strength, blend=blend,
                                    context_weight=prediction_weight)
        if on_volume:
            on_volume(t + 1, len(frames))
    return out
