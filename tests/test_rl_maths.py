"""leantrain.rl's pure maths: pass@k, GRPO group advantages, DARS's rollout budget, the policy loss.

Reference values are worked by hand (the arithmetic is in the comments) or recomputed here
independently: exact binomials for pass@k, TRL's rectangular formula for the advantages, the
released DARS formulas for the budget. The policy loss's agreement with TRL itself is in
test_rl_trl_agreement.py.
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
import torch

from leantrain.rl import dars_budget, group_advantages, pass_at_k, policy_loss
from leantrain.rl.pass_at_k import mean_interval, pass_at_k_per_problem

# ---------------------------------------------------------------- pass@k (Chen et al. 2021, Eq. 1)


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (1, 1, 1, 1.0),
    (2, 1, 1, 0.5),
    (4, 1, 2, 0.5),  # 1 − C(3,2)/C(4,2) = 1 − 3/6
    (5, 2, 2, 0.7),  # 1 − C(3,2)/C(5,2) = 1 − 3/10
    (10, 3, 5, 11 / 12),  # 1 − C(7,5)/C(10,5) = 1 − 21/252
    (10, 0, 3, 0.0),  # no correct sample
    (10, 8, 3, 1.0),  # n − c = 2 < k: every draw of 3 holds a correct one
    (8, 8, 8, 1.0),
])
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_equals_exact_binomials() -> None:
    # The product has at most n factors, each rounded once: relative error <= n · 2⁻⁵³ ≈ 4.4e-15 for n = 40.
    for n in range(1, 41):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-13), (n, c, k)
    # large n, where C(n, k) overflows a float: 1000 factors, error <= 1000 · 2⁻⁵³ ≈ 1.1e-13
    assert pass_at_k(1000, 10, 100) == pytest.approx(float(exact_pass_at_k(1000, 10, 100)), abs=1e-12)


def test_pass_at_1_is_mean_accuracy() -> None:
    for n in (1, 7, 16):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-15)


def test_pass_at_k_means_over_problems() -> None:
    assert pass_at_k([4, 5], [1, 2], 2) == pytest.approx((0.5 + 0.7) / 2, abs=1e-15)
    assert pass_at_k(np.array([4, 5]), np.array([1, 2]), 2) == pytest.approx(0.6, abs=1e-15)
    assert pass_at_k(8, [0, 2, 8], 1) == pytest.approx((0 + 0.25 + 1) / 3, abs=1e-15)  # one n for every problem
    assert pass_at_k(8.0, 2.0, 1) == 0.25  # whole floats (e.g. a summed reward) are counts


@pytest.mark.parametrize(("n", "c", "k", "message"), [
    (3, 1, 4, "n must be >= k"),
    ([8, 3], [1, 1], 4, r"n must be >= k.*n=3 \(problem 1\)"),
    (4, 5, 1, "c must be <= n"),
    (4, -1, 1, "c must be >= 0"),
    (-4, 0, 1, "n must be >= 0"),
    (4, 1, 0, "k must be an int >= 1"),
    (4, 1, 1.5, "k must be an int >= 1"),
    (4, 1, True, "k must be an int >= 1"),
    (4.5, 1, 1, "n must be whole numbers"),
    ([4, 4], [1, 1, 1], 1, "one entry per problem"),
    ([], [], 1, "n must not be empty"),
    ([[4]], [[1]], 1, "1-d sequence"),
])
def test_pass_at_k_rejects(n, c, k, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_per_problem_values_average_to_pass_at_k() -> None:
    values = pass_at_k_per_problem([4, 5, 8], [1, 2, 0], 2)
    np.testing.assert_allclose(values, [0.5, 0.7, 0.0], atol=1e-15)
    assert pass_at_k([4, 5, 8], [1, 2, 0], 2) == pytest.approx(values.mean(), abs=1e-15)


def test_the_bootstrap_interval_covers_the_mean_as_often_as_its_level() -> None:
    """400 sets of 200 problems solved with chance 0.3: the 95 % interval holds 0.3 in 95 % of the sets, within
    4 binomial standard errors (sqrt(0.95 · 0.05 / 400) = 0.011); its width is 2 · 1.96 standard errors of the
    mean, within 10 % (2,000 resamples put the quantiles within a few per cent)."""
    rng = np.random.default_rng(0)
    sets, problems, chance = 400, 200, 0.3
    covered, widths = 0, []
    for trial in range(sets):
        values = (rng.random(problems) < chance).astype(float)
        low, high = mean_interval(values, resamples=2_000, seed=trial)
        covered += low <= chance <= high
        widths.append(high - low)
    assert abs(covered / sets - 0.95) <= 4 * math.sqrt(0.95 * 0.05 / sets)
    expected = 2 * 1.96 * math.sqrt(chance * (1 - chance) / problems)
    assert statistics.fmean(widths) == pytest.approx(expected, rel=0.1)


def test_the_bootstrap_interval_is_seeded_and_checks_its_input() -> None:
    values = np.linspace(0, 1, 50)
    assert mean_interval(values, seed=3) == mean_interval(values, seed=3) != mean_interval(values, seed=4)
    assert mean_interval([0.25] * 10) == (0.25, 0.25)
    low, high = mean_interval(values, level=0.5)
    assert low < 0.5 < high and (low, high) != mean_interval(values)
    for bad, message in (([], "non-empty"), ([[0.1]], "1-d"), ([0.1, math.nan], "finite")):
        with pytest.raises(ValueError, match=message):
            mean_interval(bad)
    with pytest.raises(ValueError, match=r"level=1\.5 must be in \(0, 1\)"):
        mean_interval(values, level=1.5)
    with pytest.raises(ValueError, match=r"resamples=0 must be an int >= 1"):
        mean_interval(values, resamples=0)


# ---------------------------------------------------------------- GRPO advantages (DeepSeekMath §4.1.2; TRL)


def test_advantages_hand_values() -> None:
    # one group [1, 0, 0, 0]: mean 1/4, Bessel std √((0.75² + 3·0.25²)/3) = √0.25 = 0.5
    result = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), [0, 0, 0, 0])
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4)
    torch.testing.assert_close(result.values, expected, rtol=1e-6, atol=0.0)
    assert (result.groups, result.zero_std_groups, result.unscored) == (1, 0, 0)
    none = group_advantages([1.0, 0.0, 0.0, 0.0], [0, 0, 0, 0], scale="none")  # Dr. GRPO: r − mean
    torch.testing.assert_close(none.values, torch.tensor([0.75, -0.25, -0.25, -0.25]), rtol=0.0, atol=0.0)


def per_group_reference(rewards: list[float], labels: list, scale: str) -> list[float]:
    """The definition, one group at a time, with Python's statistics (Bessel-corrected stdev)."""
    scored = [r for r in rewards if not math.isnan(r)]
    batch_std = statistics.stdev(scored) if len(scored) > 1 else 0.0
    out = []
    for r, label in zip(rewards, labels, strict=True):
        group = [x for x, g in zip(rewards, labels, strict=True) if g == label and not math.isnan(x)]
        if math.isnan(r) or len(set(group)) < 2:
            out.append(0.0)
            continue
        centred = r - statistics.fmean(group)
        std = {"group": statistics.stdev(group), "batch": batch_std, "none": None}[scale]
        out.append(centred if std is None else centred / (std + 1e-4))
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_ragged_groups_any_labels(scale: str) -> None:
    # groups of sizes 2, 3, 1 and 4, interleaved, labelled by strings; one NaN (unscored) reward
    labels = ["q7", "q2", "q7", "q2", "q2", "q9", "q4", "q4", "q4", "q4"]
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 5.0, 0.3, math.nan, 0.9, 0.2]
    result = group_advantages(torch.tensor(rewards, dtype=torch.float64), labels, scale=scale)
    expected = torch.tensor(per_group_reference(rewards, labels, scale), dtype=torch.float64)
    torch.testing.assert_close(result.values, expected, rtol=1e-12, atol=1e-15)
    assert (result.groups, result.zero_std_groups, result.unscored) == (4, 1, 1)  # q9 has a single reward


