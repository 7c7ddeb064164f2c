"""Tests for perception.identity: aligned-crop identity embeddings (dlib port; FaceNet in test_facenet.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from perception.dlib_resnet import default_dlib_model_path
from perception.identity import (
    DEEP3D_TEMPLATE_224,
    DLIB_MEAN_FACE_5,
    IdentityNet,
    build_identity_net,
    crop_and_resize,
    dlib_chip_box,
    fit_scale_translation,
)

# Eye centres, nose tip and mouth corners of skimage.data.astronaut(), measured with dlib's 68-point
# shape predictor (means of points 36-41 and 42-47, points 30, 48, 54), in pixels.
ASTRONAUT_LANDMARKS5 = np.array([[203.17, 101.5], [246.5, 104.17], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])


def _align(photo: np.ndarray, landmarks5: np.ndarray, shift=(0.0, 0.0), size: int = 224) -> torch.Tensor:
    """Deep3D-style alignment (scale + translation onto the 224 template), with skimage. -> (1, 3, size, size)."""
    from skimage.transform import AffineTransform, warp

    scale, tx, ty = fit_scale_translation(landmarks5, DEEP3D_TEMPLATE_224)
    to_aligned = np.array([[scale, 0, tx + shift[0]], [0, scale, ty + shift[1]], [0, 0, 1]])
    to_output = np.diag([size / 224, size / 224, 1.0]) @ to_aligned
    aligned = warp(photo, AffineTransform(matrix=np.linalg.inv(to_output)), output_shape=(size, size), order=1)
    return torch.from_numpy(aligned).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="module")
def dlib_net(tmp_path_factory) -> IdentityNet:
    return build_identity_net("dlib", cache_dir=tmp_path_factory.mktemp("faid_cache"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def test_embeddings_are_unit_length_with_dimension_128(dlib_net):
    with torch.no_grad():
        embeddings = dlib_net(torch.rand(3, 3, 96, 96))
    assert embeddings.shape == (3, 128)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))


def test_gradients_reach_the_input_but_not_the_frozen_weights(dlib_net, astronaut):
    image = _align(astronaut, ASTRONAUT_LANDMARKS5, size=96).requires_grad_(True)
    target = torch.nn.functional.normalize(torch.randn(1, 128, generator=torch.Generator().manual_seed(0)), dim=1)
    loss = 1 - (dlib_net(image) * target).sum()
    loss.backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    assert all(not parameter.requires_grad and parameter.grad is None for parameter in dlib_net.parameters())


def test_same_face_variants_are_closer_than_other_faces(dlib_net, astronaut):
    import skimage.data

    reference = _align(astronaut, ASTRONAUT_LANDMARKS5)
    same_person = torch.cat([
        reference.flip(-1),                                               # mirror image
        _align(astronaut, ASTRONAUT_LANDMARKS5, shift=(6.0, -4.0)),        # 6 px / 4 px misalignment
        torch.nn.functional.interpolate(_align(astronaut, ASTRONAUT_LANDMARKS5, size=96), size=224,
                                        mode="bilinear", align_corners=False),  # low resolution
    ])
    lfw_faces = np.load(os.path.join(os.path.dirname(skimage.data.__file__), "lfw_subset.npy"))[:20]
    other_people = torch.from_numpy(lfw_faces).float()[:, None].expand(-1, 3, -1, -1)  # 25 px grey LFW crops
    grey_reference = reference.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    with torch.no_grad():
        anchor, grey_anchor = dlib_net(torch.cat([reference, grey_reference]))
        same_cos = dlib_net(same_person) @ anchor
        other = dlib_net(other_people)
    other_cos = torch.cat([other @ anchor, other @ grey_anchor])
    assert same_cos.min() > other_cos.max()


def test_chip_box_maps_the_template_onto_dlibs_mean_face():
    x0, y0, side, _ = dlib_chip_box()
    chip_per_aligned = 150 / side
    # Template landmarks (index units) -> chip index units -> dlib mean-shape units with padding 0.25.
    chip = (DEEP3D_TEMPLATE_224 + 0.5 - np.array([x0, y0])) * chip_per_aligned - 0.5
    mean_shape = chip / 150 * 1.5 - 0.25
    errors_in_chip_pixels = np.abs(mean_shape - DLIB_MEAN_FACE_5) * 100
    assert errors_in_chip_pixels[:2].max() < 1.0  # eyes
    assert errors_in_chip_pixels.max() < 3.0      # nose tip and mouth corners (shape differences)


def test_fit_scale_translation_recovers_a_known_transform():
    source = np.random.default_rng(0).uniform(0, 200, (5, 2))
    scale, tx, ty = fit_scale_translation(source, 0.75 * source + np.array([3.0, -8.0]))
    np.testing.assert_allclose((scale, tx, ty), (0.75, 3.0, -8.0), atol=1e-9)


def test_crop_of_the_whole_frame_returns_the_image():
    image = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(crop_and_resize(image, (0.0, 0.0, 224.0, 224.0), 224), image, atol=1e-4, rtol=0)
    shifted = crop_and_resize(image, (10.0, 20.0, 100.0, 100.0), 100)
    torch.testing.assert_close(shifted, image[:, :, 20:120, 10:110], atol=1e-4, rtol=0)


def test_features_return_the_requested_layers(dlib_net):
    with torch.no_grad():
        features = dlib_net.features(torch.rand(2, 3, 224, 224), ["chip", "stage3", "embedding"])
    assert list(features) == ["chip", "stage3", "embedding"]
    assert features["chip"].shape == (2, 3, 150, 150)
    assert features["stage3"].shape == (2, 128, 8, 8)
    assert features["embedding"].shape == (2, 128)
    with pytest.raises(ValueError, match="unknown"):
        dlib_net.features(torch.rand(1, 3, 224, 224), ["conv99"])


def test_train_mode_keeps_the_backbone_in_eval_mode(dlib_net):
    dlib_net.train()
    assert dlib_net.training and not dlib_net.backbone.training
    dlib_net.eval()


def test_unknown_identity_net_name_raises():
    with pytest.raises(ValueError, match="dlib"):
        build_identity_net("arcface")


def test_dlib_chip_framing_gives_dlibs_own_descriptor(dlib_net, astronaut):
    dlib = pytest.importorskip("dlib")
    models = default_dlib_model_path().parent
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    box = dlib.get_frontal_face_detector()(astronaut, 1)[0]
    recogniser = dlib.face_recognition_model_v1(str(default_dlib_model_path()))
    dlib_descriptor = torch.tensor(recogniser.compute_face_descriptor(astronaut, predictor(astronaut, box)))
    with torch.no_grad():
        ours = dlib_net.features(_align(astronaut, ASTRONAUT_LANDMARKS5), ["descriptor"])["descriptor"][0]
    # dlib calls two descriptors the same person below a distance of 0.6; the framing should cost far less.
    assert torch.dist(ours.double(), dlib_descriptor.double()) < 0.3


def test_template_is_the_one_data_align_crops_to():
    align = pytest.importorskip("data.align")
    np.testing.assert_allclose(DEEP3D_TEMPLATE_224, align.TEMPLATE_LANDMARKS5, atol=1e-4)
