"""`leantrain schedule`: draw learning-rate schedules, and predict a schedule's loss curve from logs."""

from __future__ import annotations

import argparse

from leantrain.cli.flags import steps_or_fraction
from leantrain.names import SCHEDULES

NAME = "schedule"
HELP = "plot lr schedules to a PNG, or fit the LR-annealing loss law on logged runs and predict another"
# The flat schedule settings that only some schedules take (schedules.OPTIONS), by their argparse dest.
SETTINGS = ("decay_steps", "decay", "half_life", "batch_size", "tokens_per_step", "a", "b", "grad_norms")


def add_schedule_options(parser: argparse.ArgumentParser) -> None:
    """The flat schedule settings. A set one goes to each chosen schedule that takes it, and one that
    no chosen schedule takes is an error (``schedules.options_for``)."""
    group = parser.add_argument_group("schedule")
    group.add_argument("--total-steps", type=int, default=1000, help="optimizer updates (default 1000)")
    group.add_argument("--warmup-steps", type=int, default=0)
    group.add_argument("--lr", type=float, default=1e-3, help="peak lr (Power: eta_max)")
    group.add_argument("--min-lr-ratio", type=float, default=0.0)
    group.add_argument("--decay-steps", type=steps_or_fraction, default=None,
                       help="wsd/power decay length: steps (int) or fraction of total (float); default 0.2")
    group.add_argument("--decay", default=None, help="wsd/power decay: linear, cosine, 1-sqrt, exp, half-life")
    group.add_argument("--half-life", type=float, default=None, help="steps per halving for --decay half-life")
    group.add_argument("--batch-size", type=int, default=None, help="power: sequences per update")
    group.add_argument("--tokens-per-step", type=int, default=None, help="power: tokens per update")
    group.add_argument("--a", type=float, default=None, help="power: a (default 4.0)")
    group.add_argument("--b", type=float, default=None, help="power: b (default -0.51)")
    group.add_argument("--grad-norms", default=None,
                       help="refined: JSONL metrics of an earlier run with 'grad_norm' on every step")


def schedule_curves(names: list[str], args: argparse.Namespace) -> dict[str, list[float]]:
    """The lr of every update of each schedule in ``names``, from the settings the user set."""
    from leantrain.io import read_metrics
    from leantrain.schedules import OPTIONS, lr_curve, options_for

    settings = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    for key in settings:
        takers = [name for name, taken in OPTIONS.items() if key in taken]
        if not set(takers) & set(names):
            raise ValueError(f"--{key.replace('_', '-')} is a setting of {', '.join(takers)}; "
                             f"{', '.join(names)} {'does' if len(names) == 1 else 'do'} not take it")
    if "refined" in names and "grad_norms" not in settings:
        raise ValueError("the refined schedule needs --grad-norms METRICS.jsonl")
    if "grad_norms" in settings:
        settings["grad_norms"] = [r["grad_norm"] for r in read_metrics(args.grad_norms) if "grad_norm" in r]
    curves = {}
    for name in names:
        total_steps = len(settings["grad_norms"]) if name == "refined" else args.total_steps
        options = options_for(name, **{key: value for key, value in settings.items() if key in OPTIONS[name]})
        curves[name] = lr_curve(name, total_steps, lr=args.lr, warmup_steps=args.warmup_steps,
                                min_lr_ratio=args.min_lr_ratio, **options)
    return curves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    plot = actions.add_parser("plot", help="draw one or more schedules to a PNG",
                              description="draw one or more schedules to a PNG")
    plot.add_argument("names", nargs="+", choices=SCHEDULES, metavar="SCHEDULE",
                      help=f"one or more of {', '.join(SCHEDULES)}")
    plot.add_argument("--out", default="schedule.png")
    add_schedule_options(plot)

    predict = actions.add_parser(
        "predict", help="fit L = L0 + A*S1^-alpha - C*S2 on logged runs; predict another run's loss curve",
        description="fit L = L0 + A*S1^-alpha - C*S2 (Tissue et al. 2024) on one or two logged runs "
                    "(JSONL with 'step', 'lr' per update and the loss key), then predict the curve of "
                    "--target (a logged run, compared with its real losses) or of --schedule")
    predict.add_argument("--fit", nargs="+", required=True, metavar="METRICS.jsonl")
    target = predict.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", metavar="METRICS.jsonl", help="a logged run whose lrs to predict for")
    target.add_argument("--schedule", choices=SCHEDULES, help="a schedule built from the options below")
    predict.add_argument("--key", default="val_loss", help="loss key in the metrics (default val_loss)")
    predict.add_argument("--momentum-decay", type=float, default=0.999, help="lambda of S2 (default 0.999)")
    predict.add_argument("--out", default="predict.png")
    add_schedule_options(predict)


def _plot(args: argparse.Namespace) -> int:
    from leantrain.schedules.plots import plot_lr_curves

    curves = schedule_curves(args.names, args)
    for name, lrs in curves.items():
        print(f"{name:>8}: start {lrs[0]:.3g}, peak {max(lrs):.3g}, last {lrs[-1]:.3g} over {len(lrs)} steps")
    print(f"wrote {plot_lr_curves(curves, args.out)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leantrain.io import read_metrics
    from leantrain.schedules.plots import plot_loss_fit
    from leantrain.schedules.predictor import LoggedRun, fit_loss_curve

    runs = {Path(p).parent.name or p: LoggedRun.from_metrics(read_metrics(p), args.key) for p in args.fit}
    fit = fit_loss_curve(list(runs.values()), decay=args.momentum_decay)
    print(f"fit on {len(runs)} run(s): L0={fit.l0:.4f} A={fit.a:.4f} alpha={fit.alpha:.4f} C={fit.c:.4g}")
    observed = {name: (run.steps, run.losses) for name, run in runs.items()}
    predicted = {name: fit.predict(run.lrs) for name, run in runs.items()}
    if args.target:
        target = LoggedRun.from_metrics(read_metrics(args.target), args.key)
        name, lrs = f"target {Path(args.target).parent.name}", target.lrs
        observed[name] = (target.steps, target.losses)
    else:
        name, lrs = args.schedule, schedule_curves([args.schedule], args)[args.schedule]
    predicted[name] = curve = fit.predict(lrs)
    print(f"predicted final {args.key} of {name} after {len(lrs)} steps: {curve[-1]:.4f}")
    if args.target and target.steps[-1] == len(lrs):
        actual = target.losses[-1]
        print(f"actual: {actual:.4f}  (error {100 * (curve[-1] - actual) / actual:+.2f}%)")
    print(f"wrote {plot_loss_fit(observed, predicted, args.out)}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _plot(args) if args.action == "plot" else _predict(args)
