"""`leantrain sft`: supervised fine-tuning of a causal LM on chat or prompt/completion data, loss on the
answers only, with leantrain's memory parts (or a memory budget the planner meets)."""

from __future__ import annotations

import argparse
import sys

from leantrain.cli.common import add_run_arguments, is_main_process, print_config
from leantrain.cli.flags import add_config_arguments, config_from_args
from leantrain.config.sft import SFTConfig

NAME = "sft"
HELP = ("supervised fine-tuning of a causal LM (loss on the answers): SmolLM2-135M-Instruct on reasoning-gym "
        "arithmetic with worked answers by default")
EPILOG = """\
your own model and data:
  leantrain sft --model path/to/hf-folder --data chats.jsonl
  chats.jsonl: TRL's formats, one per line: {"messages": [{"role": "user", "content": ...},
  {"role": "assistant", "content": ...}]} (loss on the assistant turns), or {"prompt": ..., "completion": ...}
  (strings, or lists of messages; loss on the completion). CSV with prompt, completion columns works too.
less memory: --checkpointing layers --chunked-loss --state-bits 8 --step-in-backward, or --memory-budget 2GiB
  to let the planner choose (docs/memory.md).
several processes: torchrun --standalone --nproc_per_node 2 -m leantrain sft ... [--layout fsdp2]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_config_arguments(parser, SFTConfig)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from leantrain.config import describe_parts
    from leantrain.recipes.sft import prepare, sft

    config = config_from_args(SFTConfig, args)
    if args.print_config:
        print_config(prepare(config, say=lambda text: print(text, file=sys.stderr)).config)
        return 0
    result = sft(config, resume=args.resume)
    if is_main_process():
        start, end, config = result.records[0], result.records[-1], result.config
        print(f"leantrain sft: {result.steps} updates of {config.model} on {config.data} "
              f"({describe_parts(config.memory, config.optim)}), {result.train_seconds:.0f} s")
        print(f"{'held-out':<22}{'start':>10}{'end':>10}")
        for key in ("heldout_loss", "heldout_accuracy"):
            if key in start and key in end:
                print(f"{key.removeprefix('heldout_'):<22}{start[key]:>10.4f}{end[key]:>10.4f}")
        print(f"trained model: {result.output_dir / 'model'} (an HF folder: leantrain rl --model it)")
    return 0
