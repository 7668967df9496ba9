"""The report of a hyperfitting run: ``summary.json``, ``summary.md`` (a table per evaluation and the
start -> end changes), ``report.png`` (training loss, held-out perplexity, TTR greedy vs top-p and
entropy by epoch), ``samples.md`` (continuations before and after, side by side), and the follow-up
paper's entropy-matched temperature control."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from leantrain.config.fields import to_dict
from leantrain.config.hyperfit import DOMAINS
from leantrain.generation import Decoding, continue_contexts
from leantrain.io.metrics import read_metrics
from leantrain.metrics import mean_entropy, temperature_for_entropy
from leantrain.metrics.text import type_token_ratio
from leantrain.recipes.causal_lm import load_causal_lm

COLUMNS = (("epoch", "epoch", "{:.0f}"), ("train_loss", "train loss", "{:.3f}"), ("ppl", "ppl", "{:.1f}"),
           ("entropy", "entropy", "{:.2f}"), ("top1", "top-1 p", "{:.2f}"), ("ttr_greedy", "TTR greedy", "{:.3f}"),
           ("ttr_top_p", "TTR top-p", "{:.3f}"), ("rep3_greedy", "3-gram rep. greedy", "{:.3f}"),
           ("copied_greedy", "copies > m greedy", "{:.3f}"), ("copy_max_greedy", "longest copy", "{:.0f}"))


def entropy_matched_control(config, folder: Path, data, last: dict) -> dict:
    """The starting model sampled (temperature only) at the temperature that gives its held-out
    predictions the hyperfitted model's mean entropy ("Beyond Temperature", arXiv 2605.22579)."""
    model, _ = load_causal_lm(folder)
    model.eval()
    sequences = data.sample.held_out
    with torch.no_grad():
        logits = torch.cat([model(input_ids=ids).logits[:, :-1].float() for ids in
                            sequences.split(config.eval_batch_size)])
        temperature = temperature_for_entropy(logits, last["heldout_entropy"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.engine.seed)
            continuations = continue_contexts(model, sequences[:, :config.context_len], config.new_tokens,
                                              Decoding(sample=True, temperature=temperature),
                                              config.eval_batch_size)
    ttr = sum(type_token_ratio(row, config.ttr_window) for row in continuations.tolist()) / len(continuations)
    return {"temperature": temperature, "entropy": mean_entropy(logits / temperature), "heldout_ttr": ttr}


def _row(record: dict, domain: str) -> str:
    cells = []
    for key, _, form in COLUMNS:
        value = record.get(key if key in ("epoch", "train_loss") else f"{domain}_{key}")
        cells.append("" if value is None else form.format(value))
    return "| " + " | ".join(cells) + " |"


def summary_markdown(result, domains: list[str]) -> str:
    config, records = result.config, result.records
    first, last = records[0], records[-1]
    lines = [f"# Hyperfitting: {config.model} on {config.corpus}", "",
             f"{config.sequences} sequences of {config.seq_len} tokens, batch {config.batch_size}, {config.epochs} "
             f"epochs ({config.total_steps} updates), {config.optim.name} lr {config.optim.lr:g}, weight decay "
             f"{config.optim.weight_decay:g}; {result.trainable_parameters:,} trainable parameters. Training "
             f"{result.train_seconds:.0f} s, evaluation {result.eval_seconds:.0f} s.", "",
             f"Held-out contexts: {config.eval_contexts} per domain, {config.context_len} tokens each; continuations "
             f"of {config.new_tokens} tokens, TTR over the last {config.ttr_window}; top-p {config.top_p:g}, "
             f"temperature {config.temperature:g}, top-k {config.top_k}; copies: a span longer than "
             f"{config.copy_threshold} tokens found verbatim in the training sequences."]
    for domain in domains:
        name = config.corpus if domain == "heldout" else config.other_corpus
        lines += ["", f"## {domain}: held-out text of {name}", "",
                  "| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += [_row(record, domain) for record in records]
        greedy, sampled = first[f"{domain}_ttr_greedy"], first[f"{domain}_ttr_top_p"]
        entropy = (first[f"{domain}_entropy"], last[f"{domain}_entropy"])
        lines += ["", f"- greedy TTR {greedy:.3f} -> {last[f'{domain}_ttr_greedy']:.3f} "
                      f"({last[f'{domain}_ttr_greedy'] - greedy:+.3f}); the starting model's top-p TTR {sampled:.3f}",
                  f"- mean entropy {entropy[0]:.2f} -> {entropy[1]:.2f} nats "
                  f"({100 * (entropy[1] - entropy[0]) / entropy[0]:+.0f}%); perplexity "
                  f"{first[f'{domain}_ppl']:.1f} -> {last[f'{domain}_ppl']:.1f}",
                  f"- greedy continuations copying more than {config.copy_threshold} training tokens: "
                  f"{100 * last[f'{domain}_copied_greedy']:.1f}% (longest {last[f'{domain}_copy_max_greedy']:.0f})"]
    if result.control is not None:
        control = result.control
        lines += ["", "## Control: the starting model at the hyperfitted entropy", "",
                  f"Sampled at temperature {control['temperature']:.3f} (mean entropy {control['entropy']:.2f} nats, "
                  f"the hyperfitted model's): held-out TTR {control['heldout_ttr']:.3f}, against the hyperfitted "
                  f"greedy {last['heldout_ttr_greedy']:.3f}."]
    return "\n".join(lines) + "\n"


def plot(result, domains: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in read_metrics(result.output_dir / "metrics.jsonl") if "loss" in r]
    records = result.records
    epochs = [r["epoch"] for r in records]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    axes[0, 0].plot([r["epoch"] for r in steps], [r["loss"] for r in steps])
    axes[0, 0].set(title="training loss", xlabel="epoch", yscale="log")
    for domain in domains:
        axes[0, 1].plot(epochs, [r[f"{domain}_ppl"] for r in records], marker="o", label=domain)
        for decoding, style in (("greedy", "-"), ("top_p", "--")):
            axes[1, 0].plot(epochs, [r[f"{domain}_ttr_{decoding}"] for r in records], style, marker="o",
                            label=f"{domain} {decoding}")
        axes[1, 1].plot(epochs, [r[f"{domain}_entropy"] for r in records], marker="o", label=domain)
    axes[0, 1].set(title="held-out perplexity", xlabel="epoch", yscale="log")
    axes[1, 0].set(title=f"TTR (last {result.config.ttr_window} tokens)", xlabel="epoch")
    axes[1, 1].set(title="mean predictive entropy (nats)", xlabel="epoch")
    for axis in (axes[0, 1], axes[1, 0], axes[1, 1]):
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def samples_markdown(path: Path, tokenizer) -> str:
    """Continuations of the first and the last evaluation side by side, per domain and context."""
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    latest = {(e["step"], e["domain"], e["index"]): e for e in entries}  # a re-run evaluation replaces its entry
    first, last = min(step for step, _, _ in latest), max(step for step, _, _ in latest)

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids).replace("\n", " ").strip()

    lines = ["# Sample continuations: the starting model and the hyperfitted one", ""]
    for (step, domain, index), entry in sorted(latest.items(), key=lambda item: (item[0][1], item[0][2])):
        if step != first or (last, domain, index) not in latest:
            continue
        after = latest[(last, domain, index)]
        lines += [f"## {domain} #{index}", "", f"**context:** {text(entry['context'])}", "",
                  f"**original text:** {text(entry['original'])}", "",
                  f"**before, greedy:** {text(entry['greedy'])}", "", f"**before, top-p:** {text(entry['top_p'])}", "",
                  f"**after (epoch {after['epoch']:.0f}), greedy:** {text(after['greedy'])}", "",
                  f"**after, top-p:** {text(after['top_p'])}", ""]
    return "\n".join(lines)


def summary(result) -> dict:
    """What ``summary.json`` holds: the config, the start and end evaluations, times, the control."""
    return {"config": to_dict(result.config), "steps": result.config.total_steps,
            "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
            "trainable_parameters": result.trainable_parameters, "start": result.records[0],
            "end": result.records[-1], "control": result.control}


def write_report(result, tokenizer) -> None:
    """``summary.md``, ``report.png`` and ``samples.md`` (the engine writes ``summary.json``)."""
    run_dir = result.output_dir
    domains = [d for d in DOMAINS if f"{d}_ppl" in result.records[0]]
    (run_dir / "summary.md").write_text(summary_markdown(result, domains))
    plot(result, domains, run_dir / "report.png")
    (run_dir / "samples.md").write_text(samples_markdown(run_dir / "samples.jsonl", tokenizer))
