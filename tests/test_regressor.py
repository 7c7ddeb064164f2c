import pytest
import torch

from coarse.regressor import CheckpointError, CoarseRegressor, load_deep3d_checkpoint


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
