"""`leantrain sft`: supervised fine-tuning of a causal LM on chat or prompt/completion data, loss on the
answers only, with leantrain's memory parts (or a memory budget the planner meets)."""

from __future__ import annotations

import argparse

from leantrain.cli.common import (
    add_engine_arguments,
    add_memory_arguments,
    add_optimizer_arguments,
    is_main_process,
    memory_options,
)

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
    from leantrain.names import TRAINING_SCHEDULES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--model", default="smollm2", help='"smollm2" (offline) or a local HF causal-LM folder')
    parser.add_argument("--data", default="arithmetic",
                        help='"arithmetic" (reasoning-gym chain_sum with worked answers), "rg:TASK" or a .jsonl/.csv '
                             "of messages or prompt/completion rows (default arithmetic)")
    parser.add_argument("--problems", type=int, default=256, help="problems per reasoning-gym configuration (256)")
    parser.add_argument("--held-out", type=int, default=100, help="held-out examples, kept out of training (100)")
    parser.add_argument("--data-seed", type=int, default=0, help="draws the problems and the held-out split (0)")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=1, help="passes over the training examples (1)")
    group.add_argument("--max-steps", type=int, default=None, help="at most this many updates (default: the epochs)")
    group.add_argument("--batch-size", type=int, default=8, help="rows per update (8)")
    group.add_argument("--max-length", type=int, default=512, help="longest example in tokens (512)")
    group.add_argument("--packing", action="store_true", help="pack whole examples into rows of --max-length")
    group.add_argument("--schedule", default="cosine", choices=TRAINING_SCHEDULES, help="learning-rate schedule")
    group.add_argument("--warmup", type=float, default=0.05, help="warm-up, a fraction of the updates (0.05)")
    group.add_argument("--grad-clip", type=float, default=1.0,
                       help="max global gradient norm (1.0, TRL's; off with --step-in-backward)")
    group = parser.add_argument_group("evaluation")
    group.add_argument("--eval-every", type=int, default=None, help="updates between evaluations (default: the end)")
    group.add_argument("--eval-problems", type=int, default=100,
                       help="held-out problems whose greedy answer is checked (100; 0: loss only)")
    group.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit at evaluation (64)")
    add_memory_arguments(parser)
    add_optimizer_arguments(parser, lr="2e-5 full, 2e-4 with LoRA", weight_decay=0.0)
    add_engine_arguments(parser, output_dir="runs/sft")


def run(args: argparse.Namespace) -> int:
    from leantrain.recipes.sft import SFTConfig, sft

    config = SFTConfig(output_dir=args.output_dir, model=args.model, data=args.data, problems=args.problems,
                       held_out=args.held_out, max_length=args.max_length, packing=args.packing,
                       batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs,
                       max_steps=args.max_steps, lr=args.lr, warmup=args.warmup, schedule=args.schedule,
                       weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                       memory=memory_options(args, args.optim), memory_budget=args.memory_budget,
                       precision=args.precision, layout=args.layout, eval_every=args.eval_every,
                       eval_problems=min(args.eval_problems, args.held_out), max_new_tokens=args.max_new_tokens,
                       seed=args.seed, data_seed=args.data_seed)
    result = sft(config, resume=args.resume)
    if is_main_process():
        start, end = result.records[0], result.records[-1]
        print(f"leantrain sft: {result.steps} updates of {config.model} on {config.data} "
              f"({result.memory.describe()}), {result.train_seconds:.0f} s")
        print(f"{'held-out':<22}{'start':>10}{'end':>10}")
        for key in ("heldout_loss", "heldout_accuracy"):
            if key in start and key in end:
                print(f"{key.removeprefix('heldout_'):<22}{start[key]:>10.4f}{end[key]:>10.4f}")
        print(f"trained model: {result.output_dir / 'model'} (an HF folder: leantrain rl --model it)")
    return 0
