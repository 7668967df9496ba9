"""How the low-rank optimizers' matrix ops see a gradient that FSDP2 shards by rows.

FSDP2 (``fully_shard``) gives each of w ranks a block of rows of every weight and of its gradient
(``Shard(0)`` on a 1-D mesh, ``torch.chunk`` sizes): G = [G_1; …; G_w], m×n. Element-wise math
(Adam, signs, scaling) runs on the local rows. The matrix ops of a subspace are chosen explicitly:

- SVD (GaLore, Fira, FRUGAL "svd"): all-gather G at a refresh; every rank decomposes the same
  matrix, so every rank holds the same basis B (as random and DCT bases, which are seeded alike).
- side "right" (B is n×r): R_k = G_k B and the back-projection R_k Bᵀ are row-local; no
  communication, and the moments of R are sharded like the weight.
- side "left" (B is m×r): R = Bᵀ G = Σ_k B_kᵀ G_k, one all-reduce of r×n per step; R and its
  moments are replicated; the back-projection B_k ψ(R) is local.
- sums over all rows (a Frobenius norm, DCT scores on side "right"): local sums, one all-reduce.

An unsharded gradient takes the same path with no communication, so one code serves both.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Shard

from leantrain.optim.projectors import project, project_back


def check_row_sharded(tensor: Tensor, what: str = "parameter") -> None:
    """Raise ValueError unless ``tensor`` is a plain tensor or a DTensor sharded by rows on a 1-D mesh."""
    if isinstance(tensor, DTensor) and (tensor.device_mesh.ndim != 1 or tuple(tensor.placements) != (Shard(0),)):
        raise ValueError(
            f"a low-rank {what} of shape {tuple(tensor.shape)} is a DTensor placed {tuple(tensor.placements)} "
            f"on a {tensor.device_mesh.ndim}-D mesh; the low-rank optimizers support plain tensors and FSDP2's "
            "row sharding (Shard(0) on a 1-D mesh); put it in a plain group (no 'rank' key) instead"
        )


class RowShards:
    """This rank's rows of one gradient (all of them if it is not sharded), and the collectives
    that make matrix ops on them equal the unsharded ones."""

    def __init__(self, grad: Tensor) -> None:
        check_row_sharded(grad, "gradient")
        self.grad = grad
        self.shape = grad.shape  # the global m×n
        rows = grad.shape[0]
        self.group = None
        self.start, self.stop = 0, rows
        if isinstance(grad, DTensor):
            mesh = grad.device_mesh
            self.group = mesh.get_group()
            chunk = -(-rows // mesh.size())
            self.start = min(mesh.get_local_rank() * chunk, rows)
            self.stop = min(self.start + chunk, rows)
            if grad.to_local().shape[0] != self.stop - self.start:
                raise ValueError(
                    f"a gradient of shape {tuple(grad.shape)} holds {grad.to_local().shape[0]} local rows, not the "
                    f"{self.stop - self.start} of torch.chunk row sharding; the low-rank optimizers need FSDP2's layout"
                )

    @staticmethod
    def local(tensor: Tensor) -> Tensor:
        """The local rows of a sharded tensor (a view: in-place updates reach the DTensor)."""
        return tensor.to_local() if isinstance(tensor, DTensor) else tensor

    def full_gradient(self) -> Tensor:
        """The whole m×n gradient on every rank (one all-gather when sharded)."""
        return self.grad.full_tensor() if isinstance(self.grad, DTensor) else self.grad

    def sum(self, partial: Tensor) -> Tensor:
        """The sum over ranks of ``partial`` (one all-reduce, in place, when sharded)."""
        if self.group is not None:
            dist.all_reduce(partial, group=self.group)
        return partial

    def project(self, grad: Tensor, basis: Tensor, side: str) -> Tensor:
        """R = Bᵀ G (left: summed over ranks, replicated) or G B (right: this rank's rows) from local rows of G."""
        if side == "left":
            return self.sum(project(grad, basis[self.start:self.stop], side))
        return project(grad, basis, side)

    def project_back(self, low_rank: Tensor, basis: Tensor, side: str) -> Tensor:
        """This rank's rows of B R (left) or R Bᵀ (right)."""
        return project_back(low_rank, basis[self.start:self.stop] if side == "left" else basis, side)

    def norm(self, local: Tensor) -> Tensor:
        """The Frobenius norm of the whole matrix whose local rows are ``local``."""
        if self.group is None:
            return local.norm()
        return self.sum(local.float().square().sum()).sqrt().to(local.dtype)
