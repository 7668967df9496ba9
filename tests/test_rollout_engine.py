"""The rollout engine (rl/rollout_engine.py) against ``model.generate`` on tiny random causal LMs: greedy
completions equal token for token (rotary and absolute positions, groups split across batches, rows leaving
the batch), sampled completions follow the same distribution (chi-square tests with the 99.9 % quantile),
seeded sampling reproducible, the sampler's log-probs equal the trainer's recomputed ones, the bf16 copy."""

import math

import pytest
import torch
from test_rl_rollouts import EOS, PROMPTS, VOCAB, bias_head, completion, tiny_model

from leantrain.lean.token_logprobs import token_logprobs
from leantrain.models.lora import apply_lora
from leantrain.rl.rollout_engine import batches_of_groups
from leantrain.rl.rollouts import generate_rollouts, generation_model

Z_999 = 3.0902  # the standard normal's 99.9 % quantile


def chi_square_quantile(degrees: int) -> float:
    """The 99.9 % quantile of χ²(degrees), Wilson-Hilferty (relative error < 1e-3 for 5 or more degrees)."""
    h = 2 / (9 * degrees)
    return degrees * (1 - h + Z_999 * math.sqrt(h)) ** 3


def two_sample_chi_square(a: list[tuple], b: list[tuple]) -> tuple[float, int]:
    """Pearson's χ² of homogeneity between two equal-sized samples of outcomes, pooling the outcomes whose
    expected count is under 5 into one cell; (statistic, degrees of freedom)."""
    counts: dict[tuple, list[int]] = {}
    for index, sample in enumerate((a, b)):
        for outcome in sample:
            counts.setdefault(outcome, [0, 0])[index] += 1
    cells, pooled = [], [0, 0]
    for pair in counts.values():
        if sum(pair) / 2 >= 5:
            cells.append(pair)
        else:
            pooled = [pooled[0] + pair[0], pooled[1] + pair[1]]
    if sum(pooled) / 2 >= 5:
        cells.append(pooled)
    statistic = sum((x - sum(pair) / 2) ** 2 / (sum(pair) / 2) for pair in cells for x in pair)
    return statistic, len(cells) - 1


def test_batches_hold_whole_groups_where_they_fit_and_split_the_rest():
    assert batches_of_groups([2, 0, 3, 1], 4) == [[(0, 2), (2, 2)], [(2, 1), (3, 1)]]
    assert batches_of_groups([9], 4) == [[(0, 4)], [(0, 4)], [(0, 1)]]
    assert batches_of_groups([0, 0], 4) == []


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize(("counts", "batch_size"), [([2, 1, 3, 2], 64), ([3, 2, 1, 4], 3)])
def test_greedy_completions_equal_generate_token_for_token(kind, counts, batch_size):
    model = tiny_model(kind)
    bias_head(model, [EOS], {"llama": 0.1, "gpt2": 0.3}[kind])  # rows end at different lengths, and leave
    options = {"max_new_tokens": 14, "temperature": 0.0, "batch_size": batch_size}
    engine = generate_rollouts(model, PROMPTS, counts, **options)
    hf = generate_rollouts(model, PROMPTS, counts, engine="hf", **options)
    assert len(set(engine.completion_lengths.tolist())) >= 3 and not engine.truncated.all()
    for field in ("group", "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(engine, field), getattr(hf, field)), field


def test_sampled_first_tokens_follow_the_models_distribution():
    model = tiny_model(seed=1)
    rows = 3000
    torch.manual_seed(0)
    sampled = generate_rollouts(model, [PROMPTS[1]], [rows], max_new_tokens=1, batch_size=1000)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([PROMPTS[1]])).logits[0, -1], -1)
    observed = torch.bincount(sampled.completion_ids[:, 0], minlength=VOCAB).double()
    expected = probs.double() * rows
    kept = expected >= 5
    statistic = float((((observed - expected) ** 2 / expected)[kept]).sum())
    degrees = int(kept.sum()) - 1
    if expected[~kept].sum() > 0:  # the rare tokens pooled into one cell
        statistic += float((observed[~kept].sum() - expected[~kept].sum()) ** 2 / expected[~kept].sum())
        degrees += 1
    assert statistic < chi_square_quantile(degrees), (statistic, degrees)


