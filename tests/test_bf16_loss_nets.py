"""train.precision "bf16" runs the frozen identity and attribute nets in bfloat16 too (a training-time speed-up):
their features and the input gradients that train the regressor stay close to float32's, come back in float32,
and evaluation, which builds its own nets, keeps float32."""
import pytest
import torch
import torch.nn.functional as F

from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from perception.attributes import AttributeNet
from perception.identity import build_identity_net
from tests.procedural_faces import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    data = SynthFaces("train", size=4, config=SynthFacesConfig(image_size=64))
    return torch.stack([data[i]["image"] for i in range(4)])


def features_and_input_gradient(fn, images):
    x = images.clone().requires_grad_(True)
    out = fn(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("net_name", ["dlib", "attributes"])
def test_bf16_features_and_input_gradients_stay_close_to_float32(net_name, faces):
    torch.manual_seed(0)
    if net_name == "dlib":
        net = build_identity_net("dlib").eval()
        fn = net
    else:
        net = AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=64).eval().requires_grad_(False)
        fn = net.features
    assert net.precision == "fp32"
    full, full_grad = features_and_input_gradient(fn, faces)
    net.precision = "bf16"
    half, half_grad = features_and_input_gradient(fn, faces)
    assert half.dtype == half_grad.dtype == torch.float32
    assert not torch.equal(half, full)  # it did run in bfloat16
    assert F.cosine_similarity(half, full).min() > 0.999
    # bfloat16 keeps 8 bits of mantissa: the gradients agree in direction, not to the last digit (on 32 val renders
    # with the trained attribute net: cosine 0.95-0.96 on average, 0.86 at the lowest).
    gradient_cosine = F.cosine_similarity(half_grad.flatten(1), full_grad.flatten(1))
    assert gradient_cosine.mean() > 0.9 and gradient_cosine.min() > 0.8


def test_training_sets_every_perception_net_to_the_training_precision(tmp_path, monkeypatch):
    import coarse.regressor as regressor_module
    from experiments.train import perception_nets
    from tests.tiny_runs import save_trained_looking_perception_nets, tiny_config

    cfg = tiny_config(tmp_path, {})
    save_trained_looking_perception_nets(cfg)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(regressor_module, "native_bf16", lambda native=native: native)
        assert [net.precision for net in perception_nets(cfg, torch.device("cpu"))] == [expected] * 3
