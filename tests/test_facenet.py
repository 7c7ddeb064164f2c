"""Tests for perception.facenet: local-only FaceNet weights and the FaceNet IdentityNet."""
from __future__ import annotations

import pytest
import torch

from perception.facenet import (
    FACENET_WEIGHTS_FILENAME,
    FaceNetWeightsError,
    MissingWeightsError,
    default_facenet_weights_path,
    load_facenet,
)
from perception.identity import build_identity_net


@pytest.fixture(scope="module")
def random_weights_file(tmp_path_factory):
    """A state dict shaped like facenet-pytorch's VGGFace2 file (random values, with the classifier)."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    network = InceptionResnetV1(pretrained=None).eval()
    state = dict(network.state_dict())
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    path = tmp_path_factory.mktemp("facenet") / FACENET_WEIGHTS_FILENAME
    torch.save(state, path)
    return path, network


def test_missing_weights_error_names_the_file_and_where_to_put_it(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        load_facenet(tmp_path)
    message = str(info.value)
    assert FACENET_WEIGHTS_FILENAME in message and str(tmp_path) in message and "\n" not in message
    with pytest.raises(MissingWeightsError):
        build_identity_net("facenet", weights_path=tmp_path / "absent.pt")


def test_default_weights_path_is_facenet_pytorchs_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert default_facenet_weights_path() == tmp_path / "checkpoints" / FACENET_WEIGHTS_FILENAME
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_facenet_weights_path() == tmp_path / "xdg" / "torch" / "checkpoints" / FACENET_WEIGHTS_FILENAME


def test_a_file_that_is_not_a_checkpoint_raises_weights_error(tmp_path):
    bad = tmp_path / FACENET_WEIGHTS_FILENAME
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FaceNetWeightsError, match=FACENET_WEIGHTS_FILENAME):
        load_facenet(bad)


def test_loaded_backbone_equals_facenet_pytorch_on_standardised_input(random_weights_file):
    from facenet_pytorch import fixed_image_standardization

    path, reference = random_weights_file
    backbone = load_facenet(path)
    crops = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone(crops)
        theirs = reference(fixed_image_standardization(crops * 255))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_facenet_identity_net_gives_unit_embeddings_and_input_gradients(random_weights_file):
    path, _ = random_weights_file
    net = build_identity_net("facenet", weights_path=path)
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    embeddings = net(images)
    assert embeddings.shape == (2, 512)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2), atol=1e-5, rtol=1e-5)
    embeddings[:, 0].sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert not any(parameter.requires_grad for parameter in net.parameters())
    features = net.features(images.detach(), ["chip", "repeat_2", "embedding"])
    assert features["chip"].shape == (2, 3, 160, 160) and features["repeat_2"].shape[1] == 896
