"""Which memory-lean companions ``apply_lean`` swaps in."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class LeanConfig:
    """Every companion is exact (gradients equal the stock module's within float rounding) and on
    by default; turn one off to ablate it.

    dropout: ``nn.Dropout`` keeps a seed instead of a bool mask (dropout.py).
    relu: ``nn.ReLU`` keeps a 1-bit mask instead of its output (relu.py).
    norms: LayerNorm / RMSNorm keep their output instead of their input (norms.py).
    attention: HF attention keeps Q, K, V instead of the L×L probabilities (attention.py).
    recompute_mlp: MLP blocks keep only their input and recompute in backward (recompute.py).
    recompute_attention: attention blocks (projections included) likewise, when called without a
        KV cache (recompute.py).
    activations: GELU/SiLU in blocks not recomputed keep nothing; their input is recomputed from
        the input of the Linear before them (activation.py).
    lm_loss: causal LMs compute LM head + loss in chunks of about ``lm_loss_chunk_logits`` logits
        (rows × vocabulary; the default is 32 MiB of fp32 logits at a time) (lm_loss.py).
    """

    dropout: bool = True
    relu: bool = True
    norms: bool = True
    attention: bool = True
    recompute_mlp: bool = True
    recompute_attention: bool = True
    activations: bool = True
    lm_loss: bool = True
    lm_loss_chunk_logits: int = 2**23

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"LeanConfig.{item.name} must be True or False, got {value!r}")
        if not isinstance(self.lm_loss_chunk_logits, int) or self.lm_loss_chunk_logits < 1:
            raise ValueError(f"LeanConfig.lm_loss_chunk_logits must be an int >= 1, got {self.lm_loss_chunk_logits!r}")


# The lean companions off but the chunked LM-head loss (``MemoryOptions(chunked_loss=True)``).
CHUNKED_LOSS_ONLY = LeanConfig(dropout=False, relu=False, norms=False, attention=False, recompute_mlp=False,
                               recompute_attention=False, activations=False, lm_loss=True)
