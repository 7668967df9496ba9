"""`leantrain rl`: RL with verifiable rewards (GRPO, DARS, SELF) on a causal LM, and `leantrain rl eval`:
pass@k curves of models and RL runs on held-out problems."""

from __future__ import annotations

import argparse
from pathlib import Path

from leantrain.cli.common import add_engine_arguments, add_optimizer_arguments, add_sampling_arguments, is_main_process

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
    from leantrain.names import ADVANTAGE_SCALES, POLICY_LOSS_TYPES, RL_ALGORITHMS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--algo", default="grpo", choices=RL_ALGORITHMS,
                        help="grpo; dars-et / dars-hw: DARS's extra rollouts for hard prompts; dars-b: DARS-HW with "
                             "4x the prompts and 2 full-batch epochs; self: skip prompts the greedy answer solves "
                             "(default grpo)")
    parser.add_argument("--model", default="smollm2", help='"smollm2" (offline) or a local HF causal-LM folder')
    parser.add_argument("--data", default="arithmetic",
                        help='"arithmetic" (reasoning-gym chain_sum mix), "rg:TASK" or a .jsonl/.csv of prompt, answer '
                             "(default arithmetic)")
    parser.add_argument("--problems", type=int, default=2048, help="problems per reasoning-gym configuration (2048)")
    parser.add_argument("--held-out", type=int, default=200, help="held-out problems, kept out of training (200)")
    parser.add_argument("--no-chat", dest="chat", action="store_false",
                        help="plain-text prompts instead of the tokenizer's chat template")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="draws the problems and the held-out split (0); --seed draws everything else")
    group = parser.add_argument_group("rollouts")
    group.add_argument("--steps", type=int, default=20, help="RL steps (rollout batches) (20)")
    group.add_argument("--token-budget", type=int, default=None,
                       help="stop once this many tokens were generated (default: run --steps)")
    group.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step (8; dars-b 32)")
    group.add_argument("--rollouts", type=int, default=8, help="completions per prompt (DARS: round 1) (8)")
    group.add_argument("--max-rollouts", type=int, default=None,
                       help="DARS: the most completions a prompt gets (default 4x --rollouts for ET, 8x for HW)")
    group.add_argument("--ppo-epochs", type=int, default=None, help="updates per rollout batch (1; dars-b 2)")
    group.add_argument("--max-new-tokens", type=int, default=32, help="completion length limit (32)")
    group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1.0: off)")
    group.add_argument("--self-refill", action="store_true", help="self: draw prompts until the step is full")
    group.add_argument("--generation-batch", type=int, default=64, help="rows generated at once (64)")
    group = parser.add_argument_group("loss")
    group.add_argument("--loss-type", default="dapo", choices=POLICY_LOSS_TYPES, help="token aggregation (dapo)")
    group.add_argument("--scale", default=None, choices=ADVANTAGE_SCALES,
                       help="advantage scaling (default: group; none for DARS, as its released runs)")
    group.add_argument("--epsilon", type=float, default=0.2, help="PPO clip range, low side (0.2)")
    group.add_argument("--epsilon-high", type=float, default=None, help="clip range, high side (default --epsilon)")
    group.add_argument("--beta", type=float, default=0.0, help="KL to the starting model (0: no reference model)")
    group.add_argument("--entropy-bonus", type=float, default=0.0, help="entropy coefficient (0; DARS's runs 0.001)")
    group.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (1.0, TRL's)")
    group = parser.add_argument_group("memory")
    group.add_argument("--lora", type=int, default=None, metavar="RANK", help="LoRA of this rank instead of full")
    group.add_argument("--lora-layers", type=int, default=None, metavar="N", help="LoRA on the last N blocks only")
    add_sampling_arguments(parser)
    group.add_argument("--lean", action="store_true", help="swap in the memory-lean companions")
    group = parser.add_argument_group("evaluation")
    group.add_argument("--eval-every", type=int, default=10, help="RL steps between held-out evaluations (10)")
    group.add_argument("--eval-problems", type=int, default=64,
                       help="held-out problems evaluated in the run (64; 0: none)")
    add_optimizer_arguments(parser, lr=1e-5, weight_decay=0.0)
    add_engine_arguments(parser, output_dir="runs/rl")
    sub = parser.add_subparsers(dest="rl_command", metavar="eval")
    add_eval_arguments(sub.add_parser("eval", help="pass@k curves of RL runs and models on held-out problems",
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
    from leantrain.recipes.rl import RLConfig, rl

    epsilon_high = args.epsilon if args.epsilon_high is None else args.epsilon_high
    config = RLConfig(
        output_dir=args.output_dir, model=args.model, data=args.data, problems=args.problems, held_out=args.held_out,
        chat=args.chat, algo=args.algo, steps=args.steps, prompts_per_step=args.prompts_per_step,
        rollouts=args.rollouts, max_rollouts=args.max_rollouts, ppo_epochs=args.ppo_epochs,
        token_budget=args.token_budget, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, scale=args.scale, self_refill=args.self_refill, loss_type=args.loss_type,
        epsilon_low=args.epsilon, epsilon_high=epsilon_high, beta=args.beta, entropy_bonus=args.entropy_bonus,
        lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip, optimizer=args.optim, rank=args.rank,
        update_proj_gap=args.update_proj_gap, lora=args.lora, lora_layers=args.lora_layers, sampling=args.sampling,
        importance=args.importance, lean=args.lean, precision=args.precision, layout=args.layout,
        grad_accum=args.grad_accum, generation_batch=args.generation_batch, eval_every=args.eval_every,
        eval_problems=args.eval_problems, seed=args.seed, data_seed=args.data_seed)
    main = is_main_process()
    if main:
        print(f"leantrain rl: {config.algo} on {config.data} ({config.model}), {config.steps} steps of "
              f"{config.step_prompts} prompts x {config.rollouts} rollouts, up to {config.max_new_tokens} new tokens, "
              f"{config.optimizer} lr {config.lr:g}", flush=True)

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
