"""Schedule formulas against the papers' equations and the schedules HF already ships."""

import math

import pytest
import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_wsd_schedule,
)

from leantrain.schedules import REX, WSD, LinearDecay, Power, Refined, build, formulas


def optimizer(lr=1e-3, groups=1):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
    return torch.optim.AdamW([{"params": [p], "lr": lr / (i + 1)} for i, p in enumerate(params)])


def lrs(scheduler, steps):
    """Each group's lr at each step, flattened (pytest.approx compares flat lists)."""
    values = []
    for _ in range(steps):
        values.extend(scheduler.get_last_lr())
        scheduler.optimizer.step()
        scheduler.step()
    return values


@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("warmup", [0, 7])
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_wsd_equals_hf_get_wsd_schedule_at_every_step(decay, warmup, min_lr_ratio):
    total, decay_steps = 60, 17
    ours = WSD(optimizer(groups=2), warmup, total, decay_steps, decay=decay, min_lr_ratio=min_lr_ratio)
    hf = get_wsd_schedule(optimizer(groups=2), warmup, decay_steps, num_training_steps=total, decay_type=decay,
                          min_lr_ratio=min_lr_ratio)
    assert lrs(ours, total + 5) == pytest.approx(lrs(hf, total + 5), abs=1e-15)


@pytest.mark.parametrize(("name", "hf_builder"), [("cosine", get_cosine_schedule_with_warmup),
                                                 ("linear", get_linear_schedule_with_warmup)])
def test_cosine_and_linear_equal_hf(name, hf_builder):
    ours = build(name, optimizer(), total_steps=50, warmup_steps=5)
    assert lrs(ours, 50) == pytest.approx(lrs(hf_builder(optimizer(), 5, 50), 50), abs=1e-15)
    constant = build("constant", optimizer(), total_steps=50, warmup_steps=5)
    assert lrs(constant, 50) == pytest.approx(lrs(get_constant_schedule_with_warmup(optimizer(), 5), 50))


def test_power_lr_paper_check():
    # Shen et al. 2024 §3: a = 4.6, b = -0.51, batch 1024 sequences, 10T tokens -> eta_opt ~ 0.0011
    assert formulas.power_lr(10e12, 1024, 4.6, -0.51, max_lr=math.inf) == pytest.approx(0.0011, rel=0.01)
    assert formulas.power_lr(0, 1024, 4.0, -0.51, max_lr=0.02) == 0.02  # limit n -> 0+, no division by zero


def test_power_scheduler_is_eq_7_and_8_and_keeps_group_ratios():
    batch, seq, lr_max, warmup, a, b = 1024, 4096, 0.02, 100, 4.0, -0.51
    tokens = batch * seq
    opt = optimizer(lr=lr_max, groups=2)  # group lrs 0.02 and 0.01, as a muP model would have
    sched = Power(opt, batch_size=batch, tokens_per_step=tokens, a=a, b=b, warmup_steps=warmup,
                  decay_start=3000, decay_steps=500)

    def eta_power(n):  # Eq. 7
        return min(lr_max, batch * a * n**b)

    flat = lrs(sched, 3600)
    values = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]  # (group 0, group 1) per step
    for step in (0, 1, 50, 99):  # Eq. 8 warmup: linear ramp to eta_power(N_warmup)
        assert values[step][0] == pytest.approx(step / warmup * eta_power(warmup * tokens), rel=1e-12)
    for step in (100, 1000, 2999):
        assert values[step][0] == pytest.approx(eta_power(step * tokens), rel=1e-12)
    assert values[3000][0] == pytest.approx(eta_power(3000 * tokens))
    assert values[3250][0] < values[3000][0] and values[3500][0] == pytest.approx(0.0, abs=1e-15)
    assert all(g1 == pytest.approx(2 * g2) for g1, g2 in values)
    # dolomite-engine's PowerScheduler: min(1, (4*batch / lr0) * (step * tokens)^b) times lr0
    assert values[2000][0] == pytest.approx(lr_max * min(1.0, 4 * batch / lr_max * (2000 * tokens) ** b))


def test_power_without_warmup_starts_at_max_lr():
    sched = Power(optimizer(lr=0.02), batch_size=8, tokens_per_step=1024)
    assert sched.get_last_lr()[0] == 0.02


def test_exponential_decay_to_a_floor_is_the_dolomite_form():
    # f(x) = A e^{-x/t} + B, A = (1-d)e/(e-1), B = (d e - 1)/(e-1): f(0) = 1, f(t) = d
    d, t = 0.1, 40
    big_a, big_b = (1 - d) * math.e / (math.e - 1), (d * math.e - 1) / (math.e - 1)
    sched = WSD(optimizer(lr=1.0), 0, 100, t, decay="exp", min_lr_ratio=d)
    values = lrs(sched, 101)
    for x in range(t + 1):
        assert values[60 + x] == pytest.approx(big_a * math.exp(-x / t) + big_b, rel=1e-12)
    assert values[100] == pytest.approx(d)


def test_half_life_decay_halves_every_half_life():
    sched = WSD(optimizer(lr=1.0), 0, 100, 30, decay="half-life", half_life=10)
    values = lrs(sched, 100)
    assert values[70] == 1.0 and values[80] == pytest.approx(0.5) and values[90] == pytest.approx(0.25)


def test_rex_formula():
    values = lrs(REX(optimizer(lr=1.0), 0, 10), 11)
    assert values == pytest.approx([(1 - t / 10) / (1 - t / 20) for t in range(11)])


@pytest.mark.parametrize("warmup", [0, 4])
def test_refined_on_constant_norms_is_linear_decay(warmup):
    norms = [3.0] * 40
    refined = lrs(Refined(optimizer(groups=2), norms, warmup_steps=warmup), 40)
    linear = lrs(LinearDecay(optimizer(groups=2), warmup, total_steps=39), 40)
    assert refined == pytest.approx(linear, abs=1e-15)


def test_refined_without_smoothing_is_the_tail_sum_formula():
    norms = [5.0, 4.0, 2.0, 1.5, 1.0, 1.0, 0.5, 0.4]
    w = [g**-2 for g in norms]
    expected = [w[t] * sum(w[t + 1:]) for t in range(len(w))]
    assert formulas.refined(norms, smoothing=0.0) == pytest.approx([e / max(expected) for e in expected])
    # large early gradients give an automatic warmup
    assert expected.index(max(expected)) > 0


def test_median_filter_removes_a_spike():
    assert formulas.median_filter([1.0, 1.0, 9.0, 1.0, 1.0], 3).tolist() == [1.0] * 5
