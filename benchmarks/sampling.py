"""WTA-CRS vs CRS on real activations: MiniLM-L6 fine-tuned on BBC News, fully offline.

Three measurements, each printed as a table (the numbers in BENCHMARKS.md come from this script):

1. variance — for every layer of the "paper" preset, the input rows X and output gradients dY of
   real fine-tuning steps are captured; each importance source scores the rows as it would at
   forward time (from what it learnt on earlier steps), and the closed-form expected squared
   error of CRS and WTA-CRS is evaluated (exact expectations, no Monte-Carlo noise). Two epochs
   over the same batches, so the per-example cache has seen every example; epoch 2 is reported.
2. memory — bytes saved for backward by the converted layers and by the whole model, exact vs
   WTA-CRS at each budget.
3. speed — one training step (forward, backward, AdamW) of the stock model vs the sampled one on
   the same batch, interleaved, several repeats, median ratio.

Run:  .venv/bin/python benchmarks/sampling.py [--batches 6 --batch-size 16 --seq-len 128]
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections import defaultdict

import torch
from timing import interleaved_medians, timed_training_step
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

import leantrain as lt
from leantrain.data.bbc import LABELS, load_bbc_news, split
from leantrain.memory import saved_tensor_bytes
from leantrain.models.pretrained import minilm_path
from leantrain.sampling.estimators import expected_squared_error, sample_size
from leantrain.sampling.importance import SOURCES, make_source

BUDGETS = (0.3, 0.1)


def load(seed: int):
    logging.set_verbosity_error()  # the fresh classifier head is expected
    logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(LABELS))
    return model, AutoTokenizer.from_pretrained(minilm_path())


def batches(tokenizer, n_batches: int, batch_size: int, seq_len: int):
    train, _ = split(load_bbc_news())
    out = []
    for b in range(n_batches):
        chunk = train[b * batch_size:(b + 1) * batch_size]
        enc = tokenizer([e.text for e in chunk], truncation=True, max_length=seq_len, padding="max_length",
                        return_tensors="pt")
        out.append((torch.arange(b * batch_size, (b + 1) * batch_size),
                    {**enc, "labels": torch.tensor([e.label for e in chunk])}))
    return out


def capture_rows(model, names):
    """Forward hooks keeping each named layer's input and output gradient, as [batch, positions, d]."""
    captured = {}

    def hook(name):
        def forward_hook(module, inputs, output):
            captured[name] = {"x": inputs[0].detach()}
            output.register_hook(lambda grad: captured[name].__setitem__("dy", grad.detach()))
        return forward_hook

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    return captured, handles


def variance_table(args) -> None:
    model, tokenizer = load(args.seed)
    data = batches(tokenizer, args.batches, args.batch_size, args.seq_len)
    names = lt.sampling.find_targets(model, "paper")
    captured, handles = capture_rows(model, names)
    sources = {(n, s): make_source(s) for n in names for s in SOURCES}
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    ratio = defaultdict(list)      # (source, budget) -> WTA / CRS per layer and step
    rel_mse = defaultdict(list)    # (source, budget, method) -> E‖Ĝ−G‖² / ‖G‖²
    model.train()
    for epoch in range(2):
        for ids, batch in data:
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
            for name in names:
                x, dy = captured[name]["x"], captured[name]["dy"]
                x_norms, dy_norms = x.norm(dim=-1), dy.float().norm(dim=-1)
                x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
                g_sq = (dy2.t() @ x2).square().sum().item()
                for s in SOURCES:
                    source = sources[name, s]
                    scores = source.scores(x_norms, ids).flatten()
                    source.observe(dy_norms, ids)
                    if epoch == 0:
                        continue
                    for budget in BUDGETS:
                        k = sample_size(x2.shape[0], budget, 10)
                        v = {m: expected_squared_error(x2, dy2, scores, m, k) for m in ("crs", "wtacrs")}
                        ratio[s, budget].append(v["wtacrs"] / v["crs"])
                        for m in v:
                            rel_mse[s, budget, m].append(v[m] / g_sq)
    for h in handles:
        h.remove()
    print(f"\n## Variance on real activations (MiniLM-L6, BBC News, {len(names)} layers, "
          f"{args.batches} batches x {args.batch_size} x {args.seq_len} tokens, epoch 2)\n")
    print("| importance | ρ | Var WTA-CRS / Var CRS (median over layers×steps) | mean | "
          "rel. MSE CRS | rel. MSE WTA-CRS |")
    print("|---|---|---|---|---|---|")
    for s in SOURCES:
        for budget in BUDGETS:
            r = ratio[s, budget]
            print(f"| {s} | {budget} | {statistics.median(r):.3f} | {statistics.fmean(r):.3f} | "
                  f"{statistics.fmean(rel_mse[s, budget, 'crs']):.3f} | "
                  f"{statistics.fmean(rel_mse[s, budget, 'wtacrs']):.3f} |")


def memory_table(args) -> None:
    model, tokenizer = load(args.seed)
    _, batch = batches(tokenizer, 1, args.batch_size, args.seq_len)[0]
    model.train()
    rows = []
    for label, budget in [("exact", None), *[(f"WTA-CRS@{b}", b) for b in BUDGETS]]:
        candidate = copy.deepcopy(model)
        if budget is not None:
            lt.apply_sampling(candidate, lt.SamplingConfig("wtacrs", budget, seed=0))
        names = lt.sampling.find_targets(model, "paper")
        report = saved_tensor_bytes(candidate, batch)
        rows.append((label, sum(report.by_name[n] for n in names), report.total))
    exact_layers, exact_total = rows[0][1], rows[0][2]
    print(f"\n## Bytes saved for backward (MiniLM-L6, batch {args.batch_size} x {args.seq_len}, fp32)\n")
    print("| run | converted layers | vs exact | whole model | vs exact |")
    print("|---|---|---|---|---|")
    for label, layers, total in rows:
        print(f"| {label} | {layers / 2**20:.1f} MiB | {layers / exact_layers:.3f} | "
              f"{total / 2**20:.1f} MiB | {total / exact_total:.3f} |")


def speed_table(args) -> None:
    model, tokenizer = load(args.seed)
    _, batch = batches(tokenizer, 1, args.batch_size, args.seq_len)[0]
    runs = {"exact": model}
    for budget in BUDGETS:
        sampled = copy.deepcopy(model)
        lt.apply_sampling(sampled, lt.SamplingConfig("wtacrs", budget, seed=0))
        runs[f"WTA-CRS@{budget}"] = sampled
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in runs.items()}

    medians = interleaved_medians(lambda name: timed_training_step(runs[name], optimizers[name], batch), runs,
                                  args.repeats)
    print(f"\n## Step time (MiniLM-L6, batch {args.batch_size} x {args.seq_len}, fp32, AdamW, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats)\n")
    print("| run | median step | vs exact |")
    print("|---|---|---|")
    for name, t in medians.items():
        print(f"| {name} | {t * 1000:.0f} ms | {t / medians['exact']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["variance", "memory", "speed"], default=None)
    args = parser.parse_args()
    for name, table in [("variance", variance_table), ("memory", memory_table), ("speed", speed_table)]:
        if args.only in (None, name):
            table(args)


if __name__ == "__main__":
    main()
