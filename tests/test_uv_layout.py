import dataclasses

import pytest
import torch

import coarse.uv_layout as uv_layout
from coarse.synthface import build_synthface
from coarse.uv_layout import ensure_uv, topology_key
from render.rasterizer import rasterize
from render.uv_bake import uv_to_screen


@pytest.fixture(scope="module")
def model_without_uv():
    return dataclasses.replace(build_synthface(resolution=25), uv=None)


def test_a_model_with_uvs_keeps_them_one_per_vertex():
    model = build_synthface(resolution=25)
    layout = ensure_uv(model, cache_dir=None)
    assert layout.source == "model" and layout.num_vertices == model.num_vertices
    assert torch.equal(layout.uv, model.uv) and torch.equal(layout.triangles, model.triangles)
    assert torch.equal(layout.vertex_map, torch.arange(model.num_vertices))


def test_xatlas_layout_maps_back_to_every_model_triangle_and_vertex(model_without_uv, tmp_path):
    layout = ensure_uv(model_without_uv, tmp_path)
    assert layout.source == "xatlas"
    assert torch.equal(layout.vertex_map[layout.triangles], model_without_uv.triangles)
    assert layout.num_vertices >= model_without_uv.num_vertices  # seams repeat vertices
    assert set(layout.vertex_map.tolist()) == set(range(model_without_uv.num_vertices))
    assert float(layout.uv.min()) >= 0 and float(layout.uv.max()) <= 1
    values = torch.randn(2, model_without_uv.num_vertices, 3)
    assert torch.equal(layout.expand(values), values[:, layout.vertex_map])


def test_xatlas_charts_do_not_overlap(model_without_uv, tmp_path):
    layout = ensure_uv(model_without_uv, tmp_path)
    a, b, c = (layout.uv[layout.triangles[:, k]] for k in range(3))
    total_area = float((0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]).abs()).sum())
    size = 512
    covered = float(rasterize(uv_to_screen(layout.uv, size), layout.triangles, size).mask.float().mean())
    # Overlapping charts would make the summed triangle area exceed the covered area; rasterizing at
    # 512 px measures the union to within the islands' border texels (a few percent here).
    assert total_area < 1.05 * covered
    assert covered > 0.4  # and the packing leaves the atlas reasonably used


def test_layout_is_cached_once_and_reread_without_xatlas(model_without_uv, tmp_path, monkeypatch):
    first = ensure_uv(model_without_uv, tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"uv_{topology_key(model_without_uv)}.npz"]

    def no_xatlas(*args, **kwargs):
        raise AssertionError("xatlas ran although the layout was cached")

    monkeypatch.setattr(uv_layout, "compute_xatlas_layout", no_xatlas)
    second = ensure_uv(model_without_uv, tmp_path)
    assert torch.equal(first.uv, second.uv) and torch.equal(first.vertex_map, second.vertex_map)


def test_a_corrupt_cache_file_is_recomputed_and_replaced(model_without_uv, tmp_path):
    path = tmp_path / f"uv_{topology_key(model_without_uv)}.npz"
    path.write_bytes(b"not an npz file")
    layout = ensure_uv(model_without_uv, tmp_path)
    assert torch.equal(layout.vertex_map[layout.triangles], model_without_uv.triangles)
    assert path.read_bytes()[:2] == b"PK"  # a valid npz (zip) replaced the corrupt file
    assert sorted(f.name for f in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_the_cache_key_follows_the_triangles(model_without_uv):
    flipped = dataclasses.replace(model_without_uv, triangles=model_without_uv.triangles[:, [0, 2, 1]])
    assert topology_key(flipped) != topology_key(model_without_uv)
    assert topology_key(dataclasses.replace(model_without_uv)) == topology_key(model_without_uv)
