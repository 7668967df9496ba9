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
    each draw comes from a generator seeded with ``(seed, index, rank, backward passes so far)``:
    runs reproduce; under torch.distributed every rank draws its own rows (the mean of the ranks'
    unbiased estimates is unbiased); and a forward rerun before its backward (activation recompute,
    ``torch.utils.checkpoint``, ``lt.apply_lean``) draws the same rows as the first run. With no
    seed, draws use torch's global generator, whose state checkpointing restores for the rerun.
    """

    def __init__(self, config: SamplingConfig, name: str = "", index: int = 0) -> None:
        self.config = config
        self.name = name
        self.source = make_source(config.importance)
        self.index = index
        self.sample_ids: Tensor | None = None  # set by leantrain.sample_ids(model, ids)
        self.backward_passes = 0  # of draws made; seeds the next draw
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The generator for the current draw, seeded afresh (see the class docstring); None: global."""
        if self.config.seed is None:
            return None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device].manual_seed(hash((self.config.seed, self.index, rank, self.backward_passes))
                                                    % 2**63)

    def keeps_all_rows(self, x: Tensor) -> bool:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        return self.config.method == "exact" or sample_size(rows, self.config.budget, self.config.minimal_k) >= rows

    @torch.compiler.disable
    def draw(self, x: Tensor) -> RowSample | None:
        """The rows of ``x`` (flattened to [N, d]) to keep, or None to keep them all.

        Under ``torch.compile`` the draw runs eagerly (a graph break). With torch 2.13, a random op traced inside
        a custom autograd Function is drawn anew for the tensors it saves for backward, so the backward would
        pair other rows with the forward's kept inputs: a biased gradient (tests/test_compile.py measures it)."""
        if self.keeps_all_rows(x):
            return None
        norms = torch.linalg.vector_norm(x.detach().reshape(-1, x.shape[-1]), dim=1, dtype=torch.float32)
        torch._assert_async(torch.isfinite(norms).all(),  # checked on the device: the host does not wait for it
                            f"sampled layer {self.name or '<unnamed>'}: an input row holds NaN or inf; sampling from "
                            "it would corrupt the gradient (check the learning rate or loss scale)")
        scores = self.source.scores(norms.view(x.shape[0], -1), self.sample_ids).flatten()
        return sample_rows(scores, self.config.method, self.config.budget, self.config.minimal_k,
                           self.generator(norms.device))

    def observe(self, grad_output: Tensor, sample_ids: Tensor | None) -> None:
        """Called once per backward pass of the layer: count it (the next draw gets a new seed) and
        let a stateful importance source learn from this step's output-gradient row norms."""
        self.backward_passes += 1
        if not self.source.needs_grad_norms:
            return
        norms = torch.linalg.vector_norm(grad_output, dim=-1, dtype=torch.float32)
        self.source.observe(norms.reshape(grad_output.shape[0], -1), sample_ids)

    def state_dict(self) -> dict[str, Tensor]:
        """The backward-pass count (which seeds the draws) and the importance source's learnt state."""
        state = {f"source.{k}": v for k, v in self.source.state_dict().items()}
        state["backward_passes"] = torch.tensor(self.backward_passes, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.source.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("source.")})
        if "backward_passes" in state:
            self.backward_passes = int(state["backward_passes"])

    def __repr__(self) -> str:
        c = self.config
        return f"RowSampler(method={c.method!r}, budget={c.budget}, importance={c.importance!r})"
