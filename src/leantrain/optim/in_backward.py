"""StepInBackward: the optimizer step fused into backward, so at most one parameter's gradient is alive.

LOMO (Lv et al. 2023, arXiv 2306.09782, §3.2) and PyTorch's tutorial "How to save memory by fusing the
optimizer step into the backward pass": a ``Tensor.register_post_accumulate_grad_hook`` updates each
parameter the moment its gradient is accumulated and frees that gradient, instead of keeping the whole
model's gradients until ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class StepInBackward:
    """``StepInBackward(model, optimizer)`` (or ``with … as stepper:``): every backward also steps ``optimizer``.

    ``model``: the module (or its parameters) whose trainable parameters ``optimizer`` holds, all of
    them and no others. Each one's hook calls the one ``optimizer.step()`` while that parameter alone
    has a ``.grad`` (the ones before it were freed, the ones after it are not accumulated yet), then
    sets ``.grad = None``. Every torch and leantrain optimizer skips a parameter without a gradient,
    so this is the ordinary update of that parameter: same state, step count, group and position
    (which seed GaLore's and DCT's subspaces), hence schedules, ``state_dict`` and checkpoints work
    unchanged. A tied weight is one parameter: one hook, fired once its uses are summed. Costs: each
    ``step()`` call walks every parameter (Python work quadratic in their number), an optimizer's
    step hooks run once per parameter, and a backward that fails halfway leaves the parameters it
    reached updated.

    :meth:`grad_norm` gives the global gradient norm of the backward, from each gradient's norm taken
    in its hook (0-d tensors: no device sync). :meth:`remove` takes the hooks off.

    Gradient accumulation: set :attr:`accumulating` for every micro-batch but the last. Its hooks then add
    each gradient into a bf16 buffer (2 bytes a parameter, alive only between the first micro-batch and
    the last: half of an fp32 gradient buffer) and free it; the last micro-batch's hook adds the buffer
    back and steps. The sum is rounded to bf16 once per micro-batch, so the update equals the ordinary one
    within that rounding (relative 2^-9 per addition). ``average_over`` (a process group's size) makes each
    hook all-reduce its gradient and divide by the size before it steps, as DDP would have averaged it: the
    hooks fire in the same order on every process, so the collectives match; the engine then runs DDP
    without its own synchronisation.

    What cannot be fused, and why the engine refuses it:

    * global-norm clipping needs every gradient before the first update. LOMO spends an extra backward
      on the norm (twice the backward compute); clipping with the previous step's norm is cheap but
      is not the clipping asked for (a spike goes through unclipped). Neither is exact: the engine turns
      clipping off (and says so) and logs the norm.
    * FSDP2: a parameter's gradient exists whole only before FSDP2 reduce-scatters it into shards, in its
      own post-backward, after the hook would have fired.
    """

    def __init__(self, model: nn.Module | Iterable[Tensor], optimizer: Optimizer, average_over: int = 1) -> None:
        if isinstance(model, nn.Module):
            named = list(model.named_parameters())
        else:
            named = list({id(p): (f"parameter {i}", p) for i, p in enumerate(model)}.values())
        trainable = [(name, param) for name, param in named if param.requires_grad]
        held = {id(p): p for group in optimizer.param_groups for p in group["params"] if p.requires_grad}
        missing = [name for name, param in trainable if id(param) not in held]
        if missing:
            raise ValueError(f"the optimizer does not hold {', '.join(missing)}, which require(s) grad: "
                             "StepInBackward frees only the gradients it steps; freeze them "
                             "(requires_grad_(False)) or give them to the optimizer")
        extra = len(set(held) - {id(param) for _, param in trainable})
        if extra:
            raise ValueError(f"the optimizer holds {extra} trainable parameter(s) that the model does not: "
                             "without a hook, one would be stepped with whatever gradient it had when "
                             "another parameter's hook ran; give StepInBackward the model they belong to")
        with_grad = [name for name, param in trainable if param.grad is not None]
        if with_grad:
            raise ValueError(f"{', '.join(with_grad)} already hold a gradient: it would be stepped by the first "
                             "hook; call optimizer.zero_grad(set_to_none=True) before StepInBackward")
        self.optimizer = optimizer
        self.average_over = average_over
        self.accumulating = False
        self._buffers: dict[int, Tensor] = {}  # position -> the bf16 sum of its gradients while accumulating
        self._norms: dict[int, Tensor] = {}  # position in the model's order -> that gradient's norm
        self._handles = [param.register_post_accumulate_grad_hook(self._hook(index))
                         for index, (_, param) in enumerate(trainable)]

    def _hook(self, index: int) -> Callable[[Tensor], None]:
        def step_and_free(param: Tensor) -> None:
            if self.accumulating:
                kept = self._buffers.get(index)
                self._buffers[index] = (param.grad if kept is None else kept.float() + param.grad).to(torch.bfloat16)
                param.grad = None
                return
            if index in self._buffers:
                param.grad += self._buffers.pop(index)
            if self.average_over > 1:
                torch.distributed.all_reduce(param.grad)
                param.grad /= self.average_over
            self._norms[index] = torch.nn.utils.get_total_norm([param.grad])
            self.optimizer.step()
            param.grad = None

        return step_and_free

    def grad_norm(self) -> Tensor:
        """The global 2-norm of the gradients stepped since the last call, then forget them.

        As ``torch.nn.utils.get_total_norm`` over the gradients in the model's order, so it equals the
        norm the ordinary loop logs bit for bit (a parameter stepped twice counts its last gradient).
        """
        norms = [self._norms[index] for index in sorted(self._norms)]
        self._norms = {}
        return torch.nn.utils.get_total_norm(norms)

    def remove(self) -> None:
        """Take the hooks off: backward leaves gradients on the parameters again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> StepInBackward:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.remove()
