"""FrugalAdamW's state-free part is signSGD; statistics reset at refresh; DCTAdamW keeps only indices."""

import pytest
import torch
from optim_helpers import gradient_sequence, run, weights

import leantrain.optim as lo
from leantrain.optim.frugal import active_blocks
from leantrain.optim.projectors import dct_basis


@pytest.mark.parametrize("inactive_lr_scale", [1.0, 0.3])
def test_inactive_blocks_take_exactly_a_sign_sgd_step(inactive_lr_scale):
    params = weights((6, 10), (10, 6), (8, 8), (4, 4))
    starts = [p.detach().clone() for p in params]
    optimizer = lo.FrugalAdamW(
        [{"params": params, "rank": 1, "subspace": "blocks", "density": 0.5, "inactive_lr_scale": inactive_lr_scale}],
        lr=0.1,
    )
    grads = gradient_sequence(params, steps=1)
    run(optimizer, params, grads)
    active = active_blocks(4, 0.5, "random", 0, 0, 0)
    assert len(active) == 2
    for position, (p, start, g) in enumerate(zip(params, starts, grads[0], strict=True)):
        if position in active:
            assert "exp_avg" in optimizer.state[p]
        else:
            sign_sgd = start.add(g.sign(), alpha=-0.1 * inactive_lr_scale)
            torch.testing.assert_close(p.detach(), sign_sgd, atol=1e-7, rtol=0)
            if inactive_lr_scale == 1.0:
                assert torch.equal(p.detach(), sign_sgd)  # bit-exact signSGD
            assert set(optimizer.state[p]) == {"step"}  # no state


def test_projected_state_free_part_is_sign_of_the_residual():
    class FrugalNoAdam(lo.FrugalAdamW):
        def inner_rule(self, grad, state, group):
            return torch.zeros_like(grad), 1.0

    (weight,) = weights((6, 10))
    start = weight.detach().clone()
    optimizer = FrugalNoAdam([{"params": [weight], "rank": 2, "subspace": "random"}], lr=0.1)
    ((grad,),) = gradient_sequence([weight], steps=1)
    run(optimizer, [weight], [[grad]])
    basis = optimizer.state[weight]["projector"]
    assert torch.equal(weight.detach(), start - 0.1 * torch.sign(grad - basis @ (basis.T @ grad)))


def test_randperm_rows_get_adam_and_the_rest_sign_sgd():
    (weight,) = weights((6, 10))
    start = weight.detach().clone()
    optimizer = lo.FrugalAdamW([{"params": [weight], "rank": 2, "subspace": "randperm"}], lr=0.1, eps=0.0)
    ((grad,),) = gradient_sequence([weight], steps=1)
    run(optimizer, [weight], [[grad]])
    rows = optimizer.state[weight]["indices"]
    others = [i for i in range(6) if i not in rows.tolist()]
    step = start - weight.detach()
    torch.testing.assert_close(step[rows], 0.1 * grad[rows].sign())  # Adam's first step is sign(g) too
    assert torch.equal(weight.detach()[others], start[others].add(grad[others].sign(), alpha=-0.1))
    assert optimizer.state[weight]["exp_avg"].shape == (2, 10)


def test_statistics_reset_at_refresh():
    (weight,) = weights((6, 10))
    optimizer = lo.FrugalAdamW([{"params": [weight], "rank": 2, "update_proj_gap": 3}])
    adam_steps = []
    for grads in gradient_sequence([weight], steps=7):
        run(optimizer, [weight], [grads])
        adam_steps.append(optimizer.state[weight]["adam_step"])
    assert adam_steps == [1, 2, 3, 1, 2, 3, 1]


def test_descending_blocks_walk_from_the_last_tensor():
    windows = [sorted(active_blocks(5, 0.4, "descending", 0, 0, refresh)) for refresh in range(4)]
    assert windows == [[3, 4], [1, 2], [0], [3, 4]]


def test_frugal_state_bytes():
    params = weights((6, 10), (10, 6))
    svd = lo.FrugalAdamW([{"params": params, "rank": 2}])
    randperm = lo.FrugalAdamW([{"params": params, "rank": 2, "subspace": "randperm"}])
    for optimizer in (svd, randperm):
        run(optimizer, params, gradient_sequence(params, steps=1))
    assert lo.optimizer_state_bytes(svd) == 4 * 2 * (6 * 2 + 2 * 2 * 10)
    assert lo.optimizer_state_bytes(randperm) == 2 * (8 * 2 + 4 * 2 * 2 * 10)  # int64 indices


def test_dct_keeps_r_indices_per_weight_and_one_basis_per_size():
    params = weights((6, 10), (10, 6), (6, 12))
    optimizer = lo.DCTAdamW([{"params": params, "rank": 2}])
    run(optimizer, params, gradient_sequence(params, steps=3))
    for p in params:
        assert optimizer.state[p]["indices"].dtype == torch.int32 and optimizer.state[p]["indices"].numel() == 2
    assert len(optimizer.shared_tensors()) == 1  # every weight reduces a side of size 6
    moments = 2 * 2 * (10 + 10 + 12)
    assert lo.optimizer_state_bytes(optimizer) == 4 * (moments + 3 * 2 + 6 * 6)


def test_dct_at_full_rank_with_sgd_inside_is_sgd():
    class DCTSGD(lo.DCTAdamW):
        def inner_rule(self, grad, state, group):
            return grad, 1.0

    (weight,) = weights((6, 10))
    (reference,) = weights((6, 10))
    optimizer = DCTSGD([{"params": [weight], "rank": 6}], lr=0.1)
    grads = gradient_sequence([weight], steps=3)
    run(optimizer, [weight], grads)
    run(torch.optim.SGD([reference], lr=0.1), [reference], grads)
    torch.testing.assert_close(weight, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("update_proj_gap", [1, 4])
def test_dct_refreshes_indices_by_l1_alignment(update_proj_gap):
    (weight,) = weights((6, 10))
    optimizer = lo.DCTAdamW([{"params": [weight], "rank": 2, "update_proj_gap": update_proj_gap}])
    q = dct_basis(6)
    for step, grads in enumerate(gradient_sequence([weight], steps=5)):
        before = optimizer.state[weight].get("indices")
        run(optimizer, [weight], [grads])
        expected = (q.T @ grads[0]).abs().sum(dim=1).topk(2).indices.sort().values
        if step % update_proj_gap == 0:
            assert optimizer.state[weight]["indices"].tolist() == expected.tolist()
        else:
            assert torch.equal(optimizer.state[weight]["indices"], before)
