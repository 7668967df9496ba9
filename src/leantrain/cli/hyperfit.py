"""`leantrain hyperfit`: sharpen a causal LM on a small fixed set of sequences (Carlsson et al., ICLR
2025) and report how its continuations of held-out text change."""

from __future__ import annotations

import argparse
import sys

from leantrain.cli.common import add_run_arguments, is_main_process, print_config
from leantrain.cli.flags import add_config_arguments, config_from_args
from leantrain.config.hyperfit import HyperfitConfig

NAME = "hyperfit"
HELP = ("hyperfit a causal LM (default: SmolLM2-135M-Instruct on 2,000 BBC News sequences, the paper's protocol; "
        "--preset cpu for 2 cores)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, HyperfitConfig)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(HyperfitConfig, args)
    if args.print_config:
        from leantrain.recipes.hyperfit import resolve

        print_config(resolve(config, say=lambda text: print(text, file=sys.stderr)))
        return 0
    import torch

    from leantrain.recipes.hyperfit import hyperfit

    config = config.resolved()
    main = is_main_process()
    if main:
        print(f"leantrain hyperfit: {config.model} on {config.corpus}, {config.sequences} sequences x {config.seq_len} "
              f"tokens, {config.epochs} epochs = {config.total_steps} updates of {config.batch_size}, "
              f"{config.optim.name} lr {config.optim.lr:g}; evaluation every {config.eval_every} epoch(s)", flush=True)

    def show(record: dict) -> None:
        if "heldout_ttr_greedy" in record:
            other = (f"  other TTR {record['other_ttr_greedy']:.3f}" if "other_ttr_greedy" in record else "")
            print(f"epoch {record['epoch']:>5.1f}  held-out ppl {record['heldout_ppl']:8.1f}  entropy "
                  f"{record['heldout_entropy']:.2f}  TTR greedy {record['heldout_ttr_greedy']:.3f} top-p "
                  f"{record['heldout_ttr_top_p']:.3f}{other}", flush=True)

    if main and config.preset == "paper" and not torch.cuda.is_available():
        print("note: the paper's protocol is days of compute on a CPU; --preset cpu runs in about 15 minutes",
              flush=True)
    result = hyperfit(config, resume=args.resume, on_log=show)
    if main:
        print(f"trained {result.train_seconds:.0f}s (evaluation {result.eval_seconds:.0f}s); report in "
              f"{result.output_dir}: summary.md, report.png, samples.md, metrics.jsonl")
    return 0
