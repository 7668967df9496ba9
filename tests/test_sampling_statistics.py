"""Statistical properties of the estimators: unbiasedness, 1/sqrt(n) error, closed-form variance.

Data: heavy-tailed rows laid out as [batch, positions], with padding rows whose output gradient
is zero and gradient norms that decay with position — what transformer layers show (WTA-CRS §3).
Every tolerance is a number of standard errors computed from the draws themselves.
"""

import math

import pytest
import torch
from torch import nn

import leantrain as lt
from leantrain.sampling.estimators import (
    RowSample,
    estimate_weight_grad,
    expected_squared_error,
    probabilities,
    sample_rows,
    sample_size,
    winner_count,
)

BATCH, POSITIONS, D_IN, D_OUT = 8, 32, 24, 12
Z_LIMIT = 4.5  # |z| beyond this has probability < 1e-5 under the null hypothesis


def heavy_tailed_problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, POSITIONS, D_IN, generator=g)
    x *= torch.empty(BATCH, POSITIONS, 1).exponential_(generator=g) ** 2
    position_scale = torch.linspace(2.0, 0.2, POSITIONS)[None, :, None]
    dy = torch.randn(BATCH, POSITIONS, D_OUT, generator=g) * position_scale
    dy *= torch.empty(BATCH, POSITIONS, 1).exponential_(generator=g)
    lengths = torch.randint(POSITIONS // 4, POSITIONS + 1, (BATCH,), generator=g)
    dy *= (torch.arange(POSITIONS)[None, :] < lengths[:, None]).float()[..., None]  # padding: dY = 0
    return x, dy


def layer_draws(method: str, importance: str, budget: float, draws: int, warmup: int = 50) -> torch.Tensor:
    """dW estimates from a SampledLinear fed the same (x, dY) ``draws`` times, after ``warmup`` steps."""
    x, dy = heavy_tailed_problem()
    layer = nn.Sequential(nn.Linear(D_IN, D_OUT, bias=False))
    lt.apply_sampling(layer, lt.SamplingConfig(method, budget, importance=importance, seed=1), targets=["0"])
    estimates = []
    for step in range(warmup + draws):
        layer.zero_grad(set_to_none=True)
        with lt.sample_ids(layer, torch.arange(BATCH)):
            (layer(x) * dy).sum().backward()
        if step >= warmup:
            estimates.append(layer[0].weight.grad.clone())
    return torch.stack(estimates)


def directional_z(estimates: torch.Tensor, exact: torch.Tensor, directions: int = 8) -> torch.Tensor:
    """z-scores of the mean error along fixed random directions (scalar CLT; N(0,1) if unbiased)."""
    g = torch.Generator().manual_seed(123)
    u = torch.randn(directions, *exact.shape, generator=g, dtype=torch.float64)
    u = torch.cat([u, exact.double()[None]])  # also the direction of the gradient itself
    projections = torch.einsum("tij,dij->td", estimates.double() - exact.double(), u)
    return projections.mean(0) / (projections.std(0) / math.sqrt(len(estimates)))


def exact_grad() -> torch.Tensor:
    x, dy = heavy_tailed_problem()
    return dy.reshape(-1, D_OUT).t() @ x.reshape(-1, D_IN)


@pytest.mark.parametrize("importance", ["norm", "running", "cached"])
@pytest.mark.parametrize("method", ["crs", "wtacrs"])
def test_monte_carlo_mean_converges_to_exact_gradient(method, importance):
    estimates = layer_draws(method, importance, budget=0.2, draws=1500)
    z = directional_z(estimates, exact_grad())
    assert z.abs().max() < Z_LIMIT, f"{method}/{importance}: directional z-scores {z.tolist()}"


def unweighted_first_epoch_draws(x: torch.Tensor, k: int, generator: torch.Generator) -> RowSample:
    """The released WTA-CRS code's epoch-1 path (its epoch-1 branch): draws scaled by (1−P_C) only. Biased."""
    p = probabilities(x.norm(dim=1))
    top_p, top_idx = torch.topk(p, k)
    c = int(winner_count(top_p, k))
    rest = p.clone()
    rest[top_idx[:c]] = 0
    draws = torch.multinomial(rest, k - c, replacement=True, generator=generator)
    weights = torch.cat([torch.ones(c), rest.sum().expand(k - c)])
    return RowSample(torch.cat([top_idx[:c], draws]), weights)


def test_directional_test_detects_the_official_codes_biased_path():
    x, dy = (t.reshape(-1, t.shape[-1]) for t in heavy_tailed_problem())
    g = torch.Generator().manual_seed(0)
    k = sample_size(x.shape[0], 0.2, 10)
    estimates = torch.stack([
        estimate_weight_grad(dy, x[s.indices], s)
        for s in (unweighted_first_epoch_draws(x, k, g) for _ in range(300))
    ])
    assert directional_z(estimates, dy.t() @ x).abs().max() > 3 * Z_LIMIT


@pytest.mark.parametrize("method", ["crs", "wtacrs"])
def test_squared_error_of_the_mean_shrinks_like_one_over_draws(method):
    """E‖Ḡ_n − G‖² = V/n: checked at n = 8 and n = 128 by averaging over independent replicates."""
    x, dy = (t.reshape(-1, t.shape[-1]) for t in heavy_tailed_problem())
    importance, exact = x.norm(dim=1), dy.t() @ x
    k = sample_size(x.shape[0], 0.2, 10)
    v = expected_squared_error(x, dy, importance, method, k)
    g = torch.Generator().manual_seed(7)
    for n, replicates in [(8, 400), (128, 60)]:
        scaled_errors = torch.tensor([
            n * (torch.stack([
                estimate_weight_grad(dy, x[s.indices], s)
                for s in (sample_rows(importance, method, 0.2, 10, g) for _ in range(n))
            ]).mean(0) - exact).square().sum().item() / v
            for _ in range(replicates)
        ])
        mean, se = scaled_errors.mean().item(), scaled_errors.std().item() / math.sqrt(replicates)
        assert abs(mean - 1.0) < Z_LIMIT * se, f"n={n}: n·E‖Ḡ−G‖²/V = {mean:.3f} ± {se:.3f}, expected 1"


def source_scores(importance: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, output gradients and the scores a warmed-up importance source gives them."""
    x, dy = heavy_tailed_problem()
    layer = nn.Sequential(nn.Linear(D_IN, D_OUT, bias=False))
    lt.apply_sampling(layer, lt.SamplingConfig("wtacrs", 0.2, importance=importance, seed=0), targets=["0"])
    for _ in range(200):  # the running average converges geometrically to the per-position means
        with lt.sample_ids(layer, torch.arange(BATCH)):
            (layer(x) * dy).sum().backward()
    sampler = layer[0].sampler
    scores = sampler.source.scores(x.norm(dim=-1), torch.arange(BATCH)).flatten()
    return x.reshape(-1, D_IN), dy.reshape(-1, D_OUT), scores


@pytest.mark.parametrize("importance", ["norm", "running", "cached"])
@pytest.mark.parametrize("method", ["crs", "wtacrs"])
def test_empirical_variance_matches_closed_form(method, importance):
    x, dy, scores = source_scores(importance)
    k = sample_size(x.shape[0], 0.2, 10)
    v = expected_squared_error(x, dy, scores, method, k)
    g = torch.Generator().manual_seed(11)
    exact = dy.t() @ x
    errors = torch.tensor([
        (estimate_weight_grad(dy, x[s.indices], s) - exact).square().sum().item()
        for s in (sample_rows(scores, method, 0.2, 10, g) for _ in range(2000))
    ])
    se = errors.std().item() / math.sqrt(len(errors))
    assert abs(errors.mean().item() - v) < Z_LIMIT * se, f"empirical {errors.mean():.4g} vs closed form {v:.4g}"


@pytest.mark.parametrize("budget", [0.1, 0.2, 0.3])
@pytest.mark.parametrize("importance", ["norm", "running", "cached"])
def test_wtacrs_variance_is_at_most_crs_variance_on_heavy_tailed_rows(importance, budget):
    x, dy, scores = source_scores(importance)
    k = sample_size(x.shape[0], budget, 10)
    assert expected_squared_error(x, dy, scores, "wtacrs", k) <= expected_squared_error(x, dy, scores, "crs", k)


def test_learnt_importance_beats_row_norms_on_variance():
    x, dy, norm_scores = source_scores("norm")
    k = sample_size(x.shape[0], 0.2, 10)
    v_norm = expected_squared_error(x, dy, norm_scores, "wtacrs", k)
    for importance in ["running", "cached"]:
        assert expected_squared_error(x, dy, source_scores(importance)[2], "wtacrs", k) < 0.7 * v_norm


def test_topk_is_biased_and_says_so():
    x, dy = (t.reshape(-1, t.shape[-1]) for t in heavy_tailed_problem())
    k = sample_size(x.shape[0], 0.2, 10)
    bias_sq = expected_squared_error(x, dy, x.norm(dim=1), "topk", k)
    assert bias_sq > 1e-3 * (dy.t() @ x).square().sum()
    assert "BIASED" in sample_rows.__globals__["biased_topk"].__doc__


@pytest.mark.parametrize("method", ["crs", "wtacrs"])
def test_a_sample_holds_k_rows_whatever_the_draws_and_degenerate_importance_stays_exact(method):
    """k rows always (a row drawn twice is kept twice, at the estimate's weight); all-zero importance gives
    weights 0, so dW = 0 as every pair is taken to be; with mass on fewer than k rows WTA-CRS keeps them all as
    winners and its draws get weight 0: the exact gradient of those rows."""
    x, dy = (t.reshape(-1, t.shape[-1]) for t in heavy_tailed_problem())
    g = torch.Generator().manual_seed(0)
    k = sample_size(x.shape[0], 0.2, 10)
    concentrated = torch.zeros(x.shape[0])
    concentrated[[3, 50, 51]] = torch.tensor([5.0, 1.0, 0.01])
    for importance in (x.norm(dim=1), concentrated, torch.zeros(x.shape[0])):
        sample = sample_rows(importance, method, 0.2, 10, g)
        assert sample.indices.shape == sample.weights.shape == (k,)
    assert sample_rows(torch.zeros(x.shape[0]), method, 0.2, 10, g).weights.abs().sum() == 0
    crs_sample = sample_rows(concentrated, "crs", 0.2, 10, g)
    assert len(crs_sample.indices.unique()) < k  # three rows drawn k times: repeats kept
    if method == "wtacrs":
        sample = sample_rows(concentrated, method, 0.2, 10, g)
        rows = [3, 50, 51]
        exact = dy[rows].t() @ x[rows]
        torch.testing.assert_close(estimate_weight_grad(dy, x[sample.indices], sample), exact)
