import pytest
import torch

from coarse.regressor import CheckpointError, CoarseRegressor, load_deep3d_checkpoint, resolve_precision


@pytest.fixture(scope="module")
def regressor():
    torch.manual_seed(0)
    return CoarseRegressor(imagenet_weights=False).eval()


def test_untrained_regressor_outputs_zero_coefficients(regressor):
    with torch.no_grad():
        out = regressor(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 257)
    assert torch.count_nonzero(out) == 0


def test_heads_receive_gradients(regressor):
    regressor.zero_grad()
    regressor(torch.rand(1, 3, 64, 64)).sum().backward()
    assert regressor.final_layers[0].weight.grad.abs().sum() > 0


def test_deep3d_checkpoint_round_trips(tmp_path, regressor):
    source = CoarseRegressor(imagenet_weights=False)
    for layer in source.final_layers:
        torch.nn.init.normal_(layer.weight)
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = CoarseRegressor(imagenet_weights=False)
    load_deep3d_checkpoint(target, path)
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_checkpoints_give_clear_errors(tmp_path, regressor):
    with pytest.raises(CheckpointError, match="not found"):
        load_deep3d_checkpoint(regressor, tmp_path / "missing.pth")
    path = tmp_path / "wrong.pth"
    torch.save({"net_recon": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        load_deep3d_checkpoint(regressor, path)


def test_missing_imagenet_weights_warns_instead_of_downloading(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.warns(UserWarning, match="random weights"):
        CoarseRegressor(imagenet_weights="auto")


def test_bf16_backbone_matches_fp32_closely_and_returns_float32():
    torch.manual_seed(1)
    regressor = CoarseRegressor(imagenet_weights=False).eval()
    for layer in regressor.final_layers:
        torch.nn.init.normal_(layer.weight, std=0.01)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full = regressor(images)
        regressor.precision = "bf16"
        half = regressor(images)
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)  # the backbone did run in bfloat16
    assert torch.allclose(half, full, rtol=0.05, atol=0.05 * float(full.abs().max()))


def test_precision_auto_keeps_fp32_on_cuda_and_rejects_unknown_names():
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16")


def test_precision_auto_is_resolved_for_the_device_of_each_call(monkeypatch):
    """A regressor built with "auto" decides per forward call, from the input's device: bf16 on a CPU with native
    bfloat16, fp32 on one without (and on CUDA, by resolve_precision), not once for the CPU at construction."""
    import coarse.regressor as regressor_module

    torch.manual_seed(0)
    regressor = CoarseRegressor(imagenet_weights=False, precision="auto").eval()
    for layer in regressor.final_layers:
        torch.nn.init.normal_(layer.weight, std=0.01)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        regressor.precision = "fp32"
        full = regressor(images)
        regressor.precision = "auto"
        monkeypatch.setattr(regressor_module, "native_bf16", lambda: False)
        assert torch.equal(regressor(images), full)
        monkeypatch.setattr(regressor_module, "native_bf16", lambda: True)
        assert not torch.equal(regressor(images), full)
    with pytest.raises(ValueError, match="precision"):
        CoarseRegressor(imagenet_weights=False, precision="fp16")
