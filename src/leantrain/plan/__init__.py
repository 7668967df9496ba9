"""The plan: which memory parts a training step uses (the planner), and that step described for a fresh
process (``StepSpec``). Above the parts and the measurement (memory/), below the recipes."""

from leantrain.plan.planner import Plan, plan_memory
from leantrain.plan.step_spec import StepSpec

__all__ = ["Plan", "StepSpec", "plan_memory"]
