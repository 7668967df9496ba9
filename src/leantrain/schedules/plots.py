"""PNG figures of lr curves and of fitted vs actual loss curves (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _figure(ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return plt, figure, axes


def plot_lr_curves(curves: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """One line per named lr sequence."""
    plt, figure, axes = _figure("learning rate")
    for name, lrs in curves.items():
        axes.plot(range(len(lrs)), lrs, label=name)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def plot_loss_fit(observed: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                  predicted: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Observed losses as dots (name -> (steps, losses)) and predicted curves as lines (name -> loss
    after each step 1..n)."""
    plt, figure, axes = _figure("loss")
    for name, (steps, losses) in observed.items():
        axes.plot(steps, losses, ".", alpha=0.6, label=f"{name} (logged)")
    for name, curve in predicted.items():
        axes.plot(range(1, len(curve) + 1), curve, "-", label=f"{name} (law)")
    low = min(min(losses) for _, losses in observed.values()) if observed else None
    if low is not None:
        axes.set_ylim(low * 0.97, low * 1.6)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
