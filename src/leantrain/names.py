"""Every named choice of leantrain, in one place that imports nothing heavy (no torch, no transformers).

The library modules that implement a choice import its names from here, and so does the command
line, whose ``--help`` must stay fast. A name is spelled the same everywhere.
"""

from __future__ import annotations

# Sampled-activation estimators (sampling/estimators.py); "topk" is biased. How reports name them.
METHODS = ("exact", "crs", "topk", "wtacrs")
METHOD_NAMES = {"exact": "exact", "crs": "CRS", "topk": "top-k", "wtacrs": "WTA-CRS"}
# Where a sampled layer's row importance comes from (sampling/importance.py).
SOURCES = ("norm", "running", "cached")
# Layer-selection presets of every apply_* and of optim.param_groups (module_names.py).
TARGET_PRESETS = ("paper", "all-linear")
# Optimizers by name (optim/factory.py); the low-rank ones keep Adam's states of linear weights in a subspace.
LOW_RANK_OPTIMIZERS = ("galore", "fira", "frugal", "dct")
# "adafactor": factored second moment, no first moment (the optimizer-state floor, optim/adafactor.py).
OPTIMIZERS = ("adamw", "sgd", *LOW_RANK_OPTIMIZERS, "adafactor")
# How the trained weights are stored (optim/sixteen_bit.py), and how an fp32 update is written to bf16 ones.
WEIGHTS = ("fp32", "bf16")
ROUNDINGS = ("stochastic", "nearest")
# Activation checkpointing of whole layers (lean/checkpointing.py): keep the input only, or the matmul results too.
CHECKPOINTING = ("layers", "selective")
# Bits per element of Adam's moments (optim/quantized_state.py): fp32, or block-wise 8-bit.
STATE_BITS = (32, 8)
# The training engine's precisions (bf16: autocast) and layouts of several processes (engine/config.py).
PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("ddp", "fsdp2")
# RL with verifiable rewards (rl/): GRPO advantage scalings, DARS rollout rules, policy-loss aggregations (TRL's).
ADVANTAGE_SCALES = ("group", "batch", "none")
DARS_RULES = ("et", "hw")
POLICY_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
# RL algorithms of `leantrain rl` (recipes/rl.py): GRPO, DARS's two rules and Breadth, SELF.
RL_ALGORITHMS = ("grpo", "dars-et", "dars-hw", "dars-b", "self")
ROLLOUT_ENGINES = ("leantrain", "hf")  # rl/rollout_engine.py; transformers' model.generate
ROLLOUT_DTYPES = ("auto", "fp32", "bf16")  # auto: bf16 where its products are native (fp32_matmuls.py)
TIS_LEVELS = ("token", "sequence")  # truncated importance sampling (rl/importance_sampling.py)
# Learning-rate schedules (schedules/__init__.py).
SCHEDULES = ("constant", "cosine", "linear", "wsd", "power", "rex", "refined")
# The schedules a training run can follow from its first step ("refined" needs an earlier run's gradient norms).
TRAINING_SCHEDULES = tuple(name for name in SCHEDULES if name != "refined")
# What each schedule takes besides total/warmup steps and min_lr_ratio (schedules.build).
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "constant": (), "cosine": (), "linear": (), "rex": (),
    "wsd": ("decay_steps", "decay", "half_life"),
    "power": ("batch_size", "tokens_per_step", "a", "b", "decay_steps", "decay", "max_lr"),
    "refined": ("grad_norms", "smoothing"),
}

# Llama-style causal LMs from scratch (models/llama_sizes.py), named by their parameter count at a
# 4096-token vocabulary with tied input/output embeddings.
LLAMA_SIZES: dict[str, dict[str, int]] = {
    "1m": {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 352},
    "5m": {"hidden_size": 256, "num_hidden_layers": 5, "num_attention_heads": 4, "intermediate_size": 688},
    "15m": {"hidden_size": 384, "num_hidden_layers": 8, "num_attention_heads": 6, "intermediate_size": 1024},
    "30m": {"hidden_size": 512, "num_hidden_layers": 9, "num_attention_heads": 8, "intermediate_size": 1376},
    "60m": {"hidden_size": 640, "num_hidden_layers": 11, "num_attention_heads": 10, "intermediate_size": 1728},
}

# Small named models built from configs with random weights (models/presets.py):
# name -> (transformers config class, config kwargs); BERT presets get a sequence-classification head.
MODEL_PRESETS: dict[str, tuple[str, dict]] = {
    "bert-base": ("BertConfig", {}),
    "bert-tiny": ("BertConfig", {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 512, "vocab_size": 1000}),
    "llama-small": ("LlamaConfig", {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
                                    "num_key_value_heads": 4, "intermediate_size": 1376, "vocab_size": 32000}),
    "llama-tiny": ("LlamaConfig", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                   "num_key_value_heads": 2, "intermediate_size": 172, "vocab_size": 1000}),
    "gpt2-tiny": ("GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000}),
    # The shapes of two models users fine-tune on one device, with random weights (no files): SmolLM2-1.7B
    # (1.71B parameters, tied embeddings) and Llama-2-7B (6.74B).
    "smollm2-1.7b": ("LlamaConfig", {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                                     "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152,
                                     "max_position_embeddings": 8192, "rope_theta": 130000.0,
                                     "tie_word_embeddings": True, "rms_norm_eps": 1e-5}),
    "llama-7b": ("LlamaConfig", {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                                 "max_position_embeddings": 4096, "tie_word_embeddings": False,
                                 "rms_norm_eps": 1e-5}),
}
# What ``models.presets.build_model`` and ``leantrain memory`` accept by name (besides a HF model folder):
# the presets, the offline pretrained MiniLM-L6 and SmolLM2-135M-Instruct (the default causal LM).
MODEL_NAMES = (*MODEL_PRESETS, "minilm", "smollm2")
