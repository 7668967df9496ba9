"""`leantrain pretrain`: a small Llama-style LM from scratch on the offline KJV (or your text)."""

from __future__ import annotations

import argparse
import sys

from leantrain.cli.common import add_run_arguments, is_main_process, print_config
from leantrain.cli.flags import add_config_arguments, config_from_args
from leantrain.config.pretrain import PretrainConfig

NAME = "pretrain"
HELP = "pretrain a small Llama-style LM from scratch (default: 5M params on the King James Bible)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PretrainConfig)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(PretrainConfig, args)
    if args.print_config:
        from leantrain.recipes.pretrain import resolve

        print_config(resolve(config, say=lambda text: print(text, file=sys.stderr)))
        return 0
    from transformers.utils import logging

    from leantrain.recipes.pretrain import pretrain

    config = config.resolved()
    logging.disable_progress_bar()  # the model-saving bar; training has its own
    main = is_main_process()
    if main:
        print(f"leantrain pretrain: Llama {config.size} on {config.corpus}, {config.total_steps} updates of "
              f"{config.tokens_per_step:,} tokens, {config.optim.name}, schedule {config.schedule}, "
              f"peak lr {config.optim.lr:g}")
    result = pretrain(config, resume=args.resume,
                      on_log=lambda r: print(f"step {r['step']:>6}  val_loss {r['val_loss']:.4f}", flush=True)
                      if "val_loss" in r else None)
    if main:
        print(f"{result.parameters:,} parameters, {result.train_tokens:,} tokens in {result.train_seconds:.0f}s; "
              f"final validation loss {result.val_loss:.4f}")
        print(f"run folder: {result.output_dir} (metrics.jsonl, checkpoint.safetensors, model/, summary.json)")
    return 0
