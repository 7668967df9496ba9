"""RL with verifiable rewards: the maths as pure functions, the rollouts and the rewards.

- ``pass_at_k``: the unbiased pass@k estimator (Chen et al. 2021);
- ``group_advantages``: GRPO advantages over groups of any sizes (DeepSeekMath; TRL's scalings);
- ``dars_budget``: DARS's rollouts per prompt after a first round (Yang et al. 2025, released code);
- ``policy_loss``: the clipped-surrogate GRPO loss with TRL's four token aggregations;
- ``encode_prompts``, ``generate_rollouts``: ragged groups of sampled (or greedy) completions;
- answers and rewards (from ``leantrain.verify``): answer extraction, TRL-signature reward functions,
  ``score_completions``;
- ``load_problems`` / ``Problems`` (from ``leantrain.data.problems``): prompts, answers and their reward
  functions, split by distinct prompt.

The ``leantrain rl`` recipe (recipes/rl.py) puts them to work: GRPO, DARS and SELF on the engine (docs/rl.md).
"""

from leantrain.data.problems import Problems, load_problems
from leantrain.rl.advantages import SCALES, GroupAdvantages, group_advantages
from leantrain.rl.dars import RULES, dars_budget
from leantrain.rl.pass_at_k import pass_at_k
from leantrain.rl.policy_loss import LOSS_TYPES, PolicyLoss, policy_loss
from leantrain.rl.rollouts import Rollouts, TrainingInputs, encode_prompts, generate_rollouts
from leantrain.verify.answers import boxed_answer, last_number, numbers_equal, parse_number
from leantrain.verify.rewards import (
    Scores,
    completion_text,
    math_verify_reward,
    numeric_reward,
    reasoning_gym_reward,
    score_completions,
)

__all__ = ["LOSS_TYPES", "RULES", "SCALES", "GroupAdvantages", "PolicyLoss", "Problems", "Rollouts", "Scores",
           "TrainingInputs", "boxed_answer", "completion_text", "dars_budget", "encode_prompts", "generate_rollouts",
           "group_advantages", "last_number", "load_problems", "math_verify_reward", "numbers_equal", "numeric_reward",
           "parse_number", "pass_at_k", "policy_loss", "reasoning_gym_reward", "score_completions"]
