"""`leantrain demo`: WTA-CRS vs exact gradients on the offline MiniLM-L6 + BBC News, in a few steps."""

from __future__ import annotations

import argparse

from leantrain.sampling.config import SamplingConfig

NAME = "demo"
HELP = "a few MiniLM-L6 fine-tuning steps on BBC News: sampled vs exact gradients and bytes saved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sampling", default="wtacrs@0.3", metavar="METHOD@BUDGET[:IMPORTANCE]",
                        help="the sampled gradient compared with the exact one (default wtacrs@0.3)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from leantrain.recipes.gradient_demo import run_gradient_demo

    config = SamplingConfig.from_spec(args.sampling, seed=args.seed)
    print(f"leantrain demo: MiniLM-L6 on BBC News, batch {args.batch_size} x {args.seq_len} tokens, "
          f"{config.spec} (importance: {config.importance}), AdamW on the sampled gradient")
    print(f"{'step':>4}  {'loss exact':>10}  {'loss sampled':>12}  {'dW rel. error':>13}  {'dW cosine':>9}")

    def show(s):
        print(f"{s.step:>4}  {s.loss_exact:>10.4f}  {s.loss_sampled:>12.4f}  {s.relative_error:>13.3f}  "
              f"{s.cosine:>9.3f}", flush=True)

    result = run_gradient_demo(config, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                               seed=args.seed, on_step=show)
    mib = 2**20
    print(f"\nconverted {len(result.converted_layers)} layers (attention output + both FFN matrices per block)")
    print(f"bytes kept for backward by those layers: exact {result.layer_bytes_exact / mib:.1f} MiB, "
          f"sampled {result.layer_bytes_sampled / mib:.1f} MiB "
          f"({result.layer_bytes_sampled / result.layer_bytes_exact:.2f}x)")
    print(f"whole model, one forward: exact {result.saved_bytes_exact / mib:.1f} MiB, "
          f"sampled {result.saved_bytes_sampled / mib:.1f} MiB "
          f"({result.saved_bytes_sampled / result.saved_bytes_exact:.2f}x)")
    return 0
