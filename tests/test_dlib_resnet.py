"""Tests for perception.dlib_resnet: the pure-Python reader of dlib's face-recognition ResNet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from perception import dlib_resnet
from perception.dlib_resnet import (
    DlibFaceResNet,
    DlibModelError,
    add_zero_padded,
    default_dlib_model_path,
    load_dlib_face_resnet,
    load_dlib_state_dict,
    parse_dlib_network,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faid_cache")


@pytest.fixture(scope="module")
def model(cache_dir) -> DlibFaceResNet:
    return load_dlib_face_resnet(cache_dir=cache_dir)


def _to_tensor(chips_uint8: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips_uint8)).permute(0, 3, 1, 2).float() / 255.0


def test_parser_reads_the_whole_file_as_dlib_anet_type():
    network = parse_dlib_network(default_dlib_model_path())
    kinds = [layer.kind for layer in network.layers]
    assert kinds.count("con") == 29
    assert kinds.count("fc") == 1 and kinds[-1] == "fc"
    assert network.input_size == (150, 150)
    # dlib's input_rgb_image_sized constants for this model (dnn_face_recognition_ex / input.h).
    np.testing.assert_allclose(network.input_mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    strided = [layer.config for layer in network.layers if layer.kind == "con" and layer.config["stride"] == (2, 2)]
    assert all(config["padding"] == (0, 0) for config in strided) and len(strided) == 5


def test_converted_weights_are_cached_atomically_and_reused(tmp_path):
    first = load_dlib_state_dict(cache_dir=tmp_path)
    cached = list(tmp_path.glob("dlib_face_resnet_v*.pt"))
    assert len(cached) == 1 and not list(tmp_path.glob("*.tmp"))
    second = load_dlib_state_dict(cache_dir=tmp_path)
    assert all(torch.equal(first[key], second[key]) for key in first)
    cached[0].write_bytes(b"damaged")
    rebuilt = load_dlib_state_dict(cache_dir=tmp_path)
    assert all(torch.equal(first[key], rebuilt[key]) for key in first)


def test_add_zero_padded_pads_channels_rows_and_columns_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 2.0)
    total = add_zero_padded(a, b)
    assert total.shape == (1, 2, 4, 4)
    assert torch.all(total[0, 0, :3, :3] == 3) and torch.all(total[0, 0, 3, :] == 2)
    assert torch.all(total[0, 1, :3, :3] == 1) and torch.all(total[0, 1, 3, :] == 0)


def test_feature_layers_have_the_dlib_shapes(model):
    with torch.no_grad():
        features = model.features(torch.rand(2, 3, 150, 150), dlib_resnet.FEATURE_LAYERS)
    shapes = {name: tuple(value.shape) for name, value in features.items()}
    assert shapes == {"stem": (2, 32, 35, 35), "stage1": (2, 32, 35, 35), "stage2": (2, 64, 17, 17),
                      "stage3": (2, 128, 8, 8), "stage4": (2, 256, 4, 4), "stage5": (2, 256, 2, 2),
                      "pooled": (2, 256), "descriptor": (2, 128)}


def test_batched_descriptors_equal_one_at_a_time(model):
    chips = torch.rand(3, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = model(chips)
        single = torch.cat([model(chip[None]) for chip in chips])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_missing_file_raises_one_line_dlib_model_error(tmp_path):
    with pytest.raises(DlibModelError) as info:
        load_dlib_state_dict(tmp_path / "nothing.dat", cache_dir=tmp_path)
    message = str(info.value)
    assert "nothing.dat" in message and "\n" not in message


def test_truncated_file_raises_dlib_model_error(tmp_path):
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(default_dlib_model_path().read_bytes()[:5000])
    with pytest.raises(DlibModelError, match="truncated.dat"):
        parse_dlib_network(truncated)


def _parity_chips(dlib) -> list[np.ndarray]:
    """Face chips cut by dlib itself from skimage's astronaut photo, plus non-face chips."""
    import skimage.data

    models = default_dlib_model_path().parent
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    detector = dlib.get_frontal_face_detector()
    photo = skimage.data.astronaut()
    chips = [dlib.get_face_chip(photo, predictor(photo, box), 150, 0.25) for box in detector(photo, 1)]
    assert chips, "dlib found no face in skimage's astronaut photo"
    rng = np.random.default_rng(7)
    chips.append(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
    chips.append(np.ascontiguousarray(skimage.data.coffee()[100:250, 200:350]))
    ramp = np.linspace(0, 255, 150, dtype=np.float64)
    chips.append(np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2,
                           np.full((150, 150), 30.0)], axis=-1).astype(np.uint8))
    return chips


def test_descriptor_matches_dlib_compute_face_descriptor(model):
    dlib = pytest.importorskip("dlib")
    chips = _parity_chips(dlib)
    recogniser = dlib.face_recognition_model_v1(str(default_dlib_model_path()))
    expected = np.array([np.array(recogniser.compute_face_descriptor(chip)) for chip in chips])
    with torch.no_grad():
        ours = model(_to_tensor(chips)).double().numpy()
    cosine = (expected * ours).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.999
    assert np.abs(expected - ours).max() < 1e-3


def test_gzip_compressed_copy_parses_like_the_plain_file(tmp_path):
    import gzip

    compressed = tmp_path / "model.dat.gz"
    compressed.write_bytes(gzip.compress(default_dlib_model_path().read_bytes(), compresslevel=1))
    plain, packed = parse_dlib_network(default_dlib_model_path()), parse_dlib_network(compressed)
    assert [layer.kind for layer in packed.layers] == [layer.kind for layer in plain.layers]
    np.testing.assert_array_equal(packed.layers[-1].arrays["weight"], plain.layers[-1].arrays["weight"])
