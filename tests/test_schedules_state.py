"""Schedules resume mid-run from state_dict, and bad configs fail with the field named."""

import pytest
import torch

from leantrain.schedules import REX, WSD, LinearDecay, Power, Refined, build, lr_curve


def optimizer():
    model = torch.nn.Linear(3, 2)
    return torch.optim.AdamW([{"params": [model.weight], "lr": 1e-2}, {"params": [model.bias], "lr": 1e-3}])


FACTORIES = {
    "wsd": lambda opt: WSD(opt, 5, 40, 0.25, decay="exp", min_lr_ratio=0.1),
    "power": lambda opt: Power(opt, batch_size=4, tokens_per_step=16, a=0.01, warmup_steps=5, decay_start=30,
                               decay_steps=10),
    "linear": lambda opt: LinearDecay(opt, 5, 40),
    "rex": lambda opt: REX(opt, 5, 40),
    "refined": lambda opt: Refined(opt, torch.linspace(3.0, 1.0, 40).tolist(), warmup_steps=5),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_state_dict_round_trip_mid_decay(name):
    def train(opt, sched, steps):
        values = []
        for _ in range(steps):
            opt.step()
            sched.step()
            values.append(sched.get_last_lr())
        return values

    opt = optimizer()
    sched = FACTORIES[name](opt)
    uninterrupted = train(opt, sched, 40)

    opt = optimizer()
    sched = FACTORIES[name](opt)
    first = train(opt, sched, 33)  # inside every decay phase
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    opt = optimizer()
    sched = FACTORIES[name](opt)
    opt.load_state_dict(saved_opt)
    sched.load_state_dict(saved_sched)
    assert first + train(opt, sched, 7) == uninterrupted


def test_power_decay_started_after_resume():
    opt = optimizer()
    sched = Power(opt, batch_size=4, tokens_per_step=16, a=0.01)
    for _ in range(20):
        opt.step()
        sched.step()
    saved = sched.state_dict()
    sched = Power(optimizer(), batch_size=4, tokens_per_step=16, a=0.01)
    sched.load_state_dict(saved)
    before = sched.get_last_lr()[0]
    sched.start_decay(10)
    for _ in range(10):
        sched.optimizer.step()
        sched.step()
    assert sched.decay_start == 20 and sched.tokens_seen == 30 * 16
    assert sched.multiplier(20) == pytest.approx(before / 1e-2) and sched.get_last_lr()[0] == 0.0


@pytest.mark.parametrize(("make", "field"), [
    (lambda o: WSD(o, -1, 100, 10), "warmup_steps"),
    (lambda o: WSD(o, 10, 100, 95), "decay_steps"),
    (lambda o: WSD(o, 10, 100, 1.5), "decay_steps"),
    (lambda o: WSD(o, 10, 100, 10, decay="step"), "decay"),
    (lambda o: Power(o, batch_size=8, tokens_per_step=64, b=0.0), "b"),
    (lambda o: Power(o, batch_size=8, tokens_per_step=64, max_lr=0.0), "max_lr"),
    (lambda o: Power(o, batch_size=8, tokens_per_step=64, warmup_steps=-3), "warmup_steps"),
    (lambda o: LinearDecay(o, 10, 5), "total_steps"),
    (lambda o: Refined(o, [1.0, 0.0, 1.0]), "grad_norms"),
    (lambda o: build("power", o, total_steps=10, batch_size=8, tokens_per_step=64, decay_steps=20), "decay_steps"),
    (lambda o: build("step", o, total_steps=10), "schedule"),
])
def test_bad_config_names_the_field(make, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        make(optimizer())


def test_lr_curve_lists_one_lr_per_update():
    curve = lr_curve("wsd", 10, lr=2.0, warmup_steps=2, decay_steps=4, decay="linear")
    assert curve == pytest.approx([0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5])
