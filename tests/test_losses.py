"""The GDSM loss is right: its minimiser is E[x_tg | x_t] (toy with a closed form), and loss differences equal
supervised-loss differences in expectation (Monte-Carlo)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from c2s_cli.config import GDSMConfig
from c2s_cli.losses import GDSMLoss

MU, S0 = 1.0, 0.15  # prior: x0 = ±MU + N(0, S0²), equal weights
SIGMA_D = 0.4


class ToyPrecond(nn.Module):
    """Scalar 'images' (B, 1, 1, 1): D(x, σ) = c_skip x + c_out MLP(c_in x, log σ)."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(context=0)
        self.n_target = 1
        self.mlp = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *, autocast_bf16: bool = False) -> torch.Tensor:
        s = sigma.reshape(-1, 1)
        sd = 1.0
        xf = x.reshape(-1, 1)
        c_in, c_skip, c_out = 1 / (s**2 + sd**2).sqrt(), sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        f = self.mlp(torch.cat([c_in * xf, s.log()], dim=1))
        return (c_skip * xf + c_out * f).reshape(x.shape)


def posterior_mean_x0(x: np.ndarray, s: float) -> np.ndarray:
    """E[x0 | x] for x = x0 + s·n under the two-Gaussian prior."""
    v = S0**2 + s**2
    logw = np.stack([-(x - m) ** 2 / (2 * v) for m in (-MU, MU)])
    w = np.exp(logw - logw.max(0))
    w /= w.sum(0)
    means = np.stack([m + S0**2 / v * (x - m) for m in (-MU, MU)])
    return (w * means).sum(0)


def sample_y(n: int, gen: torch.Generator) -> torch.Tensor:
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    x0 = sign * MU + S0 * torch.randn(n, generator=gen)
    return (x0 + SIGMA_D * torch.randn(n, generator=gen)).reshape(n, 1, 1, 1)


@pytest.fixture
def one_thread():
    """A tiny MLP runs faster on one thread (no OpenMP oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("frac", [0.0, 0.5])
def test_gdsm_minimiser_is_posterior_mean(frac: float, one_thread: None) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = ToyPrecond()
    loss_fn = GDSMLoss(GDSMConfig(tau_max=3.0, alpha=0.0, gamma_power=1.0, target_fraction=frac))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(600):
        y = sample_y(2048, gen)
        loss = loss_fn(net, y, torch.full((2048,), SIGMA_D), torch.ones_like(y), generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 400:
            for g in opt.param_groups:
                g["lr"] = 1e-3
    s_t = float(np.hypot(SIGMA_D, 0.6))  # τ = 0.6, inside the training range
    x = np.linspace(-2.0, 2.0, 81)
    s_tg = frac * SIGMA_D
    truth = (s_tg**2 / s_t**2) * x + (1 - s_tg**2 / s_t**2) * posterior_mean_x0(x, s_t)
    with torch.no_grad():
        pred = net(torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 1, 1), torch.full((81,), s_t)).reshape(-1).numpy()
    # the posterior mean spans ≈ [-1.3, 1.3]; identity would be off by up to 0.7
    rmse = np.sqrt(np.mean((pred - truth) ** 2))
    print(f"frac={frac}: rmse {rmse:.4f}, max {np.max(np.abs(pred - truth)):.4f}, identity rmse {np.sqrt(np.mean((x - truth) ** 2)):.3f}")
    assert rmse < 0.05
    assert np.max(np.abs(pred - truth)) < 0.12


class LinearNet(nn.Module):
    """D(x, σ) = a·x + b on scalar 'images', recording the inputs GDSMLoss gave it (x_t and σ_t)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(context=0)
        self.n_target = 1
        self.a, self.b = a, b
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *, autocast_bf16: bool = False) -> torch.Tensor:
        self.seen.append((x.detach().clone(), sigma.detach().clone()))
        return self.a * x + self.b


