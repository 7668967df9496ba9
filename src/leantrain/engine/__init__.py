"""The one training engine under every recipe: see engine/loop.py."""

from leantrain.engine.config import LAYOUTS, PRECISIONS, EngineConfig
from leantrain.engine.loop import Engine, EngineResult, TrainTask

__all__ = ["LAYOUTS", "PRECISIONS", "Engine", "EngineConfig", "EngineResult", "TrainTask"]
