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

    def restore(self) -> nn.Module:
        self.original.train(self.training)
        return self.original
