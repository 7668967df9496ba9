#!/usr/bin/env bash
# The CUDA tables of BENCHMARKS.md in one run, on a machine with an NVIDIA GPU:
#   one SFT step of SmolLM2-135M (4 x 512) and BERT-base (64 x 128): stock, HF checkpointing + 8-bit AdamW,
#   TRL's SFTTrainer, leantrain's parts and the planner's choice (peak allocated bytes, median step time);
#   the compile and host-sync tests on the GPU's torch; then the RL comparison of BENCHMARKS.md at the issue's
#   protocol (GRPO and DARS-ET over 3 seeds, DARS-HW and SELF over 1, LoRA; GRPO and DARS-ET fully fine-tuned;
#   ~100 GRPO updates each, pass@k to k = 32 on 200 held-out problems). RL=0 skips the RL runs (hours).
# Usage: PYTHON=/path/to/python benchmarks/device.sh [OUT_DIR]
# PYTHON must have a CUDA build of torch and leantrain's dependencies (pip install -e . trl bitsandbytes torchao);
# the figures go to OUT_DIR (default benchmarks/out) as JSON and Markdown, with the command and the GPU named.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine')"
"$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$OUT/device.txt"
"$PYTHON" benchmarks/sft_step.py --device cuda --steps 5 --json "$OUT/sft_step_cuda.json" | tee "$OUT/sft_step_cuda.md"
"$PYTHON" -m pytest -q tests/test_compile.py tests/test_sampler_host_sync.py | tee "$OUT/compile_and_sync.txt"
if [ "${RL:-1}" != 0 ]; then
  RL_OUT="$OUT/rl"
  "$PYTHON" benchmarks/rl.py --seeds 0 1 2 --algos grpo dars-et --token-budget 90000 --n 32 --out "$RL_OUT"
  "$PYTHON" benchmarks/rl.py --seeds 0 --algos dars-hw self --token-budget 90000 --n 32 --out "$RL_OUT"
  "$PYTHON" benchmarks/rl.py --seeds 0 --algos grpo dars-et --full --token-budget 90000 --n 32 --out "$RL_OUT"
  "$PYTHON" benchmarks/rl.py --seeds 0 1 2 --algos grpo dars-et dars-hw self --token-budget 90000 --n 32 \
    --out "$RL_OUT" --table | tee "$OUT/rl.md"
  "$PYTHON" benchmarks/rl.py --seeds 0 --algos grpo dars-et --full --token-budget 90000 --n 32 \
    --out "$RL_OUT" --table | tee "$OUT/rl_full.md"
fi
echo "done: $OUT"
