"""Rows at advantage 0 left out of the RL step (rl/training_loss.py): which rows stay, the gradient and the loss
of the step unchanged for every loss type it applies to, over micro-batches and processes, and the cases where a
zero-advantage row does carry a gradient (a KL term, an entropy bonus, "bnpo"'s per-micro-batch mean)."""

import pytest
import torch
from test_rl_rollouts import PROMPTS, tiny_model

from leantrain.data.micro_batches import local_micro_batches
from leantrain.rl.rollouts import TrainingInputs, generate_rollouts
from leantrain.rl.training_loss import (
    LossSettings,
    RLLoss,
    idle_rows_are_exact,
    longest_first,
    rollout_batch,
    rows_with_gradient,
)


def inputs_of_lengths(lengths: list[int]) -> TrainingInputs:
    width = max(lengths)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    return TrainingInputs(torch.arange(len(lengths))[:, None] * mask, mask, mask[:, 1:])


def test_the_rows_with_an_advantage_stay_in_order_and_the_shortest_idle_rows_fill_up():
    inputs = inputs_of_lengths([9, 8, 7, 6, 5, 4])
    advantages = torch.tensor([0.0, 1.5, 0.0, -0.5, 0.0, 0.0])
    kept, kept_advantages = rows_with_gradient(inputs, advantages, 1)
    assert kept.input_ids[:, 0].tolist() == [1, 3] and kept_advantages.tolist() == [1.5, -0.5]
    kept, kept_advantages = rows_with_gradient(inputs, advantages, 4)  # the two shortest idle rows join
    assert kept.input_ids[:, 0].tolist() == [1, 3, 4, 5] and kept_advantages.tolist() == [1.5, -0.5, 0.0, 0.0]
    kept, _ = rows_with_gradient(inputs, torch.zeros(6), 2)  # no signal at all: the minimum, the shortest rows
    assert kept.input_ids[:, 0].tolist() == [4, 5]
    per_token = torch.zeros(6, 3)
    per_token[2, 1] = 0.25  # a per-token advantage not 0 anywhere in a row keeps the row
    assert rows_with_gradient(inputs, per_token, 1)[0].input_ids[:, 0].tolist() == [2]
    with pytest.raises(ValueError, match=r"minimum=0 must be an int >= 1"):
        rows_with_gradient(inputs, advantages, 0)


def test_idle_rows_are_left_out_only_where_they_add_nothing():
    assert idle_rows_are_exact(LossSettings()) and idle_rows_are_exact(LossSettings(loss_type="grpo"))
    assert idle_rows_are_exact(LossSettings(loss_type="dr_grpo", max_completion_length=8))
    assert not idle_rows_are_exact(LossSettings(beta=0.04))
    assert not idle_rows_are_exact(LossSettings(entropy_bonus=0.001))
    assert not idle_rows_are_exact(LossSettings(loss_type="bnpo"))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("world_size", [1, 2])
def test_leaving_idle_rows_out_keeps_the_steps_gradient_and_loss(loss_type, world_size):
    """48 rollouts of 4 prompts, two of whose groups have advantage 0: the step over the 24 rows left (in
    micro-batches of at most 40 tokens, over 1 or 2 processes averaged as DDP does) has the gradient and the
    loss of the whole step in one micro-batch."""
    model = tiny_model().train()
    torch.manual_seed(0)
    rollouts = generate_rollouts(model, PROMPTS, [12] * 4, max_new_tokens=8)
    advantages = torch.randn(48, generator=torch.Generator().manual_seed(1)) * (rollouts.group % 2 == 0)
    whole, advantages = longest_first(rollouts.training_inputs(), advantages)
    settings = LossSettings(loss_type=loss_type, max_completion_length=8 if loss_type == "dr_grpo" else None)
    kept, kept_advantages = rows_with_gradient(whole, advantages, world_size)
    assert len(kept.input_ids) == 24

    def step(batch, processes, micro_tokens):
        loss, total = RLLoss(settings), torch.zeros((), dtype=torch.float64)
        model.zero_grad()
        for rank in range(processes):
            for micro, weight in local_micro_batches(batch, rank, processes, 1, micro_tokens):
                value = loss(model, micro) * weight / processes
                value.backward()
                total += value.detach().double()
        return total, torch.cat([p.grad.flatten() for p in model.parameters()])

    whole_loss, whole_gradient = step(rollout_batch(whole, advantages), 1, None)
    kept_loss, kept_gradient = step(rollout_batch(kept, kept_advantages, whole=whole), world_size, 40)
    assert whole_gradient.abs().max() > 0
    torch.testing.assert_close(kept_gradient, whole_gradient, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(kept_loss, whole_loss, rtol=1e-5, atol=1e-7)