def test_advantages_unscored_rewards() -> None:
    # NaN or None: out of the group's mean and std, advantage 0; scored [1, 0, 1]: mean 2/3, std √(1/3)
    for unscored in (math.nan, None):
        result = group_advantages([1.0, unscored, 0.0, 1.0], [3, 3, 3, 3])
        std = math.sqrt(1 / 3)
        expected = torch.tensor([1 / 3, 0.0, -2 / 3, 1 / 3]) / torch.tensor([std + 1e-4, 1.0, std + 1e-4, std + 1e-4])
        torch.testing.assert_close(result.values, expected, rtol=1e-6, atol=0.0)
        assert result.unscored == 1 and result.zero_std_groups == 0
    # a group with no scored reward, and one with a single scored reward: no signal, all zeros
    result = group_advantages([math.nan, math.nan, 1.0, math.nan, 0.0, 1.0], [0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(result.values, torch.tensor([0.0, 0.0, 0.0, 0.0, -0.7070, 0.7070]),
                               rtol=0.0, atol=1e-4)
    assert (result.groups, result.zero_std_groups, result.unscored) == (3, 2, 3)


def test_advantages_equal_rewards_give_exact_zeros() -> None:
    # 0.1 · 3 / 3 is not exactly 0.1 in floating point: equal groups are detected, not divided out
    result = group_advantages([0.1, 0.1, 0.1, 1.0, 1.0], [0, 0, 0, 1, 1], scale="none")
    assert result.values.tolist() == [0.0] * 5 and result.zero_std_groups == 2
    batch = group_advantages([0.1, 0.1, 0.1, 0.0, 1.0], [0, 0, 0, 1, 1], scale="batch")
    assert batch.values[:3].tolist() == [0.0] * 3 and batch.zero_std_groups == 1


def trl_rectangular(rewards: torch.Tensor, group_size: int, scale: str) -> torch.Tensor:
    """TRL 1.16.0's formula (GRPOTrainer._generate_and_score_completions), rewritten: groups are
    consecutive rows of ``group_size``; NaN-aware mean and Bessel std; NaN advantages become 0."""
    grid = rewards.view(-1, group_size)
    mean = torch.nanmean(grid, dim=1, keepdim=True)
    if scale == "batch":
        flat = rewards[~torch.isnan(rewards)]
        std = flat.std() if flat.numel() > 1 else torch.tensor(math.nan)
    else:
        count = (~torch.isnan(grid)).sum(dim=1, keepdim=True)
        squares = torch.nansum((grid - mean) ** 2, dim=1, keepdim=True)
        std = torch.where(count > 1, (squares / (count - 1).clamp(min=1)).sqrt(), math.nan)
    advantages = grid - mean if scale == "none" else (grid - mean) / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0).reshape(-1)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_advantages_equal_groups_match_trl_formula(scale: str, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    group_size, groups = 8, 6
    rewards = torch.rand(groups * group_size, generator=generator, dtype=torch.float64)
    rewards[:8] = (rewards[:8] > 0.5).double()  # a binary group
    rewards[8:16] = 1.0  # a solved group: zero std
    rewards[16:24] = 0.0  # an unsolved one
    rewards[[30, 41, 42]] = math.nan  # unscored completions
    rewards = rewards.to(dtype)
    ids = torch.arange(groups).repeat_interleave(group_size)
    result = group_advantages(rewards, ids, scale=scale)
    # float64: the same sums in another order. float32: leantrain rounds a float64 result once,
    # TRL's formula rounds every step in float32 (~1e-7 relative on advantages of order 1).
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(result.values, trl_rectangular(rewards, group_size, scale), **tolerance)
    assert result.values.dtype == dtype and result.groups == groups and result.zero_std_groups == 2
    assert result.unscored == 3


def test_advantages_keep_dtype_and_accept_int_rewards() -> None:
    result = group_advantages(torch.tensor([1, 0, 1, 1]), torch.tensor([5, 5, 9, 9]))
    assert result.values.dtype == torch.get_default_dtype()
    assert result.values[2:].tolist() == [0.0, 0.0] and result.zero_std_groups == 1


@pytest.mark.parametrize(("rewards", "ids", "kwargs", "message"), [
    ([1.0, 0.0], [0, 0], {"scale": "std"}, "scale must be one of group, batch, none"),
    ([1.0, 0.0], [0], {}, "one label per reward: got 1 labels for 2 rewards"),
    ([[1.0, 0.0]], [0, 0], {}, "rewards must be 1-d"),
    ([], [], {}, "rewards must not be empty"),
    ([1.0, math.inf], [0, 0], {}, "rewards must be finite or NaN"),
    ([1.0, 0.0], [[0], [0]], {}, "group_ids must be hashable"),
    ([1.0, 0.0], [0, 0], {"eps": -1.0}, "eps must be a finite number >= 0"),
])
def test_advantages_reject(rewards, ids, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_advantages(torch.tensor(rewards) if rewards and isinstance(rewards[0], list) else rewards, ids,
                         **kwargs)


# ---------------------------------------------------------------- DARS rollout budget (Yang et al. 2025, code)


def test_dars_budget_worked_values() -> None:
    accuracies = [0, 1 / 8, 2 / 8, 3 / 8, 4 / 8]
    assert [dars_budget(a, 8, "et", n_max=32) for a in accuracies] == [32, 19, 11, 9, 8]
    assert [dars_budget(a, 8, "hw", n_max=64) for a in accuracies] == [64, 32, 16, 11, 8]
    # uncapped ET at accuracy 0: a := 1/16, S = 2·(1/16)·(15/16) = 0.1171875, Δn = ⌈(4 − 0.9375)/S⌉ = ⌈26.13⌉
    assert dars_budget(0.0, 8, "et") == 8 + 27
    assert dars_budget(5 / 8, 8, "hw", n_max=64) == 8 and dars_budget(1.0, 8, "et") == 8


def released_extra(accuracy: float, n: int, n_max: int, rule: str, std: bool) -> int:
    """Δn by the released formulas (DARS 9b21b71 schedule_ET / schedule_HW), in the order they compute."""
    acc = 0.5 / n if accuracy <= 1e-6 else accuracy
    if acc >= 0.5:
        return 0
    s_acc = 2 * math.sqrt(acc * (1 - acc)) if std else 2 * acc * (1 - acc)
    peak = n if std else 0.5 * n
    target = peak if rule == "et" else 2 * (1 - acc) * peak
    return min(math.ceil((target - n * s_acc) / s_acc), n_max - n)


@pytest.mark.parametrize("std", [False, True])
@pytest.mark.parametrize("rule", ["et", "hw"])
def test_dars_budget_recomputes_released_formulas(rule: str, std: bool) -> None:
    for n in range(1, 33):
        for n_max in (None, n, 2 * n, 4 * n):
            for correct in range(n + 1):
                accuracy = correct / n
                cap = 10**9 if n_max is None else n_max
                expected = n + released_extra(accuracy, n, cap, rule, std)
                assert dars_budget(accuracy, n, rule, n_max=n_max, std=std) == expected, (n, correct, n_max)
    for accuracy in np.linspace(0.0, 1.0, 201):  # accuracies that are not c / n (e.g. a mean of partial rewards)
        assert dars_budget(float(accuracy), 8, rule, std=std) == 8 + released_extra(accuracy, 8, 10**9, rule, std)


def test_dars_budget_shape() -> None:
    # fewer rollouts for easier prompts; HW's target 2(1 − a)·A* >= ET's A* below a = ½
    grid = np.linspace(0.001, 0.499, 400)
    for n in (4, 8, 16):
        et = [dars_budget(float(a), n, "et") for a in grid]
        hw = [dars_budget(float(a), n, "hw") for a in grid]
        assert et == sorted(et, reverse=True) and hw == sorted(hw, reverse=True)
        assert all(h >= e > n for e, h in zip(et, hw, strict=True))


def test_dars_budget_follows_the_code_not_exact_fractions() -> None:
    # HW at n = 6, a = 0 → a := 1/12: exactly (2·(11/12)·3 − 6·S)/S = 30 with S = 11/72, but the released
    # float arithmetic lands just above 30, so ⌈·⌉ gives 31. leantrain follows the code.
    a = Fraction(1, 12)
    s = 2 * a * (1 - a)
    assert (2 * (1 - a) * 3 - 6 * s) / s == 30
    assert dars_budget(0.0, 6, "hw") == 6 + 31


def exact_extra(correct: int, n: int, rule: str) -> int:
    """Δn in exact rational arithmetic (std off, uncapped)."""
    a = Fraction(correct, n) if correct else Fraction(1, 2 * n)
    if a >= Fraction(1, 2):
        return 0
    s = 2 * a * (1 - a)
    target = Fraction(n, 2) if rule == "et" else 2 * (1 - a) * Fraction(n, 2)
    return math.ceil((target - n * s) / s)


def float32_extra(correct: int, n: int, rule: str) -> int:
    """Δn as the released trainer computes it: the accuracy is a float32 tensor (torch.mean of the scores)."""
    acc = torch.tensor([1.0] * correct + [0.0] * (n - correct)).mean()
    if acc <= 1e-6:
        acc = 0.5 / n
    if acc >= 0.5:
        return 0
    s = 2 * acc * (1 - acc)
    target = 0.5 * n if rule == "et" else 2 * (1 - acc) * (0.5 * n)
    return math.ceil(float((target - n * s) / s))


@pytest.mark.parametrize("rule", ["et", "hw"])
def test_dars_budget_released_settings_do_not_depend_on_rounding(rule: str) -> None:
    # the released runs (n = 8 Qwen, n = 16 Llama; std off): float64, float32 and exact arithmetic agree
    for n in (8, 16):
        for correct in range(n + 1):
            extra = dars_budget(correct / n, n, rule) - n
            assert extra == exact_extra(correct, n, rule) == float32_extra(correct, n, rule), (n, correct)


def test_dars_budget_unsolved_single_rollout() -> None:
    # n = 1: a = 0 becomes 0.5 / 1 = ½, which asks for no extra rollout, as in the released code
    assert dars_budget(0.0, 1, "et", n_max=32) == 1


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((0.5, 8, "linear"), {}, "rule must be one of et, hw"),
    ((0.5, 0), {}, "n .* must be an int >= 1, got 0"),
    ((0.5, 8.0), {}, "n .* must be an int >= 1"),
    ((0.5, 8), {"n_max": 4}, "n_max must be None .* or an int >= n=8, got 4"),
    ((1.5, 8), {}, r"accuracy must be in \[0, 1\], got 1.5"),
    ((-0.1, 8), {}, r"accuracy must be in \[0, 1\]"),
    ((math.nan, 8), {}, r"accuracy must be in \[0, 1\]"),
    ((0.5, 8), {"std": 1}, "std must be True or False"),
])
def test_dars_budget_rejects(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dars_budget(*args, **kwargs)


# ---------------------------------------------------------------- policy loss (PPO clip in GRPO; TRL aggregation)


def leaf(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])  # completions of 2 and 1 tokens, padded to 3


def test_policy_loss_on_policy_is_the_policy_gradient() -> None:
    # old = None: ρ ≡ 1, per-token loss −Â, gradient −Â / normaliser on the active tokens
    logprobs = leaf([[-1.0, -2.0, -3.0], [-0.5, -0.1, -0.2]])
    advantages = torch.tensor([1.0, -2.0], dtype=torch.float64)
    result = policy_loss(logprobs, None, advantages, MASK, loss_type="bnpo")
    assert result.loss.item() == pytest.approx(-(1.0 + 1.0 - 2.0) / 3, abs=1e-15)  # −Σ M·Â / 3 tokens
    (grad,) = torch.autograd.grad(result.loss, logprobs)
    expected = torch.tensor([[-1 / 3, -1 / 3, 0.0], [2 / 3, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=1e-15, atol=0.0)
    assert result.clip_low.item() == result.clip_high.item() == result.clip_region.item() == 0.0


def test_policy_loss_clipping_hand_values() -> None:
    # row 0: ρ = 1.5, Â = +1 → clipped at 1.2; ρ = 0.5, Â = +1 → unclipped 0.5.
    # row 1: ρ = 0.5, Â = −1 → −min(−0.5, −0.8) = 0.8, clipped at 0.8.
    logprobs = leaf([[math.log(1.5), math.log(0.5), 0.0], [math.log(0.5), 0.0, 0.0]])
    old = torch.zeros(2, 3, dtype=torch.float64)
    advantages = torch.tensor([1.0, -1.0], dtype=torch.float64)
    result = policy_loss(logprobs, old, advantages, MASK, loss_type="bnpo")
    assert result.loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3, abs=1e-15)
    (grad,) = torch.autograd.grad(result.loss, logprobs)  # d(−ρÂ)/dℓ = −ρÂ where unclipped, else 0
    torch.testing.assert_close(grad, torch.tensor([[0.0, -0.5 / 3, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64),
                               rtol=1e-15, atol=0.0)
    assert (result.clip_low.item(), result.clip_high.item(), result.clip_region.item()) == pytest.approx(
        (1 / 3, 1 / 3, 2 / 3), abs=1e-15)
    # ε_high = 0.6 (DAPO's clip-higher) leaves ρ = 1.5 unclipped: −1.5 instead of −1.2
    higher = policy_loss(logprobs, old, advantages, MASK, epsilon_high=0.6, loss_type="bnpo")
    assert higher.loss.item() == pytest.approx((-1.5 - 0.5 + 0.8) / 3, abs=1e-15)
    assert higher.clip_high.item() == 0.0


def test_policy_loss_aggregations() -> None:
    # on-policy per-token losses −Â: row 0 has tokens (−2, −2), row 1 one token (+1)
    logprobs = leaf([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    advantages = torch.tensor([2.0, -1.0], dtype=torch.float64)

    def loss(loss_type: str, **kwargs) -> float:
        return policy_loss(logprobs, None, advantages, MASK, loss_type=loss_type, **kwargs).loss.item()

    assert loss("grpo") == pytest.approx((-4 / 2 + 1 / 1) / 2, abs=1e-15)  # mean of per-sequence means
    assert loss("bnpo") == pytest.approx(-3 / 3, abs=1e-15)  # token mean
    assert loss("dr_grpo", max_completion_length=5) == pytest.approx(-3 / (2 * 5), abs=1e-15)
    assert loss("dapo") == pytest.approx(-3 / 3, abs=1e-15)  # one micro-batch on one process: token mean
    assert loss("dapo", num_items_in_batch=12, num_processes=2) == pytest.approx(-3 / 6, abs=1e-15)
    assert loss("dapo", num_items_in_batch=torch.tensor(6), gradient_accumulation_steps=2) == pytest.approx(-0.5)
    assert loss("grpo", gradient_accumulation_steps=4) == pytest.approx(-0.5 / 4, abs=1e-15)
    assert loss("dr_grpo", max_completion_length=3, gradient_accumulation_steps=2) == pytest.approx(-0.25)


def test_policy_loss_kl_term() -> None:
    # k3 with d = ℓ_ref − ℓ = 1 (row 0) and 0 (row 1): e − 2 and 0; with the bias correction × ρ = 2
    logprobs = leaf([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    old = torch.zeros(2, 3, dtype=torch.float64)
    ref = logprobs.detach() + torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    advantages = torch.zeros(2, dtype=torch.float64)  # isolate the KL term
    mask = torch.tensor([[1, 0, 0], [1, 0, 0]])
    k3 = math.e - 2.0
    plain = policy_loss(logprobs, old, advantages, mask, beta=0.5, ref_logprobs=ref, kl_bias_correction=False,
                        loss_type="bnpo")
    assert plain.loss.item() == pytest.approx(0.5 * k3 / 2, abs=1e-15)
    assert plain.kl.item() == pytest.approx(k3 / 2, abs=1e-15)
    corrected = policy_loss(logprobs, old, advantages, mask, beta=0.5, ref_logprobs=ref, loss_type="bnpo")
    assert corrected.loss.item() == pytest.approx(0.5 * 2.0 * k3 / 2, abs=1e-15)
    assert policy_loss(logprobs, old, advantages, mask, loss_type="bnpo").kl is None


def test_policy_loss_token_advantages_and_float32() -> None:
    logprobs = torch.zeros(2, 3, requires_grad=True)
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    result = policy_loss(logprobs, None, per_token, MASK, loss_type="bnpo")
    assert result.loss.dtype == torch.float32 and result.loss.item() == pytest.approx(-(1 + 2 + 4) / 3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"loss_type": "cispo"}, "loss_type must be one of grpo, bnpo, dr_grpo, dapo"),
    ({"epsilon_low": -0.1}, r"epsilon_low must be in \[0, 1\]"),
    ({"epsilon_high": -0.1}, "epsilon_high must be >= 0"),
    ({"beta": -1.0}, "beta .* must be >= 0"),
    ({"beta": 0.1}, "beta=0.1 needs ref_logprobs"),
    ({"ref_logprobs": torch.zeros(2, 3)}, "ref_logprobs is only used with beta > 0"),
    ({"kl_bias_correction": False}, "kl_bias_correction .* only used with beta > 0"),
    ({"loss_type": "dr_grpo"}, "needs max_completion_length"),
    ({"loss_type": "dr_grpo", "max_completion_length": 1}, "max_completion_length must be an int >= the longest"),
    ({"loss_type": "bnpo", "max_completion_length": 8}, "max_completion_length is only used by loss_type='dr_grpo'"),
    ({"loss_type": "grpo", "num_items_in_batch": 3}, "num_items_in_batch is only used by loss_type='dapo'"),
    ({"loss_type": "grpo", "num_processes": 2}, "num_processes is only used by loss_type='dapo'"),
    ({"gradient_accumulation_steps": 2}, "needs num_items_in_batch"),
    ({"num_processes": 2}, "needs num_items_in_batch"),
    ({"num_items_in_batch": -1}, "num_items_in_batch must be a token count >= 0"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be an int >= 1"),
    ({"mask": torch.ones(2, 4)}, r"mask must have the shape of logprobs \(2, 3\), got \(2, 4\)"),
    ({"old_logprobs": torch.zeros(3, 3)}, "old_logprobs must have the shape of logprobs"),
    ({"advantages": torch.zeros(3)}, r"advantages must have shape \(2,\) or \(2, 3\), got \(3,\)"),
    ({"logprobs": torch.zeros(6)}, "logprobs must be a .batch, completion length. floating-point tensor"),
])
def test_policy_loss_rejects(kwargs: dict, message: str) -> None:
    arguments = {"logprobs": torch.zeros(2, 3), "old_logprobs": None, "advantages": torch.zeros(2), "mask": MASK}
    arguments.update({key: kwargs.pop(key) for key in list(kwargs) if key in arguments})
    with pytest.raises(ValueError, match=message):
        policy_loss(arguments["logprobs"], arguments["old_logprobs"], arguments["advantages"], arguments["mask"],
                    **kwargs)
