"""Low-rank optimizers vs AdamW in pretraining: final validation loss and optimizer-state bytes.

The pretraining recipe on the King James Bible (offline), a small Llama-style model, equal
steps, the same schedule (WSD) and peak learning rate, and the same rank for every low-rank
optimizer; several seeds (model initialisation and batch order). State bytes are counted after
one step of the same model (``leantrain.optim.optimizer_state_bytes``). One BPE tokenizer, trained
on the corpus by the first run, is shared by all runs.

Run:  .venv/bin/python -u benchmarks/optim_loss.py [--size 5m] [--vocab 2048] [--tokens 600000]
          [--rank 48] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from leantrain.config import OptimConfig
from leantrain.config.pretrain import PretrainConfig
from leantrain.models.llama_sizes import build_llama
from leantrain.names import LOW_RANK_OPTIMIZERS, OPTIMIZERS
from leantrain.optim import optimizer_state_bytes
from leantrain.recipes.pretrain import pretrain


def optim_config(name: str, args: argparse.Namespace) -> OptimConfig:
    """The recipe's optimizer section (weight decay, betas) with this optimizer, the peak lr and, for the
    low-rank ones, the rank and refresh gap (AdamW takes neither)."""
    low_rank = name in LOW_RANK_OPTIMIZERS
    return replace(PretrainConfig().optim, name=name, lr=args.lr, rank=args.rank if low_rank else None,
                   update_proj_gap=args.update_proj_gap if low_rank else None)


def state_bytes(name: str, args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    model = build_llama(args.size, args.vocab, args.seq_len)
    optimizer = replace(optim_config(name, args), lr=1e-3).build(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    return optimizer_state_bytes(optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="5m")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=600_000)
    parser.add_argument("--rank", type=int, default=48)
    parser.add_argument("--update-proj-gap", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--optimizers", nargs="+", default=["adamw", "galore", "fira", "frugal", "dct"],
                        choices=[name for name in OPTIMIZERS if name != "sgd"])
    args = parser.parse_args()

    losses: dict[str, list[float]] = {name: [] for name in args.optimizers}
    seconds: dict[str, list[float]] = {name: [] for name in args.optimizers}
    parameters = 0
    with tempfile.TemporaryDirectory() as root:
        tokenizer = None
        for seed in args.seeds:
            for name in args.optimizers:
                engine = replace(PretrainConfig().engine, output_dir=f"{root}/{name}-{seed}", seed=seed,
                                 save_every=10**9)
                config = PretrainConfig(
                    size=args.size, vocab_size=args.vocab, tokenizer=tokenizer, tokens=args.tokens,
                    seq_len=args.seq_len, batch_size=args.batch_size, eval_every=100, engine=engine,
                    optim=optim_config(name, args),
                )
                result = pretrain(config, show_bar=False)
                tokenizer = tokenizer or str(Path(config.engine.output_dir) / "tokenizer.json")
                losses[name].append(result.val_loss)
                seconds[name].append(result.train_seconds)
                parameters = result.parameters
                print(f"seed {seed} {name}: val loss {result.val_loss:.4f} ({result.train_seconds:.0f} s)", flush=True)

    sizes = {name: state_bytes(name, args) for name in args.optimizers}
    base = args.optimizers[0]
    base_loss = statistics.fmean(losses[base])
    print(f"\n### Pretraining on KJV: Llama {args.size} ({parameters:,} parameters, vocabulary {args.vocab}), "
          f"{args.tokens:,} tokens ({args.batch_size} × {args.seq_len} per step), WSD, peak lr {args.lr:g}, "
          f"rank {args.rank}, refresh every {args.update_proj_gap} steps, seeds {args.seeds}\n")
    print(f"| optimizer | final val loss, per seed | mean | vs {base} | optimizer state | vs {base} |")
    print("|---|---|---|---|---|---|")
    for name in args.optimizers:
        mean = statistics.fmean(losses[name])
        print(f"| {name} | {', '.join(f'{loss:.4f}' for loss in losses[name])} | {mean:.4f} | "
              f"{mean - base_loss:+.4f} | {sizes[name] / 2**20:.2f} MiB | {sizes[name] / sizes[base]:.2f}x |")


if __name__ == "__main__":
    main()
