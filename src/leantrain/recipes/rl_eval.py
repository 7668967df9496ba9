"""pass@k evaluation for RL with verifiable rewards: ``n`` sampled completions of every held-out problem,
the correct ones counted, and the unbiased pass@k curve (Chen et al. 2021, "Evaluating Large Language
Models Trained on Code", §2.1, Eq. 1) at k = 1, 2, 4, … up to ``n``, written as a table, JSON and a plot.

The ``n`` samples per problem come from one seeded ``generate_rollouts`` pass (the global RNG is forked,
so the caller's is left as it was): the same seed, problems, ``n`` and ``batch_size`` give the same
samples, and so the same counts, for every checkpoint compared. An unscored completion (its reward
functions raised, timed out or returned None) is not correct, and ``scored`` says how many were scored.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leantrain.config.rl import RLConfig
from leantrain.data.problems import Problems
from leantrain.engine.loop import CONFIG
from leantrain.recipes.rl import load_policy, prepare_problems
from leantrain.rl.pass_at_k import pass_at_k
from leantrain.rl.rollouts import encode_prompts, generate_rollouts
from leantrain.rl.scoring import correct_per_group, score_rollouts
from leantrain.validation import is_positive_int

REPORT_SETTINGS = ("n", "temperature", "problems", "max_new_tokens")  # what the report's settings line states


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, … (powers of two up to ``n``), then ``n`` itself when it is not a power of two."""
    if not is_positive_int(n):
        raise ValueError(f"n={n!r} must be an integer >= 1 (samples per problem)")
    ks = [2 ** i for i in range(n.bit_length()) if 2 ** i <= n]
    return ks if ks[-1] == n else [*ks, n]


@dataclass(frozen=True)
class CorrectCounts:
    """``correct`` and ``scored`` (int64, one entry per problem): of the ``n`` completions of each problem,
    the correct ones and the ones the reward functions scored. ``generated_tokens``: completion tokens
    generated in all (end-of-sequence tokens included); ``seconds``: wall time of generating and scoring."""

    n: int
    correct: Tensor
    scored: Tensor
    generated_tokens: int
    seconds: float


def _forked_rng(device: torch.device):
    """Fork the global RNG of ``device`` (the CPU's alone for a CPU model): seeding inside leaves it as it was."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device], device_type=device.type)


def count_correct(model: nn.Module, tokenizer, problems: Problems, n: int, *, temperature: float = 1.0,
                  top_p: float = 1.0, max_new_tokens: int = 32, batch_size: int = 64, seed: int = 0,
                  chat: bool = True, show_progress: bool = False) -> CorrectCounts:
    """Sample ``n`` completions of every problem at ``temperature`` (and top-p), score them with the
    problems' reward functions and count the correct ones per problem.

    Prompts are encoded once (through the chat template with ``chat``, else as plain text). Problems are
    generated and scored a chunk at a time, each chunk lcm(``n``, ``batch_size``) rows, so memory stays
    bounded and the generation batches are exactly those of one ``generate_rollouts`` call over every
    problem after ``torch.manual_seed(seed)``. ``show_progress``: a progress bar over problems.
    """
    if not is_positive_int(n):
        raise ValueError(f"n={n!r} must be an integer >= 1 (completions sampled per problem)")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0: pass@k is estimated from n sampled completions "
                         "per problem, and greedy decoding (temperature 0) would give n copies of one answer")
    if not is_positive_int(batch_size):
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    from tqdm.auto import tqdm

    prompt_ids = encode_prompts(tokenizer, problems.prompts, chat=chat)
    chunk = math.lcm(n, batch_size) // n  # problems per chunk: whole generation batches
    correct, scored, generated_tokens = [], [], 0
    start = time.perf_counter()
    with _forked_rng(next(model.parameters()).device), tqdm(total=len(problems), unit="problem", desc="pass@k",
                                                            disable=not show_progress, leave=False) as bar:
        torch.manual_seed(seed)
        for first in range(0, len(problems), chunk):
            indices = list(range(first, min(first + chunk, len(problems))))
            rollouts = generate_rollouts(model, [prompt_ids[i] for i in indices], [n] * len(indices),
                                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                         batch_size=batch_size)
            scores = score_rollouts(problems, indices, rollouts, tokenizer)
            solved, rewarded = correct_per_group(scores.rewards, rollouts.group, len(indices))
            correct.append(solved)
            scored.append(rewarded)
            generated_tokens += int(rollouts.completion_lengths.sum())
            bar.update(len(indices))
    return CorrectCounts(n=n, correct=torch.cat(correct), scored=torch.cat(scored),
                         generated_tokens=generated_tokens, seconds=time.perf_counter() - start)


def pass_at_k_curve(counts: CorrectCounts, ks: Sequence[int] | None = None) -> dict[int, float]:
    """``{k: pass@k}`` over the problems (Chen et al. 2021, Eq. 1, mean over problems) for each of ``ks``
    (default ``ks_up_to(counts.n)``), in the order given."""
    ks = ks_up_to(counts.n) if ks is None else list(ks)
    if not ks:
        raise ValueError("ks is empty: give at least one k (or None for 1, 2, 4, … up to n)")
    for k in ks:
        if not is_positive_int(k):
            raise ValueError(f"k={k!r} must be an integer >= 1")
        if k > counts.n:
            raise ValueError(f"k={k} exceeds n={counts.n}: pass@k needs at least k samples per problem; "
                             f"use k <= {counts.n} or sample more")
    return {k: pass_at_k(counts.n, counts.correct.numpy(), k) for k in ks}


def _check_report(curves: dict[str, dict[int, float]], settings: dict[str, Any]) -> list[int]:
    """The ks of all curves, sorted, once there is a curve and the settings hold what the report states."""
    if not curves:
        raise ValueError("curves is empty: give at least one {label: {k: pass@k}}")
    for label, curve in curves.items():
        if not curve:
            raise ValueError(f"curve {label!r} is empty: it needs at least one {{k: pass@k}}")
    missing = [key for key in REPORT_SETTINGS if key not in settings]
    if missing:
        raise ValueError(f"settings lack {', '.join(missing)}; the report states {', '.join(REPORT_SETTINGS)}")
    return sorted({int(k) for curve in curves.values() for k in curve})


def pass_at_k_markdown(curves: dict[str, dict[int, float]], *, title: str, settings: dict[str, Any]) -> str:
    """A table with one row per label and one column per k (blank where a curve lacks that k), and the settings."""
    ks = _check_report(curves, settings)
    others = [f"{key} {value}" for key, value in settings.items() if key not in REPORT_SETTINGS]
    lines = [f"# {title}", "",
             f"n = {settings['n']} samples per problem at temperature {settings['temperature']:g}, "
             f"{settings['problems']} problems, at most {settings['max_new_tokens']} new tokens"
             + "".join(f"; {other}" for other in others) + ".", "",
             "| checkpoint | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for label, curve in curves.items():
        cells = ["" if k not in curve else f"{curve[k]:.3f}" for k in ks]
        lines.append(f"| {label.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pass_at_k(curves: dict[str, dict[int, float]], path: Path, *, title: str, settings: dict[str, Any]) -> None:
    """pass@k against k on a log2 axis, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = _check_report(curves, settings)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for label, curve in curves.items():
        points = sorted(curve.items())
        axis.plot([k for k, _ in points], [value for _, value in points], marker="o", label=label)
    axis.set_xscale("log", base=2)
    axis.set_xticks(ks, [str(k) for k in ks])
    axis.set(xlabel="k (samples per problem)", ylabel="pass@k", ylim=(0, 1.02),
             title=f"{title}\nn = {settings['n']}, T = {settings['temperature']:g}, {settings['problems']} problems")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_pass_at_k_report(curves: dict[str, dict[int, float]], output_dir: str | Path, *, title: str,
                           settings: dict[str, Any]) -> dict[str, Path]:
    """Write ``pass_at_k.md`` (the table and settings), ``pass_at_k.json`` (``title``, ``settings`` and
    ``curves``, whose k keys JSON writes as strings) and ``pass_at_k.png`` (the curves) into ``output_dir``.
    ``settings`` must hold n, temperature, problems and max_new_tokens. Returns the paths by kind."""
    _check_report(curves, settings)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_dir / f"pass_at_k.{kind}" for kind in ("md", "json", "png")}
    paths["md"].write_text(pass_at_k_markdown(curves, title=title, settings=settings))
    record = {"title": title, "settings": settings,
              "curves": {label: {str(k): value for k, value in curve.items()} for label, curve in curves.items()}}
    paths["json"].write_text(json.dumps(record, indent=2, default=str))
    plot_pass_at_k(curves, paths["png"], title=title, settings=settings)
    return paths


