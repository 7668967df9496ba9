"""Low-rank optimizers vs AdamW in pretraining: final validation loss and optimizer-state bytes.

The pretraining recipe on the King James Bible (offline), a small Llama-style model, equal
steps, the same schedule (WSD) and the same rank for every low-rank optimizer. State bytes are
counted after one step of the same model (``leantrain.optim.optimizer_state_bytes``).

Run:  .venv/bin/python benchmarks/optim_loss.py [--size 1m] [--tokens 300000] [--rank 32]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from leantrain.models.llama_sizes import build_llama
from leantrain.optim import build_optimizer, optimizer_state_bytes
from leantrain.recipes.pretrain import PretrainConfig, pretrain

OPTIMIZERS = ("adamw", "galore", "fira", "frugal", "dct")


def state_bytes(name: str, size: str, vocab: int, seq_len: int, rank: int) -> int:
    torch.manual_seed(0)
    model = build_llama(size, vocab, seq_len)
    optimizer = build_optimizer(name, model, lr=1e-3, rank=rank)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    return optimizer_state_bytes(optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1m")
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--update-proj-gap", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in OPTIMIZERS:
            config = PretrainConfig(output_dir=f"{root}/{name}", size=args.size, tokens=args.tokens, seq_len=64,
                                    vocab_size=2048, lr=args.lr, optimizer=name, rank=args.rank,
                                    update_proj_gap=args.update_proj_gap, seed=args.seed, eval_every=100)
            result = pretrain(config, show_bar=False)
            rows.append((name, result.val_loss, state_bytes(name, args.size, 2048, 64, args.rank),
                         result.train_seconds, result.parameters))
            print(f"{name}: val loss {result.val_loss:.4f}", flush=True)
    base_loss, base_bytes, base_time = rows[0][1], rows[0][2], rows[0][3]
    print(f"\n### Pretraining on KJV: Llama {args.size} ({rows[0][4]:,} parameters), {args.tokens:,} tokens, "
          f"WSD, peak lr {args.lr:g}, rank {args.rank}, refresh every {args.update_proj_gap} steps, "
          f"seed {args.seed}\n")
    print("| optimizer | final val loss | vs AdamW | optimizer state | vs AdamW | train time vs AdamW |")
    print("|---|---|---|---|---|---|")
    for name, loss, size, seconds, _ in rows:
        print(f"| {name} | {loss:.4f} | {loss - base_loss:+.4f} | {size / 2**20:.2f} MiB | {size / base_bytes:.2f}x | "
              f"{seconds / base_time:.2f}x |")


if __name__ == "__main__":
    main()
