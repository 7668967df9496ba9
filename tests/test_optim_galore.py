"""GaLoreAdamW: SGD identity at full rank, refresh schedule, state bytes, agreement with galore-torch."""

import pytest
import torch
from optim_helpers import gradient_sequence, run, weights

import leantrain.optim as lo


class GaLoreSGD(lo.GaLoreAdamW):
    """GaLore with plain SGD as the inner rule: the update is α·B Bᵀ G."""

    def inner_rule(self, grad, state, group):
        return grad, 1.0


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 8)])
def test_full_rank_galore_with_sgd_inside_is_sgd(shape):
    (galore_weight,) = weights(shape)
    (sgd_weight,) = weights(shape)
    galore = GaLoreSGD([{"params": [galore_weight], "rank": min(shape), "scale": 1.0}], lr=0.1, update_proj_gap=2)
    sgd = torch.optim.SGD([sgd_weight], lr=0.1)
    grads = gradient_sequence([galore_weight], steps=5)
    run(galore, [galore_weight], grads)
    run(sgd, [sgd_weight], grads)
    torch.testing.assert_close(galore_weight, sgd_weight, atol=1e-5, rtol=1e-5)


def test_low_rank_galore_with_sgd_inside_is_sgd_on_the_projected_gradient():
    (weight,) = weights((6, 10))
    start = weight.detach().clone()
    optimizer = GaLoreSGD([{"params": [weight], "rank": 2, "scale": 0.5}], lr=0.1)
    (grads,) = gradient_sequence([weight], steps=1)
    run(optimizer, [weight], [grads])
    u, _, _ = torch.linalg.svd(grads[0])
    expected = start - 0.1 * 0.5 * (u[:, :2] @ u[:, :2].T @ grads[0])
    torch.testing.assert_close(weight.detach(), expected, atol=1e-6, rtol=1e-5)


def test_projector_refreshes_at_step_zero_and_every_t_steps():
    (weight,) = weights((6, 10))
    optimizer = lo.GaLoreAdamW([{"params": [weight], "rank": 2, "update_proj_gap": 3}])
    refreshed, previous = [], None
    for step, grads in enumerate(gradient_sequence([weight], steps=10)):
        run(optimizer, [weight], [grads])
        projector = optimizer.state[weight]["projector"]
        refreshed.append(projector is not previous)
        if projector is not previous:
            u, _, _ = torch.linalg.svd(grads[0])  # the new basis comes from this step's gradient
            torch.testing.assert_close((projector.T @ u[:, :2]).abs(), torch.eye(2), atol=1e-5, rtol=0)
        previous = projector
        assert optimizer.state[weight]["step"] == step + 1
    assert [i for i, fresh in enumerate(refreshed) if fresh] == [0, 3, 6, 9]


@pytest.mark.parametrize(
    ("shape", "projector_numel", "moment_numel"), [((6, 10), 6 * 3, 3 * 10), ((10, 6), 6 * 3, 10 * 3)]
)
def test_state_bytes_equal_the_formula(shape, projector_numel, moment_numel):
    # m×n with m <= n: projector m·r + moments 2·n·r; with m > n the roles swap (the smaller side is reduced).
    weight, bias = weights(shape, (shape[0],))
    optimizer = lo.GaLoreAdamW([{"params": [bias]}, {"params": [weight], "rank": 3}])
    run(optimizer, [weight, bias], gradient_sequence([weight, bias], steps=2))
    assert lo.optimizer_state_bytes(optimizer) == 4 * (projector_numel + 2 * moment_numel + 2 * shape[0])
    assert optimizer.state[weight]["exp_avg"].shape == ((3, 10) if shape == (6, 10) else (10, 3))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_agrees_with_galore_torch(weight_decay):
    galore_torch = pytest.importorskip("galore_torch")
    shapes = [(12, 20), (20, 12), (12,)]
    ours, theirs = weights(*shapes), weights(*shapes)

    def groups(ps):
        return [
            {"params": [ps[2]]},
            {"params": ps[:2], "rank": 4, "update_proj_gap": 3, "scale": 0.25, "proj_type": "std"},
        ]

    options = {"lr": 0.01, "eps": 1e-8, "weight_decay": weight_decay}
    reference = galore_torch.GaLoreAdamW(groups(theirs), no_deprecation_warning=True, **options)
    optimizer = lo.GaLoreAdamW(groups(ours), **options)
    grads = gradient_sequence(ours, steps=8)
    run(reference, theirs, grads)
    run(optimizer, ours, grads)
    for mine, reference_weight in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference_weight, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours[0], weights(*shapes)[0])  # the weights moved
