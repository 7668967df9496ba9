"""Projector math: bases are orthonormal, sides follow GaLore's rule, top-ℓ1 picks the aligned columns."""

import pytest
import torch

from leantrain.optim import projectors


@pytest.mark.parametrize("size", [1, 7, 64, 256])
def test_dct_basis_is_orthogonal(size):
    q = projectors.dct_basis(size, torch.float64)
    torch.testing.assert_close(q.T @ q, torch.eye(size, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(q @ q.T, torch.eye(size, dtype=torch.float64), atol=1e-12, rtol=0)


def test_dct_basis_matches_the_dct_ii_definition():
    size = 8
    q = projectors.dct_basis(size, torch.float64)
    x = torch.randn(size, dtype=torch.float64)
    n = torch.arange(size, dtype=torch.float64)
    for k in range(size):  # orthonormal DCT-II coefficient k of x
        norm = (1 / size) ** 0.5 if k == 0 else (2 / size) ** 0.5
        expected = norm * (x * torch.cos(torch.pi * (2 * n + 1) * k / (2 * size))).sum()
        torch.testing.assert_close((q.T @ x)[k], expected)


def test_std_reduces_the_smaller_side():
    assert projectors.projected_side((4, 9)) == "left"
    assert projectors.projected_side((9, 4)) == "right"
    assert projectors.projected_side((5, 5)) == "right"  # galore-torch: m >= n projects on the right
    assert projectors.projected_side((4, 9), "reverse_std") == "right"
    assert projectors.projected_size((4, 9)) == 4 and projectors.projected_size((9, 4)) == 4
    with pytest.raises(ValueError, match="proj_type='diagonal'"):
        projectors.projected_side((4, 9), "diagonal")


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_svd_basis_keeps_the_top_singular_directions(shape):
    grad = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    side = projectors.projected_side(shape)
    basis = projectors.svd_basis(grad, 3, side)
    assert basis.shape == (6, 3) and basis.is_contiguous()
    torch.testing.assert_close(basis.T @ basis, torch.eye(3), atol=1e-5, rtol=0)
    kept = projectors.project_back(projectors.project(grad, basis, side), basis, side)
    u, s, vh = torch.linalg.svd(grad)
    torch.testing.assert_close(kept, u[:, :3] @ torch.diag(s[:3]) @ vh[:3], atol=1e-5, rtol=0)


def test_random_bases_are_orthonormal_and_reproducible():
    basis = projectors.random_orthonormal_basis(20, 5, projectors.seeded_generator(0, 1, 2))
    torch.testing.assert_close(basis.T @ basis, torch.eye(5), atol=1e-5, rtol=0)
    assert torch.equal(basis, projectors.random_orthonormal_basis(20, 5, projectors.seeded_generator(0, 1, 2)))
    assert not torch.equal(basis, projectors.random_orthonormal_basis(20, 5, projectors.seeded_generator(0, 1, 3)))
    indices = projectors.random_coordinates(20, 5, projectors.seeded_generator(4))
    assert len(set(indices.tolist())) == 5 and indices.tolist() == sorted(indices.tolist())
    grad = torch.randn(20, 30)
    basis = projectors.coordinate_basis(indices, 20, grad.dtype, grad.device)
    assert torch.equal(projectors.project(grad, basis, "left"), grad[indices])


def test_top_l1_scores_pick_the_aligned_basis_vectors():
    q = projectors.dct_basis(16, torch.float64)
    grad = 5 * q[:, [3, 11]] @ torch.randn(2, 40, dtype=torch.float64) + 0.01 * torch.randn(16, 40, dtype=torch.float64)
    coefficients = projectors.project(grad, q, "left")
    indices = projectors.top_indices(projectors.l1_scores(coefficients, "left"), 2)
    assert indices.dtype == torch.int32 and indices.tolist() == [3, 11]
    assert torch.equal(projectors.select(coefficients, indices, "left"), coefficients[[3, 11]])
    right = projectors.top_indices(projectors.l1_scores(projectors.project(grad.T, q, "right"), "right"), 2)
    assert right.tolist() == [3, 11]
