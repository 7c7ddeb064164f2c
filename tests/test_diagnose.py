"""experiments.diagnose: coefficient groups swapped for the truth, the per-face gain, the gain floor, the CLI."""
import json
from dataclasses import asdict

import pytest
import torch

from coarse import coefficients as C
from coarse.regressor import CoarseRegressor
from coarse.synthface import build_synthface
from data.samples import collate_face_samples
from experiments import diagnose as D
from experiments.config import load_config
from experiments.evaluate import synthfaces_test_set
from experiments.pipeline import CHECKPOINT_FORMAT, FacePipeline
from perception.training import save_checkpoint_atomic
from tests.test_warm_start import Fixed  # a regressor that predicts the same coefficients for every batch

FACES = 4


@pytest.fixture(scope="module")
def faces():
    model = build_synthface()
    dataset = synthfaces_test_set(model, size=FACES, image_size=D.IMAGE_SIZE, split="val")
    batch = collate_face_samples([dataset[i] for i in range(FACES)])
    return model, dataset, batch


def test_with_true_replaces_exactly_the_named_groups():
    predicted, true = torch.zeros(2, C.N_COEFFS), torch.arange(2 * C.N_COEFFS, dtype=torch.float32).view(2, -1)
    assert torch.equal(D.with_true(predicted, true, list(D.GROUPS)), true)
    assert torch.equal(D.with_true(predicted, true, []), predicted)
    mixed = D.with_true(predicted, true, ["light", "pose"])
    changed = (mixed != 0).any(0)
    assert changed[C.GAMMA].all() and changed[C.ANGLE].all()
    assert int(changed.sum()) == C.N_GAMMA + C.N_ANGLE
    assert not torch.equal(predicted, mixed)  # the input is not modified in place
    assert not predicted.any()


def test_best_gain_removes_a_gain_per_face_and_channel_and_ignores_hidden_vertices():
    g = torch.Generator().manual_seed(0)
    true = torch.rand(2, 50, 3, generator=g) * 0.8 + 0.1
    gains = torch.tensor([[1.3, 0.7, 1.1], [0.9, 1.2, 0.8]])
    visible = torch.rand(2, 50, generator=g) > 0.3
    predicted = true / gains.unsqueeze(1)
    predicted[~visible] = 5.0  # garbage where nothing is seen
    corrected = D.best_gain(predicted, true, visible)
    assert torch.allclose(corrected[visible], true[visible], atol=1e-5)
    assert not torch.allclose(predicted[visible], true[visible], atol=1e-2)


def test_the_gain_predictor_recovers_an_exact_log_linear_law_and_refuses_too_few_faces():
    g = torch.Generator().manual_seed(1)
    colour = torch.rand(40, 3, generator=g) * 0.6 + 0.2
    law = torch.tensor([[-0.2, -0.4, -0.6], [0.5, 0.1, 0.0], [0.0, 0.3, 0.1], [0.1, 0.0, 0.4]])
    albedo = (law[0] + colour.log() @ law[1:]).exp()
    albedo[3] = float("nan")  # a face with no visible skin is left out, not fatal
    predictor = D.GainPredictor.fit(albedo, colour)
    assert torch.allclose(predictor.coefficients, law, atol=1e-4)
    assert torch.allclose(predictor(colour[4:9]), albedo[4:9], rtol=1e-4)
    with pytest.raises(D.DiagnosisError, match="fit-faces"):
        D.GainPredictor.fit(albedo[:7], colour[:7])


def _constant_gain():
    """A predictor that makes the same guess for every face (intercepts only): no use of the photo."""
    return D.GainPredictor(torch.cat([torch.full((1, 3), -0.6), torch.zeros(3, 3)]))


@pytest.fixture(scope="module")
def fitted_gain(faces):
    model = faces[0]
    train = synthfaces_test_set(model, size=32, image_size=D.IMAGE_SIZE, split="train")
    return D.fit_gain_predictor(model, train, 32, progress=False)


def test_a_pipeline_that_predicts_the_truth_has_no_error_left_in_any_row(faces):
    model, dataset, batch = faces
    pipeline = FacePipeline(model, Fixed(batch["coeffs"].float()), 64)
    _, true_mean, _ = D._truth(model, batch)
    exact_gain = lambda colour: true_mean  # noqa: E731  an oracle of the gain too: nothing left to guess
    result = D.diagnose(pipeline, dataset, exact_gain, FACES, batch_size=FACES, progress=False)
    assert result["samples"] == FACES
    assert max(result["landmarks_px"].values()) < 1e-3
    psnr = result["psnr_db"]
    assert all(abs(value - psnr["true"]) < 1e-6 for value in psnr.values()) and psnr["true"] > 30
    albedo = result["albedo"]
    assert albedo["coarse"] < albedo["mean_face"]  # the true albedo coefficients: only the detail outside the PCA span
    assert albedo["coarse_gain"] < 0.01 and "fine" not in albedo
    # Predicting the truth, the photo unwraps through the true geometry either way; dividing the render by its own
    # shading gives back the albedo, up to the sampling at the 64-px input size.
    assert albedo["unwrapped_predicted"] == pytest.approx(albedo["unwrapped_true"], abs=1e-6)
    assert albedo["unwrapped_true"] < albedo["mean_face"]
    assert albedo["oracle_gain_floor"] < 1e-6
    budget = result["identity"]["first_modes_true_landmarks_px"]
    assert budget[str(C.N_ID)] < 1e-3 and budget["0"] > 1.0 and budget["10"] < budget["0"]


