import pytest
import torch

from render.rasterizer import MAX_CANDIDATES_PER_CHUNK, interpolate, rasterize, render_mesh
import render.rasterizer as rasterizer_module

TRI = torch.tensor([[0, 1, 2]])


def _screen(points):
    return torch.tensor([points], dtype=torch.float64)


def test_single_triangle_coverage_matches_hand_computed_half_plane():
    # Right triangle with legs on x=1 and y=1 and hypotenuse x + y = 8: a pixel centre (j+.5, i+.5) is
    # inside iff both coordinates are >= 1 and their sum is <= 8.
    frags = rasterize(_screen([[1, 1, 5], [7, 1, 5], [1, 7, 5]]), TRI, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for i in range(8):
        for j in range(8):
            x, y = j + 0.5, i + 0.5
            expected[i, j] = x >= 1 and y >= 1 and x + y <= 8
    assert torch.equal(frags.mask[0], expected)
    assert set(frags.pix_to_face[0][expected].tolist()) == {0}
    assert (frags.pix_to_face[0][~expected] == -1).all()


def test_single_triangle_barycentrics_match_hand_computed_values():
    frags = rasterize(_screen([[1, 1, 5], [7, 1, 5], [1, 7, 5]]), TRI, 8)
    # Centre (1.5, 1.5): weight of vertex 1 is (x-1)/6, of vertex 2 is (y-1)/6.
    assert torch.allclose(frags.bary_coords[0, 1, 1], torch.tensor([5 / 6, 1 / 12, 1 / 12], dtype=torch.float64))
    # Centre (4.5, 2.5)
    assert torch.allclose(frags.bary_coords[0, 2, 4], torch.tensor([1 - 3.5 / 6 - 1.5 / 6, 3.5 / 6, 1.5 / 6], dtype=torch.float64))
    assert torch.allclose(frags.zbuf[0, 1, 1], torch.tensor(5.0, dtype=torch.float64))


def test_barycentrics_are_perspective_correct():
    # Vertex depths differ: the perspective-correct weight of a corner is (l_i / z_i) / sum(l_k / z_k).
    frags = rasterize(_screen([[0, 0, 2], [8, 0, 4], [0, 8, 8]]), TRI, 8)
    l = torch.tensor([1 - 2.5 / 8 - 1.5 / 8, 2.5 / 8, 1.5 / 8], dtype=torch.float64)
    w = l / torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64)
    assert torch.allclose(frags.bary_coords[0, 1, 2], w / w.sum())
    assert torch.allclose(frags.zbuf[0, 1, 2], 1 / w.sum())


def test_triangle_behind_another_is_hidden_in_either_order():
    near = [[0, 0, 3], [8, 0, 3], [0, 8, 3]]
    far = [[0, 0, 6], [8, 0, 6], [0, 8, 6]]
    tris = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for order, near_id in (((near, far), 0), ((far, near), 1)):
        frags = rasterize(_screen(order[0] + order[1]), tris, 8)
        assert (frags.pix_to_face[0][frags.mask[0]] == near_id).all()
        assert torch.allclose(frags.zbuf[0][frags.mask[0]], torch.tensor(3.0, dtype=torch.float64))


def test_empty_scene_gives_zero_mask():
    # Entirely off-screen, and behind the camera.
    off = rasterize(_screen([[20, 20, 5], [30, 20, 5], [20, 30, 5]]), TRI, 8)
    behind = rasterize(_screen([[0, 0, -1], [8, 0, -1], [0, 8, -1]]), TRI, 8)
    for frags in (off, behind):
        assert not frags.mask.any()
        assert (frags.pix_to_face == -1).all()
        assert (frags.bary_coords == 0).all()


def test_subpixel_triangles_between_centres_cover_nothing_and_large_triangle_covers_all():
    tiny = rasterize(_screen([[1.1, 1.1, 5], [1.3, 1.1, 5], [1.1, 1.3, 5]]), TRI, 8)
    assert not tiny.mask.any()
    huge = rasterize(_screen([[-100, -100, 5], [300, -100, 5], [-100, 300, 5]]), TRI, 16)
    assert huge.mask.all()