@pytest.mark.parametrize("options", [{"temperature": 1.0}, {"temperature": 0.8, "top_p": 0.9, "top_k": 12}])
def test_sampled_completions_follow_generates_distribution(options):
    """Two-token completions of one prompt, with an EOS bias so that rows leave the engine's batch after their
    first token: the joint distribution of (first, second) tokens is generate's."""
    model = tiny_model(seed=2)
    bias_head(model, [EOS], 2.0)
    rows = 2400

    def pairs(engine: str, seed: int) -> list[tuple]:
        torch.manual_seed(seed)
        got = generate_rollouts(model, [PROMPTS[3]], [rows], max_new_tokens=2, batch_size=800, engine=engine,
                                **options)
        ids = got.completion_ids.masked_fill(got.completion_mask == 0, -1)
        return [tuple(row) for row in ids.tolist()]

    engine, hf = pairs("leantrain", 10), pairs("hf", 11)
    assert 0.1 < sum(row[0] == EOS for row in engine) / rows < 0.9
    statistic, degrees = two_sample_chi_square(engine, hf)
    assert degrees >= 10
    assert statistic < chi_square_quantile(degrees), (statistic, degrees)


def test_seeded_sampling_is_reproducible_and_its_logprobs_are_the_trainers():
    model = tiny_model()

    def sample(seed):
        torch.manual_seed(seed)
        return generate_rollouts(model, PROMPTS, [3, 2, 2, 3], max_new_tokens=10, batch_size=4)

    first, again = sample(5), sample(5)
    assert torch.equal(first.completion_ids, again.completion_ids)
    assert torch.equal(first.sample_logprobs, again.sample_logprobs)
    inputs = first.training_inputs()
    with torch.no_grad():
        trained, _ = token_logprobs(model, inputs.input_ids, inputs.attention_mask)
    for row in range(len(first)):
        scored = inputs.logprob_mask[row].bool()
        length = int(first.completion_lengths[row])
        assert completion(first, row) == inputs.input_ids[row, 1:][scored].tolist()
        torch.testing.assert_close(first.sample_logprobs[row, :length], trained[row][scored], rtol=1e-5, atol=1e-5)
    assert (first.sample_logprobs[first.completion_mask == 0] == 0).all()
    assert generate_rollouts(model, PROMPTS, [1, 1, 1, 1], max_new_tokens=3, engine="hf").sample_logprobs is None


def test_the_bf16_copy_merges_lora_and_leaves_the_trained_model_alone():
    model = tiny_model()
    apply_lora(model, rank=4)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # adapters that change the output
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        expected = model(ids).logits
        copy = generation_model(model, "bf16")
        got = copy(ids).logits.float()
    assert copy is not model and all(p.dtype == torch.bfloat16 for p in copy.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(getattr(m, "merged", False) for m in model.modules())
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)
    assert generation_model(model, "fp32") is model  # fp32 LoRA generates unmerged, without a second model
    plain = tiny_model()
    assert generation_model(plain, "fp32") is plain
    assert generation_model(plain.to(torch.bfloat16), "bf16") is plain
    with pytest.raises(ValueError, match="dtype='fp16' is not one of auto, fp32, bf16"):
        generation_model(plain, "fp16")
    with pytest.raises(ValueError, match="engine='vllm' is not one of leantrain, hf"):
        generate_rollouts(plain, PROMPTS, [1, 1, 1, 1], max_new_tokens=3, engine="vllm")


def test_the_copy_of_an_eager_model_generates_with_fused_attention():
    model = tiny_model()
    model.set_attn_implementation("eager")
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        copy = generation_model(model, "bf16")
        torch.testing.assert_close(copy(ids).logits.float(), model(ids).logits, rtol=0.05, atol=0.05)
    assert copy.config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_scores_that_are_not_numbers_are_an_error_not_tokens(temperature):
    model = tiny_model()
    bias_head(model, [5], float("nan"))
    with pytest.raises(ValueError, match="next-token scores hold NaN or inf"):
        generate_rollouts(model, PROMPTS, [2, 1, 1, 1], max_new_tokens=6, temperature=temperature)
