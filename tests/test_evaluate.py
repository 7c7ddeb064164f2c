"""experiments.evaluate and experiments.report on tiny pipelines, a few SynthFaces and a fake CelebA folder."""
import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from coarse import coefficients as C
from coarse.regressor import CoarseRegressor
from coarse.synthface import build_synthface
from data.celeba import PARTITION_FILE
from experiments import evaluate as E
from experiments.config import load_config
from experiments.pipeline import CHECKPOINT_FORMAT, FacePipeline, Prediction
from experiments.report import write_report
from perception.training import save_checkpoint_atomic

SYNTH_FIELDS = ("psnr_face_db", "psnr_crop_db", "ssim_face", "ssim_crop", "id_cosine_toy", "albedo_error",
                "landmark_error_px", "nme", "pose_error_deg", "yaw_error_deg", "pitch_error_deg", "roll_error_deg",
                "id_consistency_same_toy", "id_consistency_different_toy")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _regressor(seed: int = 0) -> CoarseRegressor:
    """Random backbone, heads with small random weights: predictions near the mean face that depend on the image."""
    regressor = CoarseRegressor(imagenet_weights=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in regressor.final_layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 3e-4)
    return regressor.eval()


class WithFineAlbedo(FacePipeline):
    """The real pipeline plus a stand-in fine albedo, so the fine column is exercised without training GCNs."""

    has_fine = True

    def predict(self, images, stage=None):
        coarse = super().predict(images, stage="coarse")
        return Prediction(coarse.coeffs, coarse.coarse_albedo, coarse.coarse_albedo.clamp(0, 1) * 0.9 + 0.05)


