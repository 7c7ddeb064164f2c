import pytest
import torch
from torch_geometric.nn import ChebConv

from coarse.synthface import build_synthface
from fine import ChebResidualBlock, LaplacianChebConv, edge_index_from_triangles, scaled_laplacian
from fine.sparse import SparseOperator


@pytest.fixture(scope="module")
def graph():
    model = build_synthface(resolution=25)
    n = model.mean_shape.shape[0]
    return edge_index_from_triangles(model.triangles, n), n


def test_scaled_laplacian_is_minus_normalised_adjacency(graph):
    edge_index, n = graph
    laplacian = scaled_laplacian(edge_index, n).to_dense()
    adjacency = torch.zeros(n, n)
    adjacency[edge_index[0], edge_index[1]] = 1
    inv_sqrt_degree = adjacency.sum(1).rsqrt()
    expected = -inv_sqrt_degree[:, None] * adjacency * inv_sqrt_degree[None, :]
    torch.testing.assert_close(laplacian, expected)
    torch.testing.assert_close(laplacian, laplacian.t())


def test_laplacian_chebconv_matches_pyg_chebconv_unbatched_and_batched(graph):
    edge_index, n = graph
    torch.manual_seed(0)
    reference = ChebConv(5, 7, K=6, normalization="sym")
    torch.nn.init.normal_(reference.bias)
    conv = LaplacianChebConv(5, 7, K=6)
    conv.load_state_dict(reference.state_dict())          # same parameters, same keys
    laplacian = scaled_laplacian(edge_index, n)
    x = torch.randn(3, n, 5)
    torch.testing.assert_close(conv(x[0], laplacian), reference(x[0], edge_index), atol=1e-5, rtol=1e-5)
    # PyG's ChebConv also takes (B, N, C) node features (node_dim=-2); ours must agree with it.
    torch.testing.assert_close(conv(x, laplacian), reference(x, edge_index), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("K", [2, 3, 6])
def test_a_narrowing_conv_runs_the_recursion_on_its_outputs_and_still_matches_pyg(graph, K):
    edge_index, n = graph
    torch.manual_seed(1)
    reference = ChebConv(9, 4, K=K, normalization="sym")
    torch.nn.init.normal_(reference.bias)
    conv = LaplacianChebConv(9, 4, K=K)
    conv.load_state_dict(reference.state_dict())
    laplacian = scaled_laplacian(edge_index, n)
    x = torch.randn(2, n, 9, requires_grad=True)
    calls = []
    original = SparseOperator.matmul

    def counting(self, b, *args, **kwargs):
        calls.append(b.shape[-1])
        return original(self, b, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SparseOperator, "matmul", counting)
        out = conv(x, laplacian)
    assert calls == [2 * 4] * (K - 1)  # K - 1 products on B * C_out columns, not B * C_in
    torch.testing.assert_close(out, reference(x, edge_index), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(x[1], laplacian), reference(x[1], edge_index), atol=1e-5, rtol=1e-5)
    grad, = torch.autograd.grad(out.square().sum(), x)
    expected, = torch.autograd.grad(reference(x, edge_index).square().sum(), x)
    torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-4)


def test_block_is_identity_at_initialisation(graph):
    edge_index, n = graph
    torch.manual_seed(0)
    block = ChebResidualBlock(8, 8, K=6)
    x = torch.randn(2, n, 8)
    torch.testing.assert_close(block(x, edge_index=edge_index), x, atol=0, rtol=0)


def test_block_keeps_a_constant_colour_constant_at_initialisation(graph):
    edge_index, n = graph
    torch.manual_seed(0)
    colour = torch.tensor([0.8, 0.5, 0.4]).expand(2, n, 3)
    for block in (ChebResidualBlock(3, 3), ChebResidualBlock(3, 16)):
        out = block(colour, edge_index=edge_index).detach()
        assert float((out - out[:, :1]).abs().max()) < 1e-6
    # With a non-zero conv2 it would not (the sym-normalised Laplacian does not preserve constants),
    # which is why conv2 starts at zero.
    perturbed = ChebResidualBlock(3, 3)
    torch.nn.init.normal_(perturbed.conv2.lins[1].weight)
    out = perturbed(colour, edge_index=edge_index).detach()
    assert float((out - out[:, :1]).abs().max()) > 1e-3


def test_block_is_no_longer_identity_after_one_optimiser_step(graph):
    edge_index, n = graph
    torch.manual_seed(0)
    block = ChebResidualBlock(4, 4, K=3)
    laplacian = scaled_laplacian(edge_index, n)
    x = torch.randn(2, n, 4)
    target = torch.randn(2, n, 4)
    optimiser = torch.optim.Adam(block.parameters(), lr=1e-2)
    loss = (block(x, laplacian=laplacian) - target).square().mean()
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        assert float((block(x, laplacian=laplacian) - x).abs().max()) > 1e-3
    block.reset_parameters()
    torch.testing.assert_close(block(x, laplacian=laplacian), x, atol=0, rtol=0)


def test_block_gives_the_same_output_from_edge_index_or_laplacian(graph):
    edge_index, n = graph
    torch.manual_seed(0)
    block = ChebResidualBlock(3, 6, K=4)
    torch.nn.init.normal_(block.conv2.lins[0].weight)
    x = torch.randn(2, n, 3)
    out = block(x, edge_index=edge_index)
    assert out.shape == (2, n, 6)
    torch.testing.assert_close(out, block(x, laplacian=scaled_laplacian(edge_index, n)))
    with pytest.raises(ValueError, match="exactly one"):
        block(x)
    with pytest.raises(ValueError, match="exactly one"):
        block(x, edge_index=edge_index, laplacian=scaled_laplacian(edge_index, n))


def test_block_samples_in_a_batch_do_not_interact(graph):
    edge_index, n = graph
    torch.manual_seed(0)
    block = ChebResidualBlock(3, 5, K=6)
    torch.nn.init.normal_(block.conv2.lins[2].weight)
    x = torch.randn(3, n, 3)
    batched = block(x, edge_index=edge_index)
    torch.testing.assert_close(batched[1:2], block(x[1:2], edge_index=edge_index), atol=1e-6, rtol=1e-5)