@pytest.mark.parametrize("frac", [0.0, 0.6])
def test_loss_differences_equal_supervised(frac: float) -> None:
    """GDSMLoss itself, with the paper's weight: E[L(D1) − L(D2)] = E[γ²·(‖D1 − x_tg‖² − ‖D2 − x_tg‖²)], with x_t,
    σ_t (hence τ and γ) as the loss drew them — so the loss ranks denoisers as the supervised loss against x_tg
    does, and its minimiser is E[x_tg | x_t] (Monte-Carlo, Gaussian prior, 2·10⁶ draws)."""
    gen = torch.Generator().manual_seed(1)
    n = 2_000_000
    s_tg = frac * SIGMA_D
    x0 = torch.randn(n, generator=gen)
    x_tg = (x0 + s_tg * torch.randn(n, generator=gen)).reshape(n, 1, 1, 1)
    y = x_tg + float(np.sqrt(SIGMA_D**2 - s_tg**2)) * torch.randn(n, 1, 1, 1, generator=gen)
    loss = GDSMLoss(GDSMConfig(tau_max=2.0, alpha=0.0, gamma_power=0.0, target_fraction=frac))
    sd, mask = torch.full((n,), SIGMA_D), torch.ones_like(y)
    nets = [LinearNet(0.7, 0.0), LinearNet(0.3, 0.1)]
    losses = [loss(net, y, sd, mask, generator=torch.Generator().manual_seed(7)) for net in nets]  # same τ, noise
    lhs = float((losses[0] - losses[1]).mean())
    x_t, sigma_t = nets[0].seen[0]
    torch.testing.assert_close(nets[1].seen[0][0], x_t)  # both nets saw the same re-corrupted input
    tau2 = sigma_t.reshape(n, 1, 1, 1) ** 2 - SIGMA_D**2
    gamma = tau2 / (tau2 + SIGMA_D**2 - s_tg**2)
    assert float(tau2.min()) >= -1e-6 and float(tau2.max()) <= (2.0 * SIGMA_D) ** 2 + 1e-5  # τ ∈ (0, T·σ_d]
    sup = [(net.a * x_t + net.b - x_tg) ** 2 for net in nets]
    rhs = float((gamma**2 * (sup[0] - sup[1])).mean())
    assert abs(rhs) > 0.02  # the two denoisers differ measurably
    assert lhs == pytest.approx(rhs, abs=4e-3)


def test_loss_class_matches_formula_and_mask() -> None:
    gen = torch.Generator().manual_seed(3)
    net = ToyPrecond()
    cfg = GDSMConfig(tau_max=2.0, alpha=-1.0, gamma_power=1.0, target_fraction=0.3)
    y = torch.randn(16, 1, 1, 1, generator=gen)
    sd = torch.full((16,), 0.2)
    mask = torch.ones_like(y)
    mask[:4] = 0
    g1 = torch.Generator().manual_seed(5)
    out = GDSMLoss(cfg)(net, y, sd, mask, generator=g1)
    # recompute by hand with the same draws
    g2 = torch.Generator().manual_seed(5)
    u = 1.0 - torch.rand((16, 1, 1, 1), generator=g2)
    tau = u * 2.0 * 0.2
    n = torch.randn((16, 1, 1, 1), generator=g2)
    x_t = y + tau * n
    s_t = torch.sqrt(0.2**2 + tau**2)
    gamma = tau**2 / (tau**2 + 0.04 - (0.3 * 0.2) ** 2)
    d = net(x_t, s_t.reshape(16))
    ref = (tau**2 + 0.04) ** -1.0 * gamma**-1.0 * (gamma * d + (1 - gamma) * x_t - y) ** 2
    torch.testing.assert_close(out[4:], ref[4:])
    assert torch.all(out[:4] == 0)
    assert out.shape == y.shape
    with pytest.raises(ValueError):
        GDSMLoss(GDSMConfig(target_fraction=1.0))
