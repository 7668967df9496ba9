"""Sampler-trainer mismatch and truncated importance sampling (rl/importance_sampling.py): the weights as
defined (token and sequence ratios, the cap, the mask, no gradient), the k3 estimate unbiased for the KL
(a statistical test), the policy loss weighted per token, the sampler's log-probs carried to the training
batch, and a bf16 sampler's mismatch reported and corrected by the RL loss."""

import math

import pytest
import torch
from test_rl_rollouts import PROMPTS, tiny_model

from leantrain.rl.importance_sampling import mismatch, truncated_importance_weights
from leantrain.rl.policy_loss import policy_loss
from leantrain.rl.rollouts import generate_rollouts
from leantrain.rl.training_loss import LossSettings, RLLoss, rollout_batch

TRAIN = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-0.2, -3.0, -1.0, -1.0]])
SAMPLE = torch.tensor([[-1.5, -1.0, -0.5, 0.0], [-0.1, -1.0, -1.0, -1.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_token_and_sequence_weights_are_capped_ratios_on_the_mask_without_gradient():
    train = TRAIN.clone().requires_grad_()
    token = truncated_importance_weights(train, SAMPLE, MASK, "token", cap=1.5)
    expected = torch.tensor([[math.exp(0.5), math.exp(-1.0), 1.0, 0.0], [math.exp(-0.1), math.exp(-2.0), 0, 0]])
    torch.testing.assert_close(token, expected.clamp(max=1.5) * MASK)
    sequence = truncated_importance_weights(train, SAMPLE, MASK, "sequence", cap=3.0)
    torch.testing.assert_close(sequence, torch.tensor([[math.exp(-0.5)] * 4, [math.exp(-2.1)] * 4]) * MASK)
    assert not token.requires_grad and not sequence.requires_grad
    far = truncated_importance_weights(torch.full((1, 3), 50.0), torch.zeros(1, 3), torch.ones(1, 3), "sequence")
    assert torch.equal(far, torch.full((1, 3), 3.0))  # e^150 overflows to inf, and is capped
    with pytest.raises(ValueError, match="level='row' is not one of token, sequence"):
        truncated_importance_weights(TRAIN, SAMPLE, MASK, "row")
    with pytest.raises(ValueError, match=r"cap=0\.5 must be >= 1"):
        truncated_importance_weights(TRAIN, SAMPLE, MASK, cap=0.5)


def test_the_k3_mean_estimates_the_kl_from_the_samplers_tokens():
    """Tokens drawn from p (the sampler), scored by q (the trainer): the mean of k3 = (q/p − 1) − log(q/p)
    is KL(p ‖ q) in expectation; the tolerance is 4 standard errors of the sampled k3 values."""
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, generator=generator), 0)
    q = torch.softmax(torch.log(p) + 0.3 * torch.randn(50, generator=generator), 0)
    tokens = torch.multinomial(p, 20_000, replacement=True, generator=generator)[None]
    train, sample = torch.log(q)[tokens], torch.log(p)[tokens]
    absolute, k3, count = mismatch(train, sample, torch.ones_like(tokens))
    d = train - sample
    values = torch.expm1(d) - d
    kl = float((p * (p.log() - q.log())).sum())
    assert count == 20_000 and float(absolute) == pytest.approx(float(d.abs().sum()))
    assert abs(float(k3) / count - kl) < 4 * float(values.std()) / math.sqrt(count)
    assert mismatch(train, train, torch.ones_like(tokens))[1] == 0


def test_importance_weights_scale_each_tokens_surrogate():
    logprobs = TRAIN.clone().requires_grad_()
    advantages = torch.tensor([1.0, -0.5])
    weights = torch.tensor([[0.5, 2.0, 1.0, 3.0], [1.0, 0.1, 1.0, 1.0]])
    weighted = policy_loss(logprobs, None, advantages, MASK, loss_type="bnpo", importance_weights=weights)
    per_token = -advantages[:, None] * weights * MASK  # on-policy: the ratio is 1
    torch.testing.assert_close(weighted.loss, per_token.sum() / MASK.sum())
    ones = policy_loss(TRAIN, None, advantages, MASK, loss_type="bnpo", importance_weights=torch.ones(2, 4))
    torch.testing.assert_close(ones.loss, policy_loss(TRAIN, None, advantages, MASK, loss_type="bnpo").loss)
    with pytest.raises(ValueError, match="importance_weights must have the shape of logprobs"):
        policy_loss(TRAIN, None, advantages, MASK, importance_weights=torch.ones(2, 3))


def test_a_bf16_samplers_mismatch_is_reported_and_tis_reweighs_the_loss():
    model = tiny_model()
    torch.manual_seed(0)
    rollouts = generate_rollouts(model, PROMPTS, [3, 3, 3, 3], max_new_tokens=6, dtype="bf16")
    inputs = rollouts.training_inputs()
    for row in range(len(rollouts)):  # the sampler's log-probs sit on the columns that score their tokens
        length = int(rollouts.completion_lengths[row])
        scored = inputs.logprob_mask[row].bool()
        assert torch.equal(inputs.sample_logprobs[row][scored], rollouts.sample_logprobs[row, :length])
        assert (inputs.sample_logprobs[row][~scored] == 0).all()
    batch = rollout_batch(inputs, torch.randn(len(rollouts), generator=torch.Generator().manual_seed(1)))
    plain, corrected = RLLoss(LossSettings()), RLLoss(LossSettings(tis="token", tis_cap=1.001))
    plain_loss, corrected_loss = plain(model, batch), corrected(model, batch)
    reported = plain.take_mismatch()
    assert 0 < reported["sampler_logprob_gap"] < 0.1 and reported["sampler_kl"] >= 0  # bf16 rounding, not 0
    assert plain.take_mismatch() == {}  # taken: the sums start again
    assert not torch.allclose(plain_loss, corrected_loss)  # ratios above 1.001 were capped
    settings = LossSettings(tis="token", tis_cap=1e9)  # uncapped token ratios at the samples of a bf16 copy
    torch.testing.assert_close(RLLoss(settings)(model, batch), plain_loss, rtol=0.1, atol=0.01)
    with pytest.raises(ValueError, match="tis='row' is not one of token, sequence"):
        LossSettings(tis="row")
