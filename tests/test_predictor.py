"""The Tissue et al. (2024) loss-curve law: areas by hand, and a fit that predicts another schedule."""

import numpy as np
import pytest

from leantrain.schedules import lr_curve
from leantrain.schedules.predictor import LoggedRun, LossCurveFit, annealing_areas, fit_loss_curve


def test_annealing_areas_by_hand():
    # warmup (before the peak) counts as the peak; drops enter S2 through the momentum
    s1, s2 = annealing_areas([0.5, 1.0, 1.0, 0.5, 0.25], decay=0.5)
    assert s1.tolist() == [1.0, 2.0, 3.0, 3.5, 3.75]
    momentum = [0.0, 0.0, 0.0, 0.5, 0.5 * 0.5 + 0.25]
    assert s2.tolist() == pytest.approx(np.cumsum(momentum).tolist())


def test_fit_on_constant_and_cosine_predicts_wsd():
    truth = LossCurveFit(l0=2.0, a=1.5, alpha=0.45, c=0.4, decay=0.99)
    steps, lr = 600, 3e-3
    rng = np.random.default_rng(0)

    def run(name, **kwargs):
        lrs = lr_curve(name, steps, lr=lr, warmup_steps=20, **kwargs)
        logged = np.arange(20, steps + 1, 20)
        losses = truth.predict(lrs)[logged - 1] * (1 + 0.002 * rng.standard_normal(len(logged)))
        return LoggedRun(lrs, logged.tolist(), losses.tolist())

    fit = fit_loss_curve([run("constant"), run("cosine")], decay=0.99)
    wsd = lr_curve("wsd", steps, lr=lr, warmup_steps=20, decay_steps=0.2)
    predicted, actual = fit.predict(wsd)[-1], truth.predict(wsd)[-1]
    assert abs(predicted - actual) / actual < 0.005
    assert fit.alpha == pytest.approx(truth.alpha, rel=0.3)


def test_logged_run_from_metric_records():
    records = [{"step": 1, "lr": 0.1, "loss": 5.0}, {"step": 2, "lr": 0.2, "loss": 4.0}, {"step": 2, "val_loss": 4.5},
               {"step": 3, "lr": 0.2, "loss": 3.0}]
    run = LoggedRun.from_metrics(records)
    assert (list(run.lrs), list(run.steps), list(run.losses)) == ([0.1, 0.2, 0.2], [2], [4.5])
    train = LoggedRun.from_metrics(records, key="loss")  # update s's loss was measured after s - 1 updates
    assert (list(train.steps), list(train.losses)) == ([1, 2], [4.0, 3.0])
    with pytest.raises(ValueError, match="'grad_norm'"):
        LoggedRun.from_metrics(records, key="grad_norm")
