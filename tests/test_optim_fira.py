"""FiraAdamW: the norm-growth limiter, the column-wise scaling, both residuals, and the official code."""

import itertools

import pytest
import torch
from optim_helpers import gradient_sequence, run, weights

import leantrain.optim as lo


def residual_norms(limiter, steps=6):
    """‖S_t‖ for gradients G_t = A + 2^t·E: a fixed rank-2 part A and an out-of-subspace part E that doubles."""
    (weight,) = weights((8, 12))
    generator = torch.Generator().manual_seed(3)
    signal = torch.randn(8, 2, generator=generator) @ torch.randn(2, 12, generator=generator)
    u, _, _ = torch.linalg.svd(signal)
    noise = (torch.eye(8) - u[:, :2] @ u[:, :2].T) @ torch.randn(8, 12, generator=generator)
    optimizer = lo.FiraAdamW([{"params": [weight], "rank": 2, "update_proj_gap": 100}], lr=1e-3, limiter=limiter)
    norms = []
    for step in range(steps):
        run(optimizer, [weight], [[signal + 0.01 * 2.0**step * noise]])
        norms.append(optimizer.state[weight]["residual_norm"].item())
    return [after / before for before, after in itertools.pairwise(norms)]


def test_limiter_caps_norm_growth_at_gamma():
    ratios = residual_norms(limiter=1.01)
    assert all(ratio == pytest.approx(1.01, rel=1e-5) for ratio in ratios), ratios


def test_without_the_limiter_the_same_residual_grows_freely():
    ratios = residual_norms(limiter=1e9)
    assert all(ratio > 1.5 for ratio in ratios), ratios


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_first_step_matches_the_equations(shape):
    """Step 1: Adam's ψ(R) = sign(R)·(1−β1)/√(1−β2) elementwise; S = φ ⊙ (G − BR), φ per kept column/row."""
    (weight,) = weights(shape)
    start = weight.detach().clone()
    optimizer = lo.FiraAdamW([{"params": [weight], "rank": 2, "scale": 0.5}], lr=0.1, eps=0.0)
    (grad,) = gradient_sequence([weight], steps=1)[0]
    run(optimizer, [weight], [[grad]])
    side = "left" if shape[0] < shape[1] else "right"
    u, _, vh = torch.linalg.svd(grad, full_matrices=False)
    basis = u[:, :2] if side == "left" else vh[:2].T
    low = basis.T @ grad if side == "left" else grad @ basis
    psi = torch.sign(low) * 0.1 / (0.001**0.5)  # M/(√V) after one step, before bias correction
    correction = (0.001**0.5) / 0.1
    dim = 0 if side == "left" else 1
    phi = psi.norm(dim=dim, keepdim=True) / (low.norm(dim=dim, keepdim=True) + 1e-8)
    back = (lambda x: basis @ x) if side == "left" else (lambda x: x @ basis.T)
    update = 0.5 * back(psi) + phi * (grad - back(low))
    torch.testing.assert_close(weight.detach(), start - 0.1 * correction * update, atol=1e-5, rtol=1e-5)


def test_residuals_agree_at_alpha_one_and_differ_otherwise():
    grads = None
    results = {}
    for scale in (1.0, 0.25):
        for residual in ("paper", "official"):
            (weight,) = weights((8, 12))
            grads = grads or gradient_sequence([weight], steps=4)
            optimizer = lo.FiraAdamW([{"params": [weight], "rank": 3, "scale": scale}], residual=residual)
            run(optimizer, [weight], grads)
            results[scale, residual] = weight.detach()
    assert torch.equal(results[1.0, "paper"], results[1.0, "official"])
    assert not torch.allclose(results[0.25, "paper"], results[0.25, "official"])


def test_official_residual_agrees_with_the_fira_package():
    fira = pytest.importorskip("fira")
    shapes = [(12, 20), (20, 12), (12,)]
    ours, theirs = weights(*shapes), weights(*shapes)
    low = {"rank": 4, "update_proj_gap": 3, "proj_type": "std"}
    reference = fira.FiraAdamW(
        [{"params": [theirs[2]]}, {"params": theirs[:2], "alpha": 0.25, **low}],
        lr=0.01, eps=1e-8, weight_decay=0.01, no_deprecation_warning=True,
    )  # fmt: skip
    optimizer = lo.FiraAdamW(
        [{"params": [ours[2]]}, {"params": ours[:2], "scale": 0.25, **low}],
        lr=0.01,
        weight_decay=0.01,
        residual="official",
    )
    grads = gradient_sequence(ours, steps=8)
    run(reference, theirs, grads)
    run(optimizer, ours, grads)
    for mine, reference_weight in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference_weight, atol=1e-6, rtol=1e-5)


def test_state_bytes_add_one_scalar_to_galore():
    (weight,) = weights((6, 10))
    optimizer = lo.FiraAdamW([{"params": [weight], "rank": 3}])
    run(optimizer, [weight], gradient_sequence([weight], steps=2))
    assert lo.optimizer_state_bytes(optimizer) == 4 * (6 * 3 + 2 * 3 * 10 + 1)
