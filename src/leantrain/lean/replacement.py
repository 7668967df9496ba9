"""Base of the modules ``apply_lean`` swaps in: each remembers the module it replaced."""

from __future__ import annotations

from torch import nn


class LeanReplacement(nn.Module):
    """Holds ``original`` outside ``_modules`` (so ``state_dict`` keys and ``named_modules`` stay
    those of the stock model) and shares its parameter objects, so ``remove_lean`` can put it back."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.__dict__["original"] = original
        self.train(original.training)

    def shares_parameters(self) -> bool:
        """Whether each Parameter registered here is still ``original``'s: FSDP2's ``fully_shard``
        swaps the Parameters of the modules in the model, not of ``original``."""
        return all(getattr(self.original, name, None) is param for name, param in self._parameters.items())

    def restore(self) -> nn.Module:
        self.original.train(self.training)
        return self.original