def held_out_problems(sources: Sequence[str], data: str | None, held_out: int, data_seed: int) -> tuple[Problems, str]:
    """The problems to evaluate on and what they are: the held-out split of the first RL run among ``sources``
    (unless ``data`` is given), else the held-out split of ``data`` ("arithmetic" by default)."""
    runs = [Path(source) for source in sources if (Path(source) / CONFIG).is_file()]
    if data is None and runs:
        config = RLConfig.from_file(runs[0] / CONFIG)
        return prepare_problems(config)[1], f"the held-out split of {runs[0]} ({config.data})"
    config = RLConfig(data=data or "arithmetic", held_out=held_out, data_seed=data_seed)
    return prepare_problems(config)[1], f"the held-out split of {config.data}"


def evaluate_sources(sources: Sequence[str], output_dir: str | Path, *, data: str | None = None,
                     held_out: int = 200, n: int = 32, temperature: float = 1.0, top_p: float = 1.0,
                     max_new_tokens: int = 32, batch_size: int = 128, seed: int = 0, data_seed: int = 0,
                     chat: bool = True, show_progress: bool = True) -> dict[str, dict[int, float]]:
    """pass@k curves of each source (an RL run folder, an HF folder or "smollm2") on the same held-out
    problems and the same seeded samples; writes the report into ``output_dir`` and returns the curves."""
    if not sources:
        raise ValueError("no sources to evaluate: give RL run folders, HF model folders or 'smollm2'")
    problems, described = held_out_problems(sources, data, held_out, data_seed)
    curves: dict[str, dict[int, float]] = {}
    for source in sources:
        model, tokenizer, _ = load_policy(source)
        counts = count_correct(model, tokenizer, problems, n, temperature=temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, chat=chat,
                               show_progress=show_progress)
        curves[str(source)] = pass_at_k_curve(counts)
    settings = {"n": n, "temperature": temperature, "problems": len(problems), "max_new_tokens": max_new_tokens,
                "top_p": top_p, "seed": seed, "data": described}
    write_pass_at_k_report(curves, output_dir, title="pass@k on held-out problems", settings=settings)
    return curves
