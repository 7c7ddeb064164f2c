import dataclasses
import os

import numpy as np
import pytest
import torch
import trimesh

import experiments.mesh_export as mesh_export
from coarse.synthface import build_synthface
from coarse.uv_layout import ensure_uv
from experiments.mesh_export import METRES_PER_MODEL_UNIT, FaceMeshExporter, export_face_meshes, export_file_names
from render.uv_bake import sample_texture

TEXTURE_SIZE = 64


def smooth_albedo(points: torch.Tensor) -> torch.Tensor:
    x, y, z = points.unbind(-1)
    return torch.stack([0.5 + 0.3 * torch.sin(2 * x), 0.5 + 0.3 * torch.cos(2 * y), 0.4 + 0.2 * z], -1).clamp(0, 1)


@pytest.fixture(scope="module")
def model():
    return build_synthface(resolution=25)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    albedo = smooth_albedo(model.mean_shape)
    paths = export_face_meshes(out, "face", model.mean_shape, model.triangles, albedo, ensure_uv(model, None),
                               texture_size=TEXTURE_SIZE)
    return out, paths, albedo


def test_export_writes_exactly_the_five_stated_files(exported):
    out, paths, _ = exported
    assert sorted(os.listdir(out)) == sorted(["face.obj", "face.mtl", "face_texture.png", "face.glb", "face.ply"])
    assert paths == {key: out / name for key, name in export_file_names("face").items()}
    mtl = (out / "face.mtl").read_text()
    assert "map_Kd face_texture.png" in mtl and "mtllib face.mtl" in (out / "face.obj").read_text()


def test_obj_reloads_with_the_model_counts_metric_frame_and_stated_texture(exported, model):
    out, _, albedo = exported
    mesh = trimesh.load(out / "face.obj", process=False)
    assert mesh.vertices.shape == (model.num_vertices, 3) and mesh.faces.shape == (model.num_faces, 3)
    assert np.allclose(mesh.vertices, model.mean_shape.numpy() * METRES_PER_MODEL_UNIT, atol=2e-6)
    assert np.array_equal(mesh.faces, model.triangles.numpy())
    assert mesh.visual.material.image.size == (TEXTURE_SIZE, TEXTURE_SIZE)
    # The texture, read back at the file's UVs, is the albedo (quantised to 8 bits; smooth, so baking
    # at 64 px is close).
    texture = torch.from_numpy(np.array(mesh.visual.material.image.convert("RGB"))).permute(2, 0, 1).float() / 255
    colours = sample_texture(texture, torch.from_numpy(np.asarray(mesh.visual.uv)).float())
    assert float((colours - albedo).abs().mean()) < 0.01


def test_glb_reloads_with_the_same_mesh_and_its_texture(exported, model):
    out, _, _ = exported
    scene = trimesh.load(out / "face.glb")
    (mesh,) = scene.geometry.values()
    assert mesh.vertices.shape == (model.num_vertices, 3) and mesh.faces.shape == (model.num_faces, 3)
    assert mesh.visual.material.baseColorTexture.size == (TEXTURE_SIZE, TEXTURE_SIZE)
    obj = trimesh.load(out / "face.obj", process=False)
    assert np.allclose(np.asarray(mesh.visual.uv), np.asarray(obj.visual.uv), atol=1e-5)  # same UV convention


def test_ply_carries_the_albedo_as_vertex_colours(exported, model):
    out, _, albedo = exported
    mesh = trimesh.load(out / "face.ply", process=False)
    assert mesh.vertices.shape == (model.num_vertices, 3)
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(float)
    assert np.abs(colours - albedo.numpy() * 255).max() <= 0.5 + 1e-3


def test_a_model_without_uvs_exports_the_xatlas_split_vertices(model, tmp_path):
    bare = dataclasses.replace(model, uv=None)
    layout = ensure_uv(bare, None)
    export_face_meshes(tmp_path, "bare", bare.mean_shape, bare.triangles, bare.mean_albedo, layout, texture_size=32)
    obj = trimesh.load(tmp_path / "bare.obj", process=False)
    ply = trimesh.load(tmp_path / "bare.ply", process=False)
    assert layout.num_vertices > bare.num_vertices
    assert obj.vertices.shape == (layout.num_vertices, 3) and obj.faces.shape == (bare.num_faces, 3)
    assert ply.vertices.shape == (bare.num_vertices, 3)
    # Seam copies sit exactly where their model vertex is.
    assert np.allclose(obj.vertices, bare.mean_shape[layout.vertex_map].numpy() * METRES_PER_MODEL_UNIT, atol=2e-6)


def test_an_exception_while_building_leaves_no_file(model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mesh_export.trimesh.exchange.ply, "export_ply", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_face_meshes(tmp_path, "face", model.mean_shape, model.triangles, model.mean_albedo,
                           ensure_uv(model, None), texture_size=16)
    assert os.listdir(tmp_path) == []


def test_an_exception_midway_through_writing_leaves_no_file(model, tmp_path, monkeypatch):
    real_write, calls = mesh_export.write_file, []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 3:  # the third of five files: half of it lands, then the disk fills up
            real_write(path, data[: len(data) // 2])
            raise OSError("no space left on device")
        real_write(path, data)

    monkeypatch.setattr(mesh_export, "write_file", failing_write)
    with pytest.raises(OSError, match="no space"):
        FaceMeshExporter(ensure_uv(model, None), model.triangles, texture_size=16).export(
            tmp_path, "face", model.mean_shape, model.mean_albedo)
    assert len(calls) == 3 and os.listdir(tmp_path) == []
