"""Single solver steps against hand-written updates, and the differentiable unfolding path against
the sampling path and finite differences: fast checks that catch a wrong sign, square or factor
in one line of a solver (each of which the convergence tests alone can miss)."""
import math

import pytest
import torch
from test_solvers_posterior import gaussian_problem

from fastsd.ops.image import Inpainting, random_pixel_mask
from fastsd.solvers.ddgm import DDGM
from fastsd.solvers.diffusion import ddim_step
from fastsd.solvers.dps import DPS
from fastsd.solvers.projdiff import ProjDiff
from fastsd.solvers.unfolding import DiffUnfolding
from fastsd.testing import assert_close


class StubDenoiser:
    """A linear "denoiser" ``D(x, σ) = x / (1 + σ²) + 0.1`` that records the σ it was called with."""

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma):
        self.sigmas.append(float(sigma))
        return x / (1 + float(sigma) ** 2) + 0.1


def _inpainting(seed=0, shape=(1, 1, 6, 7)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    op = Inpainting(random_pixel_mask(shape[-2:], 0.5, seed=seed).double())
    return op, op(x)


@pytest.mark.parametrize("lr", [1.0, 0.7])
def test_projdiff_noisy_steps_match_hand_written_update(lr):
    """Two steps of the noisy variant: one at a level above the measurement noise s (fresh noise of
    std sqrt(σ² − s²) on u), one below it (interpolation towards u)."""
    op, y = _inpainting()
    s, seed = 0.05, 4
    D = StubDenoiser()
    solver = ProjDiff(D, steps=2, lr=lr, noise_level=s, seed=seed)
    s0, s1 = solver.sigmas
    assert s0 >= s > s1  # one step in each branch
    x = solver.solve(y, op).x

    g = torch.Generator().manual_seed(seed)  # the solver's draws, in the solver's order
    eps = [torch.randn(y.shape, generator=g, dtype=torch.float64) for _ in range(4)]
    ref = StubDenoiser()
    x0 = ref(s0 * eps[0], s0)
    u = x0 + s * eps[1]
    z = u + math.sqrt(s0**2 - s**2) * eps[2]
    x0 = ref(z, s0)
    u = op.project(x0 + s * eps[3], y)
    z = x0 + (s1 / s) * (u - x0)
    x0 = x0 + lr * (ref(z, s1) - x0)
    assert_close("x", x, x0)
    assert D.sigmas == ref.sigmas == [s0, s0, s1]


def test_projdiff_noise_free_step_matches_hand_written_update():
    op, y = _inpainting(seed=1)
    D = StubDenoiser()
    solver = ProjDiff(D, steps=1, lr=0.6, seed=2)
    x = solver.solve(y, op).x
    (s0,) = solver.sigmas
    g = torch.Generator().manual_seed(2)
    e0, e1 = (torch.randn(y.shape, generator=g, dtype=torch.float64) for _ in range(2))
    ref = StubDenoiser()
    x0 = ref(s0 * e0, s0)
    x0 = op.project(x0 + 0.6 * (ref(x0 + s0 * e1, s0) - x0), y)
    assert_close("x", x, x0)


def test_unfolding_differentiable_path_matches_sampling_and_finite_differences():
    """``unfold`` (training) takes ∇g through forward/adjoint, ``solve`` through the fused fidelity:
    the same iteration, so the same output; and its gradient in log γ matches finite differences."""
    op, y, prior, pm, _, _ = gaussian_problem(0.05, copies=2)
    model = DiffUnfolding(prior, steps=4, noise_level=0.05, seed=0)
    with torch.no_grad():
        sampled = model.solve(y, op).x
    pb = model.problem(y, op)
    assert_close("unfold", pb.from_net(model.unfold(pb)), sampled)

    def loss():
        p = model.problem(y, op)
        return (p.from_net(model.unfold(p)) - pm).pow(2).sum()

    model.log_gamma.grad = None
    loss().backward()
    grad = model.log_gamma.grad.clone()
    assert grad.abs().max() > 0
    for k in range(len(grad)):  # central differences at the parameter's own (float32) values
        with torch.no_grad():
            centre = model.log_gamma[k].item()
            vals = []
            for v in (centre + 1e-3, centre - 1e-3):
                model.log_gamma[k] = v
                vals.append((model.log_gamma[k].item(), float(loss())))
            model.log_gamma[k] = centre
        (a, up), (b, down) = vals
        assert (up - down) / (a - b) == pytest.approx(float(grad[k]), rel=1e-4, abs=1e-9)


def _scaled_gaussian_problem(scale=2.0):
    """The Gaussian test problem with ‖A‖ = ``scale`` (not 1, so a step size of 1/‖A‖² is visible)."""
    op, y, prior, _, _, _ = gaussian_problem(0.05, copies=2)
    op.A.mul_(scale)
    return op, y * scale, prior


@pytest.mark.parametrize("step_size", [None, 0.1])
def test_ddgm_steps_match_hand_written_update(step_size):
    """K gradient steps x ← x − η_n Aᵀ(A x − y) with η_n = η₀·decay^(n/(N−1)) (η₀ = 1/‖A‖² by
    default), then the denoiser: a step twice as large, or the squared-norm gradient's factor 2
    left in, changes the result by far more than the tolerance."""
    op, y, prior = _scaled_gaussian_problem()
    N, K, decay = 4, 3, 0.1
    res = DDGM(prior, iterations=N, inner_steps=K, step_size=step_size, step_decay=decay, add_noise=False,
               sigma_max=0.5, sigma_min=0.05).solve(y, op)
    eta0 = 0.25 if step_size is None else step_size  # ‖A‖ = 2
    assert res.info["step_size"] == pytest.approx(eta0, rel=1e-3)
    x = op.adjoint(y)
    for n in range(N):
        f = n / (N - 1)
        for _ in range(K):
            x = x - res.info["step_size"] * decay**f * op.adjoint(op(x) - y)
        x = prior(x, 0.5 * (0.05 / 0.5) ** f)
    assert_close("x", res.x, x)


@pytest.mark.parametrize("steps", [1, 3])
def test_dps_step_uses_the_gradient_of_the_unsquared_residual_norm(steps):
    """x ← DDPM step(x, x̂₀) − ζ ∇ₓ‖y − A x̂₀(x)‖ (un-squared, as in the paper): the reference takes
    the gradient in closed form for the linear Gaussian-prior denoiser x̂₀ = μ + W (x/√ᾱ − μ)."""
    op, y, prior = _scaled_gaussian_problem()
    zeta, seed = 0.3, 5
    res = DPS(prior, steps=steps, zeta=zeta, seed=seed).solve(y, op)
    solver = DPS(prior, steps=steps)
    ts, ab = solver.timesteps, solver.alpha_bar
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(y.shape[0], 16, generator=g, dtype=torch.float64)
    eye = torch.eye(16, dtype=torch.float64)
    for i, t in enumerate(ts):
        ab_t = float(ab[t])
        ab_prev = float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        s2 = (1 - ab_t) / ab_t
        W = prior(eye, s2**0.5) - prior(torch.zeros(1, 16, dtype=torch.float64), s2**0.5)  # rows: W e_k (W symmetric)
        x0 = prior(x / ab_t**0.5, s2**0.5)
        r = op(x0) - y
        grad = (r / r.norm(dim=1, keepdim=True)) @ op.A @ W / ab_t**0.5  # ∇ₓ‖A x̂₀ − y‖
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64) if ab_prev < 1 else None
        x = ddim_step(x, x0, ab_t, ab_prev, eta=1.0, noise=noise) - zeta * grad
    assert_close("x", res.x, x)
