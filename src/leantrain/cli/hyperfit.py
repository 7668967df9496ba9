"""`leantrain hyperfit`: sharpen a causal LM on a small fixed set of sequences (Carlsson et al., ICLR
2025) and report how its continuations of held-out text change."""

from __future__ import annotations

import argparse

from leantrain.cli.common import (
    add_engine_arguments,
    add_optimizer_arguments,
    add_sampling_arguments,
    is_main_process,
    sampling_config,
)

NAME = "hyperfit"
HELP = ("hyperfit a causal LM (default: SmolLM2-135M-Instruct on 2,000 BBC News sequences, the paper's protocol; "
        "--preset cpu for 2 cores)")
PRESET_NAMES = ("paper", "cpu")  # recipes/hyperfit.py PRESETS; the CLI stays torch-free

# Flags whose default comes from the preset: dest -> (type, help).
SHAPE = {
    "sequences": (int, "training sequences (paper 2000, cpu 32)"),
    "seq_len": (int, "tokens per sequence (paper 256, cpu 128)"),
    "epochs": (int, "passes over the sequences (paper 20, cpu 12)"),
    "eval_contexts": (int, "held-out contexts per domain (paper 32, cpu 16)"),
    "new_tokens": (int, "tokens generated per context (paper 224, cpu 128)"),
    "eval_every": (int, "epochs between evaluations and checkpoints (paper 1, cpu 6)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", choices=PRESET_NAMES,
                        help="paper: 2000 x 256 tokens, lr 1e-6; cpu: 32 x 128 tokens, lr 1e-4 (default paper)")
    parser.add_argument("--model", default="smollm2", help='"smollm2" (offline) or a local HF causal-LM folder')
    parser.add_argument("--corpus", nargs="+", default=["bbc"], help='"bbc", "kjv" or text files (default bbc)')
    parser.add_argument("--other-corpus", nargs="+", default=["kjv"],
                        help='held-out text of another domain: "bbc", "kjv", text files or "none" (default kjv)')
    for dest, (kind, text) in SHAPE.items():
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, default=None, help=text)
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per update, over all processes (8)")
    parser.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (default: none, as the paper)")
    parser.add_argument("--lora", type=int, default=None, metavar="RANK", help="LoRA of this rank instead of full")
    parser.add_argument("--lora-layers", type=int, default=None, metavar="N", help="LoRA on the last N blocks only")
    add_sampling_arguments(parser)
    parser.add_argument("--lean", action="store_true", help="swap in the memory-lean companions")
    group = parser.add_argument_group("evaluation")
    group.add_argument("--context-len", type=int, default=32, help="context tokens (32)")
    group.add_argument("--ttr-window", type=int, default=96, help="TTR over the last N generated tokens (96)")
    group.add_argument("--top-p", type=float, default=0.9, help="the sampling baseline's top-p (0.9)")
    group.add_argument("--temperature", type=float, default=0.7, help="the sampling baseline's temperature (0.7)")
    group.add_argument("--top-k", type=int, default=50, help="the sampling baseline's top-k (50)")
    group.add_argument("--citation-block", type=int, default=None, metavar="M",
                       help="forbid continuing a training span after M tokens (default: off)")
    group.add_argument("--copy-threshold", type=int, default=10, help="copies: spans longer than this (10)")
    group.add_argument("--no-entropy-control", dest="entropy_control", action="store_false",
                       help="skip sampling the starting model at the hyperfitted entropy")
    add_optimizer_arguments(parser, lr="paper 1e-6, cpu 1e-4", weight_decay=0.0)
    add_engine_arguments(parser, output_dir="runs/hyperfit")


def _corpus(values: list[str]) -> str | tuple[str, ...] | None:
    if values == ["none"]:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def run(args: argparse.Namespace) -> int:
    import torch

    from leantrain.recipes.hyperfit import HyperfitConfig, hyperfit

    shape = {dest: getattr(args, dest) for dest in (*SHAPE, "lr") if getattr(args, dest) is not None}
    config = HyperfitConfig.preset(
        args.preset, output_dir=args.output_dir, model=args.model, corpus=_corpus(args.corpus),
        other_corpus=_corpus(args.other_corpus), batch_size=args.batch_size, grad_accum=args.grad_accum,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, optimizer=args.optim, rank=args.rank,
        update_proj_gap=args.update_proj_gap, lora=args.lora, lora_layers=args.lora_layers,
        sampling=sampling_config(args), lean=args.lean, precision=args.precision, layout=args.layout,
        context_len=args.context_len, ttr_window=args.ttr_window, top_p=args.top_p, temperature=args.temperature,
        top_k=args.top_k, citation_block=args.citation_block, copy_threshold=args.copy_threshold,
        entropy_control=args.entropy_control, seed=args.seed, **shape)
    main = is_main_process()
    if main:
        print(f"leantrain hyperfit: {config.model} on {config.corpus}, {config.sequences} sequences x {config.seq_len} "
              f"tokens, {config.epochs} epochs = {config.total_steps} updates of {config.batch_size}, "
              f"{config.optimizer} lr {config.lr:g}; evaluation every {config.eval_every} epoch(s)", flush=True)

    def show(record: dict) -> None:
        if "heldout_ttr_greedy" in record:
            other = (f"  other TTR {record['other_ttr_greedy']:.3f}" if "other_ttr_greedy" in record else "")
            print(f"epoch {record['epoch']:>5.1f}  held-out ppl {record['heldout_ppl']:8.1f}  entropy "
                  f"{record['heldout_entropy']:.2f}  TTR greedy {record['heldout_ttr_greedy']:.3f} top-p "
                  f"{record['heldout_ttr_top_p']:.3f}{other}", flush=True)

    if main and args.preset == "paper" and not torch.cuda.is_available():
        print("note: the paper's protocol is days of compute on a CPU; --preset cpu runs in about 15 minutes",
              flush=True)
    result = hyperfit(config, resume=args.resume, on_log=show)
    if main:
        print(f"trained {result.train_seconds:.0f}s (evaluation {result.eval_seconds:.0f}s); report in "
              f"{result.output_dir}: summary.md, report.png, samples.md, metrics.jsonl")
    return 0