class ToyIdentityNet(torch.nn.Module):
    """The identity-net interface (aligned crops -> unit embeddings) at a fraction of dlib's cost."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(4),
                                        torch.nn.Flatten(), torch.nn.Linear(128, 16))

    def forward(self, images):
        return torch.nn.functional.normalize(self.body(images * 2 - 1), dim=-1)


def _finite(field: dict) -> bool:
    return field["count"] > 0 and all(isinstance(field[k], float) and math.isfinite(field[k]) for k in ("mean", "std"))


def test_synthfaces_evaluation_writes_finite_metrics_and_a_report_with_its_images(tmp_path):
    model = build_synthface(resolution=25)
    pipeline = WithFineAlbedo(model, _regressor(), input_size=64)
    dataset = E.synthfaces_test_set(model, size=8, image_size=64)
    result = E.evaluate_pipeline(pipeline, dataset, identity_nets={"toy": ToyIdentityNet().eval()}, batch_size=4, out_dir=tmp_path,
                                 grid_rows=3, progress=False)
    E.write_evaluation(result, tmp_path)
    write_report(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["methods"] == ["mean_face", "coarse", "fine"] and metrics["samples_evaluated"] == 8
    for protocol in ("clean", "occluded"):
        for method in metrics["methods"]:
            fields = metrics["protocols"][protocol][method]
            for key in SYNTH_FIELDS:
                assert _finite(fields[key]), (protocol, method, key, fields.get(key))
            assert fields["psnr_face_db"]["count"] == 8 and fields["id_consistency_same_toy"]["count"] == 2
        assert _finite(metrics["input_id_consistency"][protocol]["id_consistency_same_toy"])
    clean = metrics["protocols"]["clean"]
    assert clean["fine"]["albedo_error"]["mean"] != clean["coarse"]["albedo_error"]["mean"]
    assert clean["coarse"]["pose_error_deg"]["mean"] != clean["mean_face"]["pose_error_deg"]["mean"]
    occluded = json.loads((tmp_path / "samples.json").read_text())["occluded_fraction"]
    assert max(occluded["clean"]) == 0 and min(occluded["occluded"]) >= 0 and max(occluded["occluded"]) > 0
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"grid.png", "metric_vs_yaw.png", "metric_vs_occlusion.png"} <= set(images)
    for name in images:
        assert (tmp_path / name).is_file()
    assert Image.open(tmp_path / "grid.png").size[1] > 3 * 64  # three rows
    assert "Table 1" in (tmp_path / "report.md").read_text() and "win_size=7" in page


def _checkpoint(tmp_path, image_size: int = 64):
    cfg = load_config(None, {
        "data": {"image_size": image_size},
        "perception": {"parsing_checkpoint": str(tmp_path / "no_parsing.pt")}})
    path = tmp_path / "last.pt"
    save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "regressor": _regressor().state_dict(),
                            "stage": "coarse"}, path)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f"perception:\n  parsing_checkpoint: {tmp_path / 'no_parsing.pt'}\n")
    return path, config_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("checkpoint"))


def test_cli_on_a_coarse_checkpoint_says_fine_is_not_in_it(tmp_path, checkpoint, capsys):
    path, config = checkpoint
    out = tmp_path / "report"
    code = E.main(["--dataset", "synthfaces", "--checkpoint", str(path), "--out", str(out), "--limit", "4",
                   "--image-size", "64", "--config", str(config), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["mean_face", "coarse"]
    assert metrics["methods_absent"] == {"fine": E.NOT_IN_CHECKPOINT}
    assert metrics["checkpoint"] == str(path) and metrics["config"]["data"]["image_size"] == 64
    assert "facenet" in metrics["identity_nets_absent"] or "facenet" in metrics["identity_nets"]
    assert "not in this checkpoint" in (out / "report.md").read_text()


def test_flip_average_flag_overrides_the_checkpoint_and_changes_the_prediction(tmp_path, checkpoint, capsys):
    path, config = checkpoint
    landmarks = {}
    for flag in ("--no-flip-average", "--flip-average"):
        out = tmp_path / flag
        code = E.main(["--dataset", "synthfaces", "--checkpoint", str(path), "--out", str(out), "--limit", "2",
                       "--image-size", "64", "--config", str(config), "--no-progress", flag])
        assert code == 0, capsys.readouterr().err
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["flip_average"] is (flag == "--flip-average")
        landmarks[flag] = metrics["protocols"]["clean"]["coarse"]["landmark_error_px"]["mean"]
    assert landmarks["--flip-average"] != landmarks["--no-flip-average"]


def test_missing_checkpoint_and_missing_data_set_get_one_line(tmp_path, checkpoint, capsys):
    path, config = checkpoint
    common = ["--config", str(config), "--out", str(tmp_path / "r")]
    assert E.main(["--checkpoint", str(tmp_path / "none.pt"), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make train" in err and "CHECKPOINT=" in err
    assert E.main(["--dataset", "celeba", "--checkpoint", str(path), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "img_align_celeba.zip" in err and "CELEBA_DIR" in err
    assert E.main(["--dataset", "aflw2000", "--root", str(tmp_path / "nowhere"), "--checkpoint", str(path), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AFLW2000-3D.zip" in err


def _write_celeba(root):
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    names = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    for k, name in enumerate(names[:3]):
        crop = data.astronaut()[20 + 4 * k:260 + 4 * k, 125 + 4 * k:325 + 4 * k]
        Image.fromarray(np.asarray(Image.fromarray(crop).resize((178, 218)))).save(images / name, quality=95)
    (images / names[3]).write_text("not a photo")
    (root / PARTITION_FILE).write_text("".join(f"{name} 2\n" for name in names) + "000009.jpg 0\n")
    return root


def test_celeba_evaluation_counts_an_unreadable_photo_and_finishes(tmp_path, checkpoint, capsys):
    path, config = checkpoint
    root = _write_celeba(tmp_path / "celeba")
    out = tmp_path / "report"
    code = E.main(["--dataset", "celeba", "--root", str(root), "--checkpoint", str(path), "--out", str(out),
                   "--config", str(config), "--no-progress", "--batch-size", "4"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples_evaluated"] == 3
    assert metrics["failures"]["count"] == 1 and metrics["failures"]["unreadable"] == 1
    assert metrics["failures"]["items"][0]["path"] == "img_align_celeba/000004.jpg"
    assert "1 photos left out" in printed.out
    for protocol in ("clean", "occluded"):
        fields = metrics["protocols"][protocol]["coarse"]
        assert _finite(fields["psnr_face_db"]) and fields["psnr_face_db"]["count"] == 3
        assert "albedo_error" not in fields and "nme" not in fields  # no ground truth on photos
    assert metrics["yaw_source"] == "predicted" and "render mask only" in metrics["face_region"]
    fraction = json.loads((out / "samples.json").read_text())["occluded_fraction"]["occluded"]
    assert min(fraction) > 0  # every photo got an occluder on its face
    assert "000004.jpg" in (out / "report.md").read_text()


def test_occluders_on_photos_are_the_same_every_run():
    batch = {"image": torch.rand(2, 3, 64, 64), "landmarks5": None}
    first, alpha = E._occluded_inputs(batch, [5, 6], seed=0, size=64)
    again, _ = E._occluded_inputs(batch, [5, 6], seed=0, size=64)
    other, _ = E._occluded_inputs(batch, [5, 6], seed=1, size=64)
    assert torch.equal(first, again) and not torch.equal(first, other) and alpha.amax() > 0.5
    alone, _ = E._occluded_inputs({"image": batch["image"][1:], "landmarks5": None}, [6], seed=0, size=64)
    assert torch.equal(alone[0], first[1])  # depends on the sample index, not the batch it sits in


def test_novel_views_turn_the_head_by_the_requested_yaw():
    model = build_synthface(resolution=25)
    pipeline = FacePipeline(model, _regressor(), input_size=64)
    coeffs = torch.zeros(1, C.N_COEFFS)
    from data.synthfaces import template_translation
    coeffs[0, C.TRANS] = template_translation(model)
    left, right = E._novel_views(pipeline, coeffs, model.mean_albedo[None], 64)
    assert not torch.equal(left, right) and torch.allclose(left, right.flip(-1), atol=0.35)


def _write_aflw(root):
    """Two astronaut photos with .mat annotations: |yaw| 6 and 34 degrees."""
    import scipy.io

    root.mkdir(parents=True)
    eyes_nose_mouth = np.array([[95, 100], [140, 100], [118, 125], [100, 150], [137, 150]], dtype=float)
    points = np.tile(eyes_nose_mouth[2], (68, 1))
    ring = np.array([[-6, 0], [-3, -2], [3, -2], [6, 0], [3, 2], [-3, 2]], dtype=float)
    points[36:42], points[42:48] = eyes_nose_mouth[0] + ring, eyes_nose_mouth[1] + ring
    points[48], points[54] = eyes_nose_mouth[3], eyes_nose_mouth[4]
    points[0:17, 0] = np.linspace(70, 165, 17)
    points[0:17, 1] = 110 + 60 * np.sin(np.linspace(0, np.pi, 17))
    for name, shift, yaw in (("image00002", 0, 0.1), ("image00004", 10, -0.6)):
        crop = data.astronaut()[shift:300 + shift, 75 + shift:375 + shift]
        Image.fromarray(np.asarray(Image.fromarray(crop).resize((240, 240)))).save(root / f"{name}.jpg", quality=95)
        scipy.io.savemat(root / f"{name}.mat", {"pt3d_68": np.vstack([(points + shift / 1.25).T, np.zeros((1, 68))]),
                                                "Pose_Para": np.array([[0.05, yaw, 0.0, 0, 0, 0, 1e-3]])})
    return root


def test_aflw2000_evaluation_reports_nme_in_yaw_bins(tmp_path, checkpoint, capsys):
    path, config = checkpoint
    root = _write_aflw(tmp_path / "aflw")
    out = tmp_path / "report"
    code = E.main(["--dataset", "aflw2000", "--root", str(root), "--checkpoint", str(path), "--out", str(out),
                   "--config", str(config), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples_evaluated"] == 2 and metrics["yaw_source"] == "true"
    fields = metrics["protocols"]["clean"]["coarse"]
    assert fields["nme_yaw_0_30"]["count"] == 1 and fields["nme_yaw_30_60"]["count"] == 1
    assert fields["nme_yaw_60_90"]["count"] == 0 and fields["nme"]["count"] == 2
    assert fields["nme_balanced"]["mean"] == pytest.approx(
        (fields["nme_yaw_0_30"]["mean"] + fields["nme_yaw_30_60"]["mean"]) / 2)
    assert "albedo_error" not in fields and "NME by |yaw|" in (out / "report.md").read_text()
