"""The one training engine under every recipe: see engine/loop.py."""

from leantrain.engine.loop import Engine, EngineResult, RunPlan, TrainTask

__all__ = ["Engine", "EngineResult", "RunPlan", "TrainTask"]
