import pytest
import torch

from fine.sparse import SparseOperator, as_operator


def random_sparse(rows: int, cols: int, density: float = 0.2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    dense *= torch.rand(rows, cols, generator=generator, dtype=torch.float64) < density
    return dense.to_sparse()


def test_product_and_gradients_match_torch_sparse_mm_on_a_non_symmetric_matrix():
    matrix = random_sparse(7, 5)  # not square, so a backward that used the matrix instead of its transpose fails
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64)
    out = as_operator(matrix) @ x
    torch.testing.assert_close(out, torch.sparse.mm(matrix, x))
    grad, = torch.autograd.grad((out * weight).sum(), x)
    expected, = torch.autograd.grad((torch.sparse.mm(matrix, x) * weight).sum(), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.0, -1.0), (0.5, 3.0)])
def test_fused_product_is_beta_add_plus_alpha_product_with_exact_gradients(alpha, beta):
    operator = SparseOperator(random_sparse(6, 6, seed=1))
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    add = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    out = operator.matmul(x, add=add, alpha=alpha, beta=beta)
    torch.testing.assert_close(out, beta * add + alpha * (operator.to_dense() @ x))
    assert torch.autograd.gradcheck(lambda a, b: operator.matmul(a, add=b, alpha=alpha, beta=beta), (x, add))


def test_from_parts_rebuilds_the_same_operator_and_bad_shapes_are_refused():
    matrix = random_sparse(5, 8, seed=2).float()
    parts = SparseOperator.parts(matrix)
    assert tuple(parts) == SparseOperator.PARTS
    operator = SparseOperator.from_parts((5, 8), **parts)
    torch.testing.assert_close(operator.to_dense(), matrix.to_dense())
    torch.testing.assert_close(operator.transpose.to_dense(), matrix.to_dense().t())
    with pytest.raises(ValueError, match=r"needs \(8, M\)"):
        operator @ torch.randn(5, 2)
    with pytest.raises(ValueError, match="add must be"):
        operator.matmul(torch.randn(8, 2), add=torch.randn(8, 2))
    with pytest.raises(ValueError, match="COO or CSR"):
        SparseOperator(torch.randn(3, 3))
