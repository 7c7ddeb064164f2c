"""experiments.metrics against known values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from coarse import coefficients as C
from coarse.face_model import assemble_face
from coarse.synthface import build_synthface
from data.synthfaces import template_translation
from experiments import metrics as M


def _photo(size: int = 64) -> torch.Tensor:
    """(1, 3, S, S) astronaut crop in [0, 1]: texture everywhere, so shifts change it."""
    image = torch.from_numpy(data.astronaut()[30:230, 150:350]).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def test_identical_images_score_the_psnr_cap_and_ssim_one():
    image = _photo()
    found = M.image_metrics(image, image.clone(), torch.ones(1, 1, 64, 64))
    assert found["psnr_crop_db"][0] == found["psnr_face_db"][0] == M.PSNR_MAX_DB
    assert found["ssim_crop"][0] == pytest.approx(1.0) and found["ssim_face"][0] == pytest.approx(1.0)


def test_gaussian_noise_of_known_sigma_gives_its_psnr():
    sigma = 0.05
    reference = torch.full((1, 3, 96, 96), 0.5)
    noisy = reference + sigma * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    found = M.image_metrics(reference, noisy, None)
    assert found["psnr_crop_db"][0] == pytest.approx(-20 * math.log10(sigma), abs=0.15)
    assert found["psnr_face_db"][0] == pytest.approx(found["psnr_crop_db"][0])


def test_a_shifted_image_lowers_ssim():
    image = _photo()
    shifted = torch.roll(image, shifts=(2, 2), dims=(2, 3))
    same = M.image_metrics(image, image, None)["ssim_crop"][0]
    moved = M.image_metrics(image, shifted, None)["ssim_crop"][0]
    assert moved < same - 0.1


def test_the_mask_restricts_psnr_and_ssim_to_the_face_region():
    image = _photo()
    damaged = image.clone()
    damaged[..., :, 40:] = 1 - damaged[..., :, 40:]  # change only the right part
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:56, 4:30] = 1  # left part, more than the SSIM window (7) from the change
    found = M.image_metrics(image, damaged, mask)
    assert found["psnr_face_db"][0] == M.PSNR_MAX_DB and found["ssim_face"][0] == pytest.approx(1.0)
    assert found["psnr_crop_db"][0] < 20 and found["ssim_crop"][0] < 0.9
    empty = M.image_metrics(image, damaged, torch.zeros(1, 1, 64, 64))
    assert math.isnan(empty["psnr_face_db"][0]) and math.isnan(empty["ssim_face"][0])


def test_summarise_counts_only_finite_values():
    assert M.summarise([1.0, 3.0, math.nan]) == {"mean": 2.0, "std": 1.0, "count": 2}
    assert M.summarise([math.nan]) == {"mean": None, "std": None, "count": 0}


def test_pose_errors_of_known_angles_in_degrees_wrap_around():
    true = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.radians(179), 0.0]])
    predicted = torch.tensor([[math.radians(5), math.radians(-10), math.radians(3)], [0.0, math.radians(-179), 0.0]])
    errors = M.pose_errors_deg(predicted, true)
    np.testing.assert_allclose(errors["pitch_error_deg"], [5, 0], atol=1e-4)
    np.testing.assert_allclose(errors["yaw_error_deg"], [10, 2], atol=1e-4)
    np.testing.assert_allclose(errors["roll_error_deg"], [3, 0], atol=1e-4)
    np.testing.assert_allclose(errors["pose_error_deg"], [6, 2 / 3], atol=1e-4)


def test_nme_of_a_known_offset_is_normalised_by_the_box():
    g = torch.Generator().manual_seed(0)
    true = torch.rand(1, 68, 2, generator=g) * torch.tensor([100.0, 50.0])
    true[0, 0], true[0, 1] = torch.tensor([0.0, 0.0]), torch.tensor([100.0, 50.0])  # box exactly 100 x 50
    predicted = true + torch.tensor([3.0, 4.0])
    assert M.nme_bbox(predicted, true)[0] == pytest.approx(5 / math.sqrt(100 * 50), rel=1e-6)


def test_landmark_error_is_in_pixels_of_a_224_crop():
    true = torch.zeros(2, 68, 2)
    assert M.landmark_error_px(true + torch.tensor([0.0, 1.0]), true, image_size=112).tolist() == [2.0, 2.0]


def test_yaw_bins_follow_the_3ddfa_boundaries():
    bins = M.yaw_bins(np.array([0.0, 29.9, 30.0, -45.0, 60.0, 90.0, 95.0]))
    assert bins["yaw_0_30"].tolist() == [True, True, False, False, False, False, False]
    assert bins["yaw_30_60"].tolist() == [False, False, True, True, False, False, False]
    assert bins["yaw_60_90"].tolist() == [False, False, False, False, True, True, False]


def test_id_consistency_separates_same_and_different_identities():
    e = torch.eye(4)
    embeddings = torch.stack([e[0], e[0], e[0], e[1], F.normalize(e[1] + 0.5 * e[2], dim=0)])
    found = M.id_consistency(embeddings, [7, 7, 7, 3, 3])
    # sorted labels: 3 then 7
    assert found["same"][1] == pytest.approx(1.0) and found["same"][0] == pytest.approx(1 / math.sqrt(1.25))
    np.testing.assert_allclose(found["different"], [0.0, 0.0], atol=1e-7)


@pytest.fixture(scope="module")
def small_face():
    model = build_synthface(resolution=25)
    return model, template_translation(model)


def _visible(model, translation, yaw_deg: float, size: int = 64) -> torch.Tensor:
    coeffs = torch.zeros(1, C.N_COEFFS)
    coeffs[0, C.TRANS] = translation
    coeffs[0, C.ANGLE.start + 1] = math.radians(yaw_deg)
    face = assemble_face(model, coeffs, size)
    return M.visible_vertices(face.vertices, face.normals, face.screen, model.triangles, model.skin_mask, size)[0]


def test_visible_vertices_are_skin_facing_the_camera_and_unhidden(small_face):
    model, translation = small_face
    frontal, turned, away = (_visible(model, translation, yaw) for yaw in (0.0, 70.0, 180.0))
    skin = int(model.skin_mask.sum())
    assert frontal.sum() > 0.9 * skin and not frontal[~model.skin_mask].any()
    assert 0 < turned.sum() < 0.8 * frontal.sum()
    assert not away.any()


def test_albedo_error_averages_over_visible_vertices_only():
    true = torch.full((1, 4, 3), 0.5)
    predicted = true.clone()
    predicted[0, 2:] = 0.9  # wrong where invisible
    predicted[0, 1] = 0.6
    visible = torch.tensor([[True, True, False, False]])
    assert M.albedo_error(predicted, true, visible)[0] == pytest.approx(0.05)
    assert math.isnan(M.albedo_error(predicted, true, torch.zeros(1, 4, dtype=torch.bool))[0])
