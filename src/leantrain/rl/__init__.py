"""The maths of RL with verifiable rewards: pure functions, no state, no I/O.

- ``pass_at_k``: the unbiased pass@k estimator (Chen et al. 2021);
- ``group_advantages``: GRPO advantages over groups of any sizes (DeepSeekMath; TRL's scalings);
- ``dars_budget``: DARS's rollouts per prompt after a first round (Yang et al. 2025, released code);
- ``policy_loss``: the clipped-surrogate GRPO loss with TRL's four token aggregations.

The ``leantrain rl`` recipe that puts them to work is not built yet (docs/rl.md).
"""

from leantrain.rl.advantages import SCALES, GroupAdvantages, group_advantages
from leantrain.rl.dars import RULES, dars_budget
from leantrain.rl.pass_at_k import pass_at_k
from leantrain.rl.policy_loss import LOSS_TYPES, PolicyLoss, policy_loss

__all__ = ["LOSS_TYPES", "RULES", "SCALES", "GroupAdvantages", "PolicyLoss", "dars_budget", "group_advantages",
           "pass_at_k", "policy_loss"]
