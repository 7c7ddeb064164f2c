import json
import os

import numpy as np
import pytest
import skimage.data
import torch
import trimesh
from PIL import Image

import experiments.reconstruct as reconstruct
from coarse.regressor import CoarseRegressor
from coarse.synthface import build_synthface
from data.images import read_rgb_image
from experiments.pipeline import CHECKPOINT_FORMAT
from experiments.reconstruct import main, unique_stems
from perception.training import save_checkpoint_atomic

INPUT_SIZE = 64
TEXTURE_SIZE = 64
STATED_FILES = ("{s}.obj", "{s}.mtl", "{s}_texture.png", "{s}.glb", "{s}.ply", "{s}_overlay.png", "{s}_coeffs.npy",
                "{s}_landmarks68.txt", "{s}.json")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A mean-face pipeline checkpoint in the training format, with a 64 px input to stay fast."""
    path = tmp_path_factory.mktemp("checkpoint") / "last.pt"
    weights = CoarseRegressor(imagenet_weights=False).state_dict()
    save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "regressor": weights,
                            "config": {"data": {"image_size": INPUT_SIZE}}, "stage": "mean_face"}, path)
    return path


@pytest.fixture(scope="module")
def astronaut_jpg(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def reconstructed(checkpoint, astronaut_jpg, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code = main([str(astronaut_jpg), "-o", str(out), "--checkpoint", str(checkpoint),
                 "--texture-size", str(TEXTURE_SIZE)])
    return code, out / "astronaut"


def all_entries(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


def test_reconstruct_writes_every_stated_file(reconstructed):
    code, folder = reconstructed
    assert code == 0
    assert sorted(os.listdir(folder)) == sorted(f.format(s="astronaut") for f in STATED_FILES)
    coeffs = np.load(folder / "astronaut_coeffs.npy")
    assert coeffs.shape == (257,) and coeffs.dtype == np.float32
    summary = json.loads((folder / "astronaut.json").read_text())
    assert set(summary["pose_deg"]) == {"pitch", "yaw", "roll"} and summary["detection"]["score"] > 0.9
    assert summary["checkpoint"].endswith("last.pt") and summary["fit"] is None
    assert {"detect_ms", "predict_ms", "render_ms", "encode_ms"} <= set(summary["timings_ms"])


def test_meshes_reload_with_the_model_counts_and_the_stated_texture(reconstructed):
    _, folder = reconstructed
    model = build_synthface()
    obj = trimesh.load(folder / "astronaut.obj", process=False)
    assert obj.vertices.shape == (model.num_vertices, 3) and obj.faces.shape == (model.num_faces, 3)
    assert obj.visual.material.image.size == (TEXTURE_SIZE, TEXTURE_SIZE)
    (glb,) = trimesh.load(folder / "astronaut.glb").geometry.values()
    assert glb.vertices.shape == (model.num_vertices, 3)
    assert glb.visual.material.baseColorTexture.size == (TEXTURE_SIZE, TEXTURE_SIZE)


def test_overlay_has_the_photo_size_and_changes_it_only_near_the_face(reconstructed, astronaut_jpg):
    _, folder = reconstructed
    photo = read_rgb_image(astronaut_jpg)
    overlay = np.asarray(Image.open(folder / "astronaut_overlay.png").convert("RGB"))
    assert overlay.shape == photo.shape
    x0, y0, x1, y1 = json.loads((folder / "astronaut.json").read_text())["detection"]["box"]
    width, height = x1 - x0, y1 - y0
    near = np.zeros(photo.shape[:2], dtype=bool)  # the face box grown by half its size on every side
    top, left = max(int(y0 - height / 2), 0), max(int(x0 - width / 2), 0)
    near[top:int(y1 + height / 2) + 1, left:int(x1 + width / 2) + 1] = True
    changed = np.abs(overlay.astype(int) - photo.astype(int)).sum(-1) > 0
    assert not changed[~near].any()
    box = changed[int(y0):int(y1), int(x0):int(x1)]
    assert box.mean() > 0.5  # the face itself is painted over


def test_landmarks_are_68_points_on_the_face_in_photo_pixels(reconstructed):
    _, folder = reconstructed
    points = np.loadtxt(folder / "astronaut_landmarks68.txt")
    x0, y0, x1, y1 = json.loads((folder / "astronaut.json").read_text())["detection"]["box"]
    assert points.shape == (68, 2)
    margin = 0.25 * (x1 - x0)
    assert np.all((points[:, 0] > x0 - margin) & (points[:, 0] < x1 + margin))
    assert np.all((points[:, 1] > y0 - margin) & (points[:, 1] < y1 + margin))
    assert points[8, 1] > points[27, 1]  # chin below the nose bridge: the inverse alignment kept y down


def test_fit_raises_psnr_and_id_cosine_and_writes_the_fitted_coefficients(checkpoint, astronaut_jpg, tmp_path,
                                                                           reconstructed):
    # Pin the photometric mask to the render coverage, whatever parsing net a checkout has trained.
    config = tmp_path / "fit.yaml"
    config.write_text(f"perception:\n  parsing_checkpoint: {tmp_path / 'no_parsing_net.pt'}\n")
    code = main([str(astronaut_jpg), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--texture-size",
                 "32", "--fit", "15", "--config", str(config)])
    assert code == 0
    report = json.loads((tmp_path / "out" / "astronaut" / "astronaut.json").read_text())["fit"]
    assert report["steps"] == 15 and report["mask"] == "render"
    assert report["psnr_after_db"] > report["psnr_before_db"]
    assert report["id_cosine_after"] > report["id_cosine_before"]
    fitted = np.load(tmp_path / "out" / "astronaut" / "astronaut_coeffs.npy")
    network = np.load(reconstructed[1] / "astronaut_coeffs.npy")
    assert np.abs(fitted - network).max() > 1e-3


def test_flip_average_reads_the_mirror_image_too(astronaut_jpg, tmp_path):
    # Heads with small random weights, so the prediction depends on the photo (the mean-face one does not).
    regressor = CoarseRegressor(imagenet_weights=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in regressor.final_layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 3e-4)
    path = tmp_path / "last.pt"
    save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "regressor": regressor.state_dict(),
                            "config": {"data": {"image_size": INPUT_SIZE}}, "stage": "coarse"}, path)
    coeffs = {}
    for flag in ("--no-flip-average", "--flip-average"):
        out = tmp_path / flag
        assert main([str(astronaut_jpg), "-o", str(out), "--checkpoint", str(path), "--texture-size", "32", flag]) == 0
        coeffs[flag] = np.load(out / "astronaut" / "astronaut_coeffs.npy")
    assert np.abs(coeffs["--flip-average"] - coeffs["--no-flip-average"]).max() > 1e-4


def test_a_folder_with_bad_photos_reconstructs_the_good_one_and_exits_non_zero(checkpoint, astronaut_jpg, tmp_path,
                                                                                capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.jpg").write_bytes(astronaut_jpg.read_bytes())
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(photos / "grey.jpg")
    (photos / "notes.jpg").write_text("this is not a picture")
    out = tmp_path / "out"
    code = main([str(photos), "-o", str(out), "--checkpoint", str(checkpoint), "--texture-size", "32"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.strip().splitlines()[-1].startswith("1 of 3 photos reconstructed")
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2
    assert any("grey.jpg" in line for line in skipped) and any("notes.jpg" in line for line in skipped)
    assert all_entries(out) == sorted(["astronaut"] + [os.path.join("astronaut", f.format(s="astronaut"))
                                                     for f in STATED_FILES])


def test_a_failure_while_writing_leaves_no_half_written_folder(checkpoint, astronaut_jpg, tmp_path, monkeypatch,
                                                               capsys):
    real_write, calls = reconstruct.write_file, []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 4:  # half of the fourth file lands, then the disk fills up
            real_write(path, data[: len(data) // 2])
            raise OSError("no space left on device")
        real_write(path, data)

    monkeypatch.setattr(reconstruct, "write_file", failing_write)
    code = main([str(astronaut_jpg), "-o", str(tmp_path), "--checkpoint", str(checkpoint), "--texture-size", "32"])
    assert code == 1 and len(calls) == 4
    assert "no space left" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_missing_checkpoint_says_how_to_get_one_in_one_line(tmp_path, astronaut_jpg, capsys):
    code = main([str(astronaut_jpg), "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "make train" in err and "--checkpoint" in err and "none.pt" in err


def test_colliding_stems_get_distinct_folders():
    from pathlib import Path

    stems = unique_stems([Path("a/face.jpg"), Path("b/face.png"), Path("c/other.jpg"), Path("d/face.jpg")])
    assert len(set(stems)) == 4 and stems[2] == "other"
