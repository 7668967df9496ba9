"""Subspaces for low-rank optimizers: pure functions over a gradient, no optimizer state.

A subspace of one side of an m×n gradient G is a basis B (d×r, orthonormal columns) of that side:
side "left" reduces the rows (R = Bᵀ G, r×n; d = m), side "right" the columns (R = G B, m×r; d = n).
GaLore (Zhao et al. 2024, §3.3, Alg. 2) takes B from the SVD of G; FRUGAL (Zmushko et al. 2025)
also from random orthonormal or random coordinate bases; the SVD-free optimizer (Modoranu et al.
2025, arXiv 2505.17967) picks r columns of one fixed DCT basis per size by ℓ1 alignment with G.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# GaLore's `proj_type`: which side of the gradient is reduced.
PROJ_TYPES = ("std", "reverse_std", "left", "right")


def projected_side(shape: torch.Size | tuple[int, int], proj_type: str = "std") -> str:
    """Side "left" or "right": "std" reduces the smaller side (GaLore §4.2), "reverse_std" the larger."""
    rows, cols = shape
    if proj_type == "std":
        return "left" if rows < cols else "right"
    if proj_type == "reverse_std":
        return "right" if rows < cols else "left"
    if proj_type in ("left", "right"):
        return proj_type
    raise ValueError(f"proj_type={proj_type!r} is not one of {PROJ_TYPES}")


def projected_size(shape: torch.Size | tuple[int, int], proj_type: str = "std") -> int:
    """d, the length of the side ``proj_type`` reduces; a rank must be at most d."""
    return shape[0] if projected_side(shape, proj_type) == "left" else shape[1]


def project(grad: Tensor, basis: Tensor, side: str) -> Tensor:
    """R = Bᵀ G (left, r×n) or G B (right, m×r)."""
    return basis.T @ grad if side == "left" else grad @ basis


def project_back(low_rank: Tensor, basis: Tensor, side: str) -> Tensor:
    """B R (left) or R Bᵀ (right): a full-size m×n matrix in the subspace."""
    return basis @ low_rank if side == "left" else low_rank @ basis.T


def svd_basis(grad: Tensor, rank: int, side: str) -> Tensor:
    """The top-``rank`` singular vectors of ``grad`` on ``side`` (SVD in fp32, returned in grad's dtype)."""
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    basis = u[:, :rank] if side == "left" else vh[:rank].T
    return basis.contiguous().to(grad.dtype)


def seeded_generator(*numbers: int) -> torch.Generator:
    """A CPU generator seeded by mixing ``numbers`` (seed, group, position, refresh index).

    Random subspaces are a function of these numbers alone, so they need no saved generator state,
    are the same on every device and every DDP rank, and a resumed run draws the same ones.
    """
    seed = 0
    for number in numbers:
        seed = (seed * 1_000_003 + number) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def random_orthonormal_basis(size: int, rank: int, generator: torch.Generator) -> Tensor:
    """A uniformly random d×r basis with orthonormal columns (QR of a Gaussian matrix, fp32 on CPU)."""
    q, r = torch.linalg.qr(torch.randn(size, rank, generator=generator))
    return q * torch.sign(torch.diagonal(r))  # sign fix makes Q Haar-distributed


def random_coordinates(size: int, rank: int, generator: torch.Generator) -> Tensor:
    """``rank`` distinct coordinates out of ``size``, sorted (FRUGAL's "randperm" subspace)."""
    return torch.randperm(size, generator=generator)[:rank].sort().values


def coordinate_basis(indices: Tensor, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The d×r basis of unit vectors e_i, i in ``indices``: projecting onto it selects rows or columns."""
    basis = torch.zeros(size, len(indices), dtype=dtype, device=device)
    basis[indices.to(device=device, dtype=torch.long), torch.arange(len(indices), device=device)] = 1
    return basis


def dct_basis(size: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """The orthonormal DCT-II basis of R^d as the columns of a d×d matrix Q (Qᵀ Q = I).

    Column k is √(2/d)·cos(π(2j+1)k / 2d) over j, with column 0 scaled by √½ (computed in fp64).
    """
    j = torch.arange(size, dtype=torch.float64)
    k = torch.arange(size, dtype=torch.float64)
    basis = math.sqrt(2.0 / size) * torch.cos(math.pi * (2 * j[:, None] + 1) * k[None, :] / (2 * size))
    basis[:, 0] /= math.sqrt(2.0)
    return basis.to(dtype=dtype, device=device)


def l1_scores(coefficients: Tensor, side: str) -> Tensor:
    """The ℓ1 norm of each basis vector's coefficients, from the full projection onto a d-vector basis:
    Qᵀ G (left, d×n: sums over rows of one basis vector) or G Q (right, m×d: sums over G's rows)."""
    return coefficients.abs().sum(dim=1 if side == "left" else 0)


def top_indices(scores: Tensor, rank: int) -> Tensor:
    """The ``rank`` basis vectors with the highest scores (best aligned with G), sorted, as int32."""
    return torch.topk(scores.float(), rank).indices.sort().values.to(torch.int32)


def select(coefficients: Tensor, indices: Tensor, side: str) -> Tensor:
    """The low-rank gradient R from full coefficients: rows (left) or columns (right) ``indices``."""
    return coefficients.index_select(0 if side == "left" else 1, indices)