def test_chunked_rasterization_matches_single_chunk(monkeypatch):
    torch.manual_seed(0)
    screen = torch.rand(2, 60, 3, dtype=torch.float64) * torch.tensor([32, 32, 4.0], dtype=torch.float64) + torch.tensor([0, 0, 1.0], dtype=torch.float64)
    tris = torch.randint(0, 60, (80, 3))
    full = rasterize(screen, tris, 32)
    monkeypatch.setattr(rasterizer_module, "MAX_CANDIDATES_PER_CHUNK", 37)
    chunked = rasterize(screen, tris, 32)
    assert MAX_CANDIDATES_PER_CHUNK > 37
    assert torch.equal(full.zbuf, chunked.zbuf)
    assert torch.equal(full.mask, chunked.mask)


def test_interpolation_passes_gradcheck_for_attributes_and_vertices():
    screen = _screen([[1.2, 0.7, 4.0], [7.3, 1.6, 5.0], [2.1, 7.4, 6.0]]).requires_grad_()
    attrs = torch.rand(1, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(s, a):
        return interpolate(a, TRI, rasterize(s, TRI, 8))

    assert torch.autograd.gradcheck(f, (screen, attrs), eps=1e-6, atol=1e-5)


def test_vertex_position_gradient_matches_finite_differences():
    torch.manual_seed(1)
    screen = _screen([[2.2, 1.7, 4.0], [13.3, 2.6, 5.0], [3.1, 14.4, 6.0]])
    attrs = torch.rand(1, 3, 3, dtype=torch.float64)
    weights = torch.rand(1, 3, 16, 16, dtype=torch.float64)

    def loss(s):
        return (render_mesh(s, TRI, attrs, 16).image * weights).sum()

    s = screen.clone().requires_grad_()
    loss(s).backward()
    eps = 1e-5
    numeric = torch.zeros_like(screen)
    for idx in torch.cartesian_prod(torch.arange(3), torch.arange(3)).tolist():
        plus, minus = screen.clone(), screen.clone()
        plus[0, idx[0], idx[1]] += eps
        minus[0, idx[0], idx[1]] -= eps
        numeric[0, idx[0], idx[1]] = (loss(plus) - loss(minus)) / (2 * eps)
    assert torch.allclose(s.grad, numeric, atol=1e-6, rtol=1e-4)
    assert s.grad.abs().sum() > 0


def test_composite_uses_background_outside_mask():
    bg = torch.full((1, 3, 8, 8), 0.25, dtype=torch.float64)
    colours = torch.ones(1, 3, 3, dtype=torch.float64)
    out = render_mesh(_screen([[1, 1, 5], [7, 1, 5], [1, 7, 5]]), TRI, colours, 8, background=bg)
    m = out.mask[0, 0].bool()
    assert torch.allclose(out.image[0][:, m], torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(out.image[0][:, ~m], torch.tensor(0.25, dtype=torch.float64))


def test_batch_items_are_rasterized_independently():
    a = [[1, 1, 5], [7, 1, 5], [1, 7, 5]]
    b = [[0, 0, 5], [8, 0, 5], [8, 8, 5]]
    batch = rasterize(torch.tensor([a, b], dtype=torch.float64), TRI, 8)
    assert torch.equal(batch.mask[0], rasterize(_screen(a), TRI, 8).mask[0])
    assert torch.equal(batch.mask[1], rasterize(_screen(b), TRI, 8).mask[0])


def test_pytorch3d_backend_matches_torch_backend():
    pytest.importorskip("pytorch3d")
    from render import pytorch3d_backend

    torch.manual_seed(0)
    screen = torch.rand(2, 40, 3) * torch.tensor([32, 32, 4.0]) + torch.tensor([0, 0, 1.0])
    tris = torch.randint(0, 40, (50, 3))
    ours = rasterize(screen, tris, 32)
    theirs = pytorch3d_backend.rasterize(screen, tris, 32)
    agree = (ours.pix_to_face == theirs.pix_to_face).float().mean()
    assert agree > 0.99
