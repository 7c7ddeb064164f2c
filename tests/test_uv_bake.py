import math

import torch

from coarse.synthface import build_synthface
from render.uv_bake import UVBaker, bake_texture, dilate_texture, sample_texture


def smooth_albedo(points: torch.Tensor) -> torch.Tensor:
    """(N, 3) positions (model units, the face spans about [-0.8, 0.8]) -> (N, 3) colours in [0.1, 0.9]."""
    x, y, z = points.unbind(-1)
    return torch.stack([0.5 + 0.4 * torch.sin(2.0 * x + 1.0) * torch.cos(1.5 * y),
                        0.5 + 0.4 * torch.cos(2.5 * y - 0.3 * z),
                        0.5 + 0.3 * torch.sin(1.7 * x * y + z)], -1)


def uv_gradient_bound(uv: torch.Tensor, triangles: torch.Tensor, values: torch.Tensor) -> float:
    """Largest |d value / d uv| (per channel, value units per UV unit) of the per-triangle linear interpolants."""
    a, b, c = uv[triangles[:, 0]], uv[triangles[:, 1]], uv[triangles[:, 2]]
    edges = torch.stack([b - a, c - a], 1)  # (F, 2, 2): rows are UV edge vectors
    keep = edges.det().abs() > 1e-12
    rises = torch.stack([values[triangles[:, 1]] - values[triangles[:, 0]],
                         values[triangles[:, 2]] - values[triangles[:, 0]]], 1)  # (F, 2, C)
    gradients = torch.linalg.solve(edges[keep], rises[keep])  # (F, 2, C): d value / d (u, v)
    return float(gradients.norm(dim=1).max())


def test_baked_texture_sampled_at_the_vertex_uvs_returns_a_smooth_albedo():
    model = build_synthface(resolution=41)
    albedo = smooth_albedo(model.mean_shape)
    size = 128
    texture = bake_texture(model.uv, model.triangles, albedo, size=size, padding_px=4)
    assert texture.shape == (3, size, size)
    error = (sample_texture(texture, model.uv) - albedo).abs()
    # A bilinear lookup at a vertex mixes texel centres at most one texel diagonal (sqrt 2 / size) away;
    # those inside the island hold the linear interpolant, those just outside (border vertices) copy a
    # covered neighbour one more diagonal away. So |error| <= G * 2 sqrt(2) / size, G the steepest
    # UV-space slope of the interpolant.
    tolerance = uv_gradient_bound(model.uv, model.triangles, albedo) * 2 * math.sqrt(2) / size
    assert float(error.max()) <= tolerance
    assert float(error.mean()) < tolerance / 10  # interior vertices are nearly exact


def test_texture_row_zero_is_the_top_of_uv_space():
    model = build_synthface(resolution=41)
    texture = bake_texture(model.uv, model.triangles, model.uv[:, 1:].expand(-1, 3).contiguous(), size=64)
    rows = texture[0].mean(1)
    assert rows[0] > 0.95 and rows[-1] < 0.05  # v = 1 on top, v = 0 at the bottom (OBJ convention)


def square_island(size_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = 0.5 - size_fraction / 2, 0.5 + size_fraction / 2
    uv = torch.tensor([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
    return uv, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_padding_extends_island_borders_and_the_rest_takes_the_mean_colour():
    uv, triangles = square_island()
    colours = (uv[:, :1] - 0.25) / 0.5  # 0 on the island's left edge, 1 on its right edge
    size, padding = 32, 3
    texture = bake_texture(uv, triangles, colours, size=size, padding_px=padding)[0]
    # The island covers columns 8..23; rings 24..26 copy the right edge, 5..7 the left edge.
    middle = size // 2
    assert torch.all(texture[middle, 24:24 + padding] > 0.9)
    assert torch.all(texture[middle, 8 - padding:8] < 0.1)
    island = texture[8:24, 8:24]
    assert abs(float(texture[0, 0]) - float(island.mean())) < 1e-5  # far away: the covered texels' mean


def test_dilation_fills_exactly_the_requested_rings():
    coverage = torch.zeros(9, 9, dtype=torch.bool)
    coverage[4, 4] = True
    texture = torch.zeros(1, 9, 9)
    texture[0, 4, 4] = 0.7
    grown, filled = dilate_texture(texture, coverage, padding_px=2)
    assert int(filled.sum()) == 25  # a 5 x 5 block: two 8-connected rings
    assert torch.allclose(grown[0][filled], torch.tensor(0.7))


def test_batched_baking_matches_one_at_a_time_and_reuses_one_rasterization():
    model = build_synthface(resolution=25)
    colours = torch.stack([model.mean_albedo, smooth_albedo(model.mean_shape)])
    baker = UVBaker(model.uv, model.triangles, size=48)
    batched = baker(colours)
    assert batched.shape == (2, 3, 48, 48)
    for k in range(2):
        assert torch.allclose(batched[k], bake_texture(model.uv, model.triangles, colours[k], size=48), atol=1e-6)


def test_sample_texture_reads_texel_centres_exactly():
    texture = torch.rand(2, 3, 8, 8)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    uv = torch.stack([(cols.flatten() + 0.5) / 8, 1 - (rows.flatten() + 0.5) / 8], -1)
    values = sample_texture(texture, uv)
    assert values.shape == (2, 64, 3)
    assert torch.allclose(values, texture.flatten(2).permute(0, 2, 1), atol=1e-6)
