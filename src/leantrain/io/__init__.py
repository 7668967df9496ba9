"""Run files shared by the recipes: atomic safetensors checkpoints and JSONL metrics."""

from leantrain.io.checkpoint import load_checkpoint, save_checkpoint
from leantrain.io.metrics import MetricsWriter, read_metrics
