"""Column-row sampling estimators of a linear layer's weight gradient (pure functions, no state).

For ``Y = X Wᵀ + b`` over N rows, the weight gradient ``dW = dYᵀ X = Σ_i dY_iᵀ X_i`` is a sum of N
column-row pairs ``T_i`` with ``‖T_i‖_F = ‖dY_i‖·‖X_i‖`` (Liu et al. 2023, "WTA-CRS", Eq. 1c).
An estimator keeps a few rows and one weight per kept row::

    dW ≈ Σ_t w_t · dY_{i_t}ᵀ X_{i_t}

Rows are chosen at forward time, before dY exists, from an importance score ``m_i ≥ 0`` per row
(for instance ``‖X_i‖``); probabilities are ``p_i = m_i / Σ m``. A row with ``p_i = 0`` is never
kept, so an estimator is unbiased exactly when ``p_i > 0`` wherever ``T_i ≠ 0``.

Methods:

* ``crs`` — k i.i.d. draws from p, row i weighted ``1/(k p_i)`` (Drineas et al. 2006; Adelman
  et al. 2021). Unbiased.
* ``wtacrs`` — the |C| most probable rows ("winners") kept with weight 1, plus ``s = k−|C|``
  draws from the rest, weighted ``(1−P_C)/(s p_j)`` (WTA-CRS §3, Eq. 5). |C| minimises the leading
  variance term ``(1−P_C)²/(k−|C|)``; |C| = 0 is plain CRS. Unbiased on every path.
* ``biased_topk`` (method name ``"topk"``) — the k highest-scoring rows with weight 1. Zero
  variance but **biased**: the tail's gradient is dropped.

A sample always holds k rows, whatever the draws: a row drawn twice is kept twice, the winner count
|C| stays a tensor, and an all-zero importance gives weights 0 rather than an empty sample. So no step
reads a tensor on the host or makes a tensor whose size depends on the data, and a device never waits
for the host (tests/test_sampler_host_sync.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from leantrain.fp32_matmuls import needs_fp32_product
from leantrain.names import METHODS


@dataclass(frozen=True)
class RowSample:
    """The k rows kept for the weight gradient: ``indices`` (a row drawn twice appears twice) and float32
    ``weights``, one per index."""

    indices: Tensor
    weights: Tensor

    def __len__(self) -> int:
        return self.indices.numel()


def sample_size(n_rows: int, budget: float, minimal_k: int) -> int:
    """k = clamp(⌊ρ·N⌋, minimal_k, N): the number of column-row pairs a step keeps (WTA-CRS §3.4)."""
    return min(max(math.floor(budget * n_rows), minimal_k), n_rows)


def probabilities(importance: Tensor) -> Tensor:
    """p_i = m_i / Σ m in float32. Rows of zero importance get p = 0; all-zero importance is an error."""
    importance = importance.float()
    total = importance.sum()
    if not total > 0:
        raise ValueError("probabilities: importance sums to zero; at least one row must have m_i > 0")
    return importance / total


def crs(p: Tensor, k: int, generator: torch.Generator | None = None) -> RowSample:
    """Column-row sampling: k draws with replacement, row i weighted 1/(k p_i). Unbiased."""
    draws = torch.multinomial(p, k, replacement=True, generator=generator)
    return RowSample(draws, 1.0 / (k * p[draws]))


def winner_count(top_p: Tensor, k: int) -> Tensor:
    """|C| for WTA-CRS: argmin over c in 0..k-1 of (1 − Σ_{top c} p)² / (k − c).

    ``top_p`` holds the k largest probabilities, sorted descending. With p ∝ ‖T‖ the WTA-CRS
    variance is (S²(1−P_C)² − ‖G_∖C‖²)/(k−|C|) (see ``expected_squared_error``), so this picks the
    |C| with the smallest leading term; c = 0 scores 1/k, i.e. plain CRS. The released WTA-CRS
    code minimises the unsquared (1−P_C)/(k−|C|), the sufficient condition of its Theorem 1; the
    squared score gave lower variance on every MiniLM/BBC setting in benchmarks/sampling.py.
    Ties go to the smaller |C|. Either rule leaves the estimator unbiased. A 0-d tensor, not read on the host.
    """
    c = torch.arange(k, device=top_p.device, dtype=torch.float64)
    taken = torch.cat([top_p.new_zeros(1, dtype=torch.float64), top_p[: k - 1].double().cumsum(0)])
    rest = (1.0 - taken).clamp_min(0.0)
    return torch.argmin(rest.square() / (k - c))


def wtacrs(p: Tensor, k: int, generator: torch.Generator | None = None) -> RowSample:
    """Winner-take-all CRS: top-|C| rows with weight 1 plus s = k−|C| draws from the rest.

    A drawn row j gets weight (1−P_C)/(s p_j) (WTA-CRS Eq. 5), with 1−P_C computed as the sum of
    the non-winners' probabilities (no cancellation when the winners hold nearly all the mass).
    The sample's slots t < |C| hold the winners; k draws are made and slots t ≥ |C| take theirs, s
    i.i.d. draws from the rest. If the winners hold all the mass, the draws get weight 0: the estimate
    is then exact.
    """
    top_p, top_idx = torch.topk(p, k, sorted=True)
    winner = torch.arange(k, device=p.device) < winner_count(top_p, k)
    rest = p.scatter(0, top_idx, torch.where(winner, 0.0, top_p))
    rest_mass = rest.sum()
    has_rest = rest_mass > 0
    draws = torch.multinomial(torch.where(has_rest, rest, p), k, replacement=True, generator=generator)
    s = k - winner.sum()
    drawn_weight = torch.where(has_rest, rest_mass / (s * p[draws]), 0.0)
    return RowSample(torch.where(winner, top_idx, draws), torch.where(winner, 1.0, drawn_weight))


def biased_topk(importance: Tensor, k: int) -> RowSample:
    """Deterministic top-k (Adelman et al. 2021): the k highest-importance rows, weight 1. BIASED."""
    indices = torch.topk(importance.float(), k, sorted=False).indices.sort().values
    return RowSample(indices, torch.ones(k, dtype=torch.float32, device=importance.device))


def sample_rows(
    importance: Tensor,
    method: str,
    budget: float,
    minimal_k: int = 10,
    generator: torch.Generator | None = None,
) -> RowSample | None:
    """Pick the rows one step keeps for dW, or None when all rows are kept (exact, or k = N)."""
    n_rows = importance.numel()
    k = sample_size(n_rows, budget, minimal_k)
    if method == "exact" or k >= n_rows:
        return None
    if method == "topk":
        return biased_topk(importance, k)
    if method not in ("crs", "wtacrs"):
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    importance = importance.float()
    total = importance.sum()
    has_mass = total > 0  # else every row's pair is taken as 0: so is dW, and weights 0 give it exactly
    p = torch.where(has_mass, importance / total, 1.0 / n_rows)  # probabilities(importance), not read on the host
    sample = (crs if method == "crs" else wtacrs)(p, k, generator)
    return RowSample(sample.indices, sample.weights * has_mass)


def estimate_weight_grad(
    dy: Tensor, kept_x: Tensor, sample: RowSample | None, weight_is_row_major: bool = True
) -> Tensor:
    """Σ_t w_t dY_{i_t}ᵀ X_{i_t} from 2-D ``dy`` [N, out] and the kept input rows ``kept_x``.

    ``kept_x`` holds all N rows when ``sample`` is None, else the sampled rows in sample order.
    The GEMM is the one autograd's own linear backward runs for the weight's layout — ``dYᵀX`` for
    a row-major [out, in] weight (nn.Linear), ``(XᵀdY)ᵀ`` for a transposed one (GPT-2's Conv1D) —
    so keeping every row matches the stock module bit for bit. Row weights are applied in
    float32; float16 runs the GEMM in float32, since a large weight times dY could overflow it.
    """
    if sample is None:
        scaled = dy
    else:
        compute = torch.float32 if dy.dtype == torch.float16 else dy.dtype
        scaled = (dy.index_select(0, sample.indices).float() * sample.weights[:, None]).to(compute)
        kept_x = kept_x.to(compute)
    if needs_fp32_product(scaled):  # bf16 on a CPU without bf16 units (fp32_matmuls.py)
        scaled, kept_x = scaled.float(), kept_x.float()
    grad = scaled.t() @ kept_x if weight_is_row_major else (kept_x.t() @ scaled).t()
    return grad.to(dy.dtype)


def expected_squared_error(x: Tensor, dy: Tensor, importance: Tensor, method: str, k: int) -> float:
    """Closed-form E‖Ĝ − G‖²_F of one estimate of G = dYᵀX (the MSE: variance, or bias² for top-k).

    CRS:     (1/k)·(Σ_i ‖T_i‖²/p_i − ‖G‖²)                         (Drineas et al. 2006, Lemma 4)
    WTA-CRS: (1/s)·((1−P_C)·Σ_{j∉C} ‖T_j‖²/p_j − ‖G_{∖C}‖²)        (WTA-CRS §3; G_{∖C} = Σ_{j∉C} T_j)
    top-k:   ‖G − Σ_{top k} T_i‖²                                  (deterministic: bias only)
    Sums run over rows with p > 0; computed in float64.
    """
    x, dy = x.double(), dy.double()
    n_rows = x.shape[0]
    if method == "exact" or k >= n_rows:
        return 0.0
    if method == "topk":
        kept = biased_topk(importance, k)
        return float((estimate_weight_grad(dy, x[kept.indices], kept) - dy.t() @ x).square().sum())
    p = probabilities(importance).double()
    term_sq = x.square().sum(1) * dy.square().sum(1)
    mass = p > 0
    if method == "crs":
        g_sq = (dy.t() @ x).square().sum()
        return float((torch.sum(term_sq[mass] / p[mass]) - g_sq) / k)
    if method != "wtacrs":
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if int(mass.sum()) <= k:
        return 0.0
    top_p, top_idx = torch.topk(p.float(), k, sorted=True)
    c = int(winner_count(top_p, k))
    rest = mass.clone()
    rest[top_idx[:c]] = False
    rest_mass = p[rest].sum()
    g_rest_sq = (dy[rest].t() @ x[rest]).square().sum()
    return float((rest_mass * torch.sum(term_sq[rest] / p[rest]) - g_rest_sq) / (k - c))
