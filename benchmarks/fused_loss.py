"""The fused LM-head loss alone against the full-logits loss a HF causal LM computes (issue 23).

One "step" is the LM head + the causal-LM loss of ``--tokens`` hidden rows of width ``--hidden``, forward and
backward (gradients of the hidden states and the head's weight), at each ``--vocab``:
- full logits: ``lm_head(hidden)`` then transformers' ``ForCausalLMLoss`` (fp32 logits, ``F.cross_entropy``),
  what every HF causal LM computes;
- fused: ``lean/lm_loss.py`` with the default chunk (``LeanConfig.lm_loss_chunk_logits``), a 2× larger and a
  2× smaller one.
Time: the median of ``--repeats`` interleaved steps after one warm-up each (benchmarks/timing.py). Peak: each
step in a fresh subprocess, its peak RSS above the RSS before it (memory/peak.py), the head's weight gradient
included in both.

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fused_loss.py [--tokens 2048] [--hidden 576]
      [--vocab 49152 128256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass

import torch
from timing import interleaved_medians
from torch import nn
from transformers.loss.loss_utils import ForCausalLMLoss

from leantrain.lean import LeanConfig
from leantrain.lean.lm_loss import chunked_causal_lm_loss
from leantrain.memory.peak import cpu_peak_in_subprocess

MIB = 2**20
DEFAULT_CHUNK = LeanConfig().lm_loss_chunk_logits
RUNS = {"full logits (HF ForCausalLMLoss)": None, "fused, default chunk (32 MiB of logits)": DEFAULT_CHUNK,
        "fused, 2x chunk (64 MiB)": 2 * DEFAULT_CHUNK, "fused, 1/2 chunk (16 MiB)": DEFAULT_CHUNK // 2}


class HeadLoss(nn.Module):
    """Hidden rows (a Parameter, so that their gradient is computed) and a linear head; ``forward(labels)`` is
    the causal-LM loss, fused in chunks of ``chunk_logits`` logits or else from the full logits."""

    def __init__(self, tokens: int, hidden: int, vocab: int, chunk_logits: int | None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.hidden = nn.Parameter(torch.randn(1, tokens, hidden, generator=generator))
        self.head = nn.Linear(hidden, vocab, bias=False)
        with torch.no_grad():  # the same weights in every run
            self.head.weight.normal_(std=hidden**-0.5, generator=generator)
        self.chunk_logits = chunk_logits

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.chunk_logits is None:
            return ForCausalLMLoss(self.head(self.hidden), labels, vocab_size=self.head.out_features)
        rows = max(1, self.chunk_logits // self.head.out_features)
        return chunked_causal_lm_loss(self.hidden, self.head, labels, rows)


@dataclass(frozen=True)
class HeadLossSpec:
    """A picklable builder of one run's (module, labels, no optimizer), for the peak subprocess."""

    tokens: int
    hidden: int
    vocab: int
    chunk_logits: int | None

    def __call__(self) -> tuple[HeadLoss, torch.Tensor, None]:
        labels = torch.randint(self.vocab, (1, self.tokens), generator=torch.Generator().manual_seed(1))
        return HeadLoss(self.tokens, self.hidden, self.vocab, self.chunk_logits), labels, None


def timed_step(module: HeadLoss, labels: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    module(labels).backward()
    return time.perf_counter() - start


def compare(tokens: int, hidden: int, vocab: int, repeats: int) -> list[str]:
    specs = {name: HeadLossSpec(tokens, hidden, vocab, chunk) for name, chunk in RUNS.items()}
    built = {name: spec() for name, spec in specs.items()}
    with torch.no_grad():  # every run computes the same loss
        losses = {name: float(module(labels)) for name, (module, labels, _) in built.items()}
    seconds = interleaved_medians(lambda name: timed_step(*built[name][:2]), specs, repeats)
    built.clear()
    peaks = {}
    for name, spec in specs.items():
        peaks[name] = cpu_peak_in_subprocess(spec).step_bytes
        print(f"  V={vocab:,} {name}: {seconds[name]:.3f} s, peak {peaks[name] / MIB:.0f} MiB", file=sys.stderr)
    base = next(iter(specs))
    return [f"| {vocab:,} | {name} | {losses[name]:.6f} | {seconds[name]:.3f} | {seconds[name] / seconds[base]:.2f}x "
            f"| {peaks[name] / MIB:,.0f} | {peaks[base] / peaks[name]:.1f}x less |" for name in specs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 128256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"`{shlex.join(['benchmarks/fused_loss.py', *sys.argv[1:]])}`, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.tokens} rows of width {args.hidden}\n")
    print("| vocabulary | loss | value | fwd + bwd s (median) | vs full | step peak MiB | vs full |")
    print("|---|---|---|---|---|---|---|")
    for vocab in args.vocab:
        for line in compare(args.tokens, args.hidden, vocab, args.repeats):
            print(line, flush=True)


if __name__ == "__main__":
    main()
