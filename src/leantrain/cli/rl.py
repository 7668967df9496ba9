"""`leantrain rl`: RL with verifiable rewards (GRPO, DARS, SELF) on a causal LM, and `leantrain rl eval`:
pass@k curves of models and RL runs on held-out problems."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leantrain.cli.common import add_run_arguments, is_main_process, print_config
from leantrain.cli.flags import add_config_arguments, config_from_args
from leantrain.config.rl import RLConfig

NAME = "rl"
HELP = ("RL with verifiable rewards: GRPO, DARS (ET, HW, Breadth) or SELF on SmolLM2-135M-Instruct and reasoning-gym "
        "arithmetic by default; `leantrain rl eval RUN...` gives pass@k curves")
EPILOG = """\
your own model, data and reward:
  leantrain rl --model path/to/hf-folder --data problems.jsonl --algo dars-et
  problems.jsonl: one {"prompt": "...", "answer": "42"} per line (CSV with the same columns works too);
  answers are checked on the last number or \\boxed{} of the completion. For another reward, call
  leantrain.recipes.rl.rl(config, reward_functions={"name": f}) with TRL's signature
  f(prompts, completions, **columns) -> list[float | None] (see docs/rl.md).
several processes: torchrun --standalone --nproc_per_node 2 -m leantrain rl ... [--layout fsdp2]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_config_arguments(parser, RLConfig)
    add_run_arguments(parser)
    sub = parser.add_subparsers(dest="rl_command", metavar="eval")
    add_eval_arguments(sub.add_parser("eval", allow_abbrev=False,
                                      help="pass@k curves of RL runs and models on held-out problems",
                                      description="pass@k (k = 1, 2, 4, ... n) of each source on the same held-out "
                                                  "problems and seeded samples: pass_at_k.md, .json, .png"))


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help='RL run folders, HF model folders or "smollm2"')
    parser.add_argument("--data", default=None,
                        help="problems (default: the first run's data and held-out split, else arithmetic)")
    parser.add_argument("--held-out", type=int, default=200, help="held-out problems when no run gives them (200)")
    parser.add_argument("--n", type=int, default=32, help="samples per problem; k runs 1, 2, 4, ... n (32)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128, help="rows generated at once (128)")
    parser.add_argument("--no-chat", dest="chat", action="store_false")
    parser.add_argument("--seed", type=int, default=0, help="seeds the samples (0)")
    parser.add_argument("--data-seed", type=int, default=0, help="draws the problems and split without a run (0)")
    parser.add_argument("--output-dir", "--out", dest="output_dir", default="runs/rl-eval",
                        help="where pass_at_k.md, .json and .png go (runs/rl-eval)")


def run_eval(args: argparse.Namespace) -> int:
    from leantrain.recipes.rl_eval import evaluate_sources

    curves = evaluate_sources(args.sources, args.output_dir, data=args.data, held_out=args.held_out, n=args.n,
                              temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, seed=args.seed, data_seed=args.data_seed, chat=args.chat)
    print((Path(args.output_dir) / "pass_at_k.md").read_text() if curves else "", end="")
    print(f"written to {args.output_dir}: pass_at_k.md, pass_at_k.json, pass_at_k.png")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.rl_command == "eval":
        return run_eval(args)
    from leantrain.config import describe_parts
    from leantrain.data.problems import check_source
    from leantrain.recipes.rl import prepare, rl

    config = config_from_args(RLConfig, args)
    if args.print_config:
        print_config(prepare(config, say=lambda text: print(text, file=sys.stderr)).config)
        return 0
    check_source(config.data)  # a missing package or a bad source: one line, before anything is printed or done
    main = is_main_process()
    if main:
        shown = config.resolved()
        print(f"leantrain rl: {shown.algo} on {shown.data} ({shown.model}), {shown.steps} steps of "
              f"{shown.prompts_per_step} prompts x {shown.rollouts} rollouts, up to {shown.max_new_tokens} new "
              f"tokens, {describe_parts(shown.memory, shown.optim)} lr {shown.optim.lr:g}", flush=True)

    def show(record: dict) -> None:
        if "heldout_greedy_accuracy" in record:
            print(f"step {record['step']:>4}  held-out greedy accuracy {record['heldout_greedy_accuracy']:.3f}  "
                  f"sampled {record['heldout_sampled_accuracy']:.3f}", flush=True)
        elif "reward_mean" in record:
            print(f"rl step {record['rl_step']:>4}  reward {record['reward_mean']:.3f}  zero-std groups "
                  f"{record['frac_zero_std']:.2f}  rollouts {record['rollouts']}  tokens {record['tokens_total']:,}  "
                  f"generation {record['generation_seconds']:.0f}s  training {record['train_seconds']:.0f}s",
                  flush=True)

    result = rl(config, resume=args.resume, on_log=show)
    if main:
        print(f"{result.steps} RL steps, {result.generated_tokens:,} generated tokens, trained "
              f"{result.train_seconds:.0f}s (evaluation {result.eval_seconds:.0f}s); {result.output_dir}/summary.md; "
              f"pass@k: leantrain rl eval {result.output_dir}")
    return 0
