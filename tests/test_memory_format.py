"""The perception nets run their convolutions channels-last (NHWC, faster on a CPU): the layout survives a
checkpoint round trip and changes neither the outputs nor the input gradients the losses use."""
import copy

import pytest
import torch

from data.synthfaces import SYNTHFACES_ATTRIBUTES
from perception.attributes import AttributeNet, load_attribute_net, save_attribute_net
from perception.identity import build_identity_net
from perception.parsing import ParsingNet, load_parsing_net, save_parsing_net
from tests.procedural_faces import one_thread  # noqa: F401  (autouse fixture)


def conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() == 4]


def is_channels_last(module: torch.nn.Module) -> bool:
    weights = conv_weights(module)
    return bool(weights) and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def nchw_copy(module: torch.nn.Module) -> torch.nn.Module:
    twin = copy.deepcopy(module)
    for p in conv_weights(twin):
        p.data = p.data.contiguous()
    assert not is_channels_last(twin)
    return twin


def output_and_input_gradient(fn, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.clone().requires_grad_(True)
    out = fn(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_parsing_net_is_channels_last_after_a_checkpoint_round_trip_and_predicts_as_nchw(tmp_path, images):
    torch.manual_seed(0)
    net = ParsingNet(image_size=64).eval()
    assert is_channels_last(net)
    save_parsing_net(net, tmp_path / "parsing.pt")
    loaded = load_parsing_net(tmp_path / "parsing.pt").eval()
    assert is_channels_last(loaded)
    torch.testing.assert_close(loaded(images), nchw_copy(net)(images), atol=1e-4, rtol=1e-4)


def test_attribute_features_and_their_input_gradient_match_nchw_after_a_round_trip(tmp_path, images):
    torch.manual_seed(0)
    net = AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=64).eval()
    save_attribute_net(net, tmp_path / "attributes.pt")
    loaded = load_attribute_net(tmp_path / "attributes.pt").eval()
    assert is_channels_last(loaded.backbone)
    got = output_and_input_gradient(loaded.features, images)
    want = output_and_input_gradient(nchw_copy(net).features, images)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_identity_embedding_and_its_input_gradient_match_a_float64_reference(images):
    """Against float64, not against the float32 NCHW layout: on an Intel Xeon with AMX (2026-11-27) oneDNN's fp32
    NCHW backward gave this net's input gradient 1.3 % off float64 (0.0055 at worst), channels-last 5e-5."""
    net = build_identity_net("dlib").eval()
    assert is_channels_last(net.backbone)
    got = output_and_input_gradient(net, images)
    want = output_and_input_gradient(nchw_copy(net).double(), images.double())
    for a, b in zip(got, want):
        assert float((a.double() - b).norm() / b.norm()) < 2e-4
        torch.testing.assert_close(a, b.float(), atol=3e-5, rtol=1e-4)  # fp32 rounding alone: 1.3e-5 at worst
