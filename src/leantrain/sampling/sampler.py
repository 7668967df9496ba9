"""RowSampler: one converted layer's sampling state (config, importance source, random generator)."""

from __future__ import annotations

import torch
from torch import Tensor

from leantrain.sampling.config import SamplingConfig
from leantrain.sampling.estimators import RowSample, sample_rows, sample_size
from leantrain.sampling.importance import make_source


class RowSampler:
    """Chooses, in the forward pass, which input rows one layer keeps for its weight gradient.

    ``name`` is the module's name in its model, used in error messages. With ``config.seed`` set,
    the layer draws from its own generator seeded with ``(seed, index, rank)``, so runs reproduce
    and, under torch.distributed, every rank draws its own rows (the rank is read at the first
    draw, after the process group exists). The mean of the ranks' unbiased estimates is unbiased.
    """

    def __init__(self, config: SamplingConfig, name: str = "", index: int = 0) -> None:
        self.config = config
        self.name = name
        self.source = make_source(config.importance)
        self.index = index
        self.sample_ids: Tensor | None = None  # set by leantrain.sample_ids(model, ids)
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator | None:
        if self.config.seed is None:
            return None
        if device not in self._generators:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            seed = hash((self.config.seed, self.index, rank)) % 2**63
            self._generators[device] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[device]

    def keeps_all_rows(self, x: Tensor) -> bool:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        return self.config.method == "exact" or sample_size(rows, self.config.budget, self.config.minimal_k) >= rows

    def draw(self, x: Tensor) -> RowSample | None:
        """The rows of ``x`` (flattened to [N, d]) to keep, or None to keep them all."""
        if self.keeps_all_rows(x):
            return None
        norms = torch.linalg.vector_norm(x.detach().reshape(-1, x.shape[-1]), dim=1, dtype=torch.float32)
        bad = int((~torch.isfinite(norms)).sum())
        if bad:
            raise ValueError(
                f"sampled layer {self.name or '<unnamed>'}: {bad} of {norms.numel()} input rows hold NaN "
                "or inf; sampling from them would corrupt the gradient (check the learning rate or loss scale)"
            )
        scores = self.source.scores(norms.view(x.shape[0], -1), self.sample_ids).flatten()
        return sample_rows(scores, self.config.method, self.config.budget, self.config.minimal_k,
                           self.generator(norms.device))

    def observe(self, grad_output: Tensor, sample_ids: Tensor | None) -> None:
        """Let a stateful importance source learn from this step's output-gradient row norms."""
        if not self.source.needs_grad_norms:
            return
        norms = torch.linalg.vector_norm(grad_output, dim=-1, dtype=torch.float32)
        self.source.observe(norms.reshape(grad_output.shape[0], -1), sample_ids)

    def state_dict(self) -> dict[str, Tensor]:
        """Generator states (one per device used) and the importance source's learnt state."""
        state = {f"source.{k}": v for k, v in self.source.state_dict().items()}
        for device, generator in self._generators.items():
            state[f"generator.{device}"] = generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.source.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("source.")})
        for key, value in state.items():
            if key.startswith("generator."):
                device = torch.device(key[len("generator."):])
                generator = self.generator(device)
                if generator is not None:
                    generator.set_state(value)

    def __repr__(self) -> str:
        c = self.config
        return f"RowSampler(method={c.method!r}, budget={c.budget}, importance={c.importance!r})"