def test_identity_modes_of_the_truth_correlate_perfectly_and_the_mean_face_does_not(faces):
    model = faces[0]
    # One view per identity, so that the identity coefficients vary across the faces.
    dataset = synthfaces_test_set(model, size=FACES, image_size=D.IMAGE_SIZE, split="val", views_per_identity=1)
    batch = collate_face_samples([dataset[i] for i in range(FACES)])
    exact = D.diagnose(FacePipeline(model, Fixed(batch["coeffs"].float()), 64), dataset, _constant_gain(), FACES,
                       batch_size=FACES, progress=False)["identity"]["correlation"]
    assert len(exact) == C.N_ID and min(exact) > 0.999
    wrong = batch["coeffs"].float().clone()
    wrong[:, C.ID] = wrong[:, C.ID].flip(0)  # every face gets another face's identity
    swapped = D.diagnose(FacePipeline(model, Fixed(wrong), 64), dataset, _constant_gain(), FACES,
                         batch_size=FACES, progress=False)["identity"]["correlation"]
    assert max(swapped) < 0.999


def test_first_modes_true_keeps_exactly_the_first_k_identity_modes_and_correlations_are_pearson():
    true = torch.randn(3, C.N_COEFFS)
    kept = D.first_modes_true(true, 5)
    assert torch.equal(kept[:, :C.ID.start + 5], true[:, :C.ID.start + 5]) and not kept[:, C.ID.start + 5:C.ID.stop].any()
    assert torch.equal(kept[:, C.ID.stop:], true[:, C.ID.stop:])
    x = torch.randn(50, 2)
    corr = D.mode_correlations(torch.stack([2 * x[:, 0] + 1, -x[:, 1]], 1), x)
    assert corr == pytest.approx([1.0, -1.0], abs=1e-6)


def test_the_mean_face_loses_landmarks_through_its_pose_and_never_through_its_light(faces, fitted_gain):
    model, dataset, batch = faces
    pipeline = FacePipeline(model, Fixed(torch.zeros(FACES, C.N_COEFFS)), 64)
    result = D.diagnose(pipeline, dataset, fitted_gain, FACES, batch_size=FACES, progress=False)
    landmarks, psnr = result["landmarks_px"], result["psnr_db"]
    assert landmarks["predicted"] > 5 and landmarks["true"] < 1e-3
    assert landmarks["only pose predicted"] > 1 and landmarks["only translation predicted"] > 1
    assert landmarks["only light predicted"] < 1e-3 and landmarks["only albedo predicted"] < 1e-3
    assert landmarks["pose true"] < landmarks["predicted"]
    assert psnr["only light predicted"] < psnr["true"] - 3  # the default light is not the faces' light
    # The mean face's albedo, once its gain is right, is much closer. The oracle knows the pattern and guesses
    # the gain from the photo with a law fitted on train faces; a guess that ignores the photo does worse.
    albedo = result["albedo"]
    assert albedo["mean_face_gain"] < 0.6 * albedo["mean_face"]
    # Unwrapped through the mean face's wrong pose and light the photo reads worse than through the true ones.
    assert albedo["unwrapped_predicted"] > albedo["unwrapped_true"] + 0.01
    constant = D.diagnose(pipeline, dataset, _constant_gain(), FACES, batch_size=FACES, progress=False)["albedo"]
    assert constant["oracle_gain_floor"] > 1.2 * albedo["oracle_gain_floor"]  # a fit that ignores the photo is worse


def test_cli_writes_the_report_and_refuses_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    cfg = load_config(None, {"perception": {"parsing_checkpoint": str(tmp_path / "no_parsing.pt")}})
    path = tmp_path / "last.pt"
    save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "config": asdict(cfg),
                            "regressor": CoarseRegressor(imagenet_weights=False).state_dict(), "stage": "coarse"}, path)
    out = tmp_path / "diagnosis"
    assert D.main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make train" in err and not out.exists()
    code = D.main(["--checkpoint", str(path), "--out", str(out), "--limit", "2", "--fit-faces", "16", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "diagnosis.json").read_text())
    assert result["samples"] == 2 and result["fit_faces"] == 16 and result["checkpoint"] == str(path)
    report = (out / "report.md").read_text()
    assert "| light |" in report and "oracle" in report and "first k modes true" in report and (out / "diagnosis.png").stat().st_size > 1000
