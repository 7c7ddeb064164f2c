import signal

import pytest
import torch
from torch import nn

from experiments.config import ConfigError, load_config
from experiments.loop import WeightAverage, run_stage


class LineFit:
    """A toy stage: fit y = 3x - 1 with one linear layer (its loss is noisy, so its weights wander)."""

    name = "toy"

    def __init__(self, stop_at: int | None = None):
        torch.manual_seed(0)
        self.net = nn.Linear(1, 1)
        self.stop_at, self.ended_with = stop_at, None

    def modules(self):
        return {"net": self.net}

    def param_groups(self):
        return [{"params": list(self.net.parameters())}]

    def step(self, batch, step):
        if step == self.stop_at:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would: the loop checkpoints after this step
        x = batch["x"]
        loss = (self.net(x) - (3 * x - 1)).pow(2).mean()
        return loss, {"mse": float(loss.detach())}, {}

    def preview(self, batch, visuals):
        return [torch.zeros(3, 4, 4)], 1, "none"

    def on_end(self):
        self.ended_with = self.net.weight.detach().clone()


def _batches(start):
    for step in range(start, 12):
        g = torch.Generator().manual_seed(step)
        yield {"x": torch.randn(4, 1, generator=g)}


def _config(tmp_path, ema):
    cfg = load_config(None, {"train": {"checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs"),
                                       "image_every": 100, "checkpoint_every": 100}})
    stage_cfg = load_config(None, {"coarse": {"steps": 12, "lr": 0.05, "ema": ema}}).coarse
    return cfg, stage_cfg


def test_stage_ends_on_the_moving_average_of_its_weights(tmp_path):
    cfg, stage_cfg = _config(tmp_path, ema=0.8)
    stage = LineFit()
    trajectory = []
    original = torch.optim.Adam.step

    def recording_step(optimiser, *args, **kwargs):
        out = original(optimiser, *args, **kwargs)
        trajectory.append(stage.net.weight.detach().clone())
        return out

    start = stage.net.weight.detach().clone()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        run_stage(stage, _batches, stage_cfg, cfg, torch.device("cpu"))
    expected = start
    for weight in trajectory:
        expected = 0.8 * expected + 0.2 * weight
    assert len(trajectory) == 12
    assert torch.allclose(stage.net.weight, expected, atol=1e-6)
    assert not torch.allclose(expected, trajectory[-1], atol=1e-3)  # the average really differs from the last step
    assert torch.equal(stage.ended_with, stage.net.weight)  # on_end (BatchNorm recalibration) sees the average
    saved = torch.load(tmp_path / "ck" / "toy.pt", weights_only=False)
    assert torch.allclose(saved["net"]["weight"], expected, atol=1e-6)


def test_an_interrupted_average_resumes_to_the_same_weights(tmp_path):
    cfg, stage_cfg = _config(tmp_path / "a", ema=0.8)
    whole = LineFit()
    run_stage(whole, _batches, stage_cfg, cfg, torch.device("cpu"))

    cfg, stage_cfg = _config(tmp_path / "b", ema=0.8)
    first = LineFit(stop_at=5)
    assert run_stage(first, _batches, stage_cfg, cfg, torch.device("cpu"))["stopped"]
    second = LineFit()
    run_stage(second, _batches, stage_cfg, cfg, torch.device("cpu"))
    assert torch.allclose(second.net.weight, whole.net.weight, atol=1e-6)
    assert torch.allclose(second.net.bias, whole.net.bias, atol=1e-6)


def test_a_finished_averaged_stage_keeps_one_copy_and_runs_on_from_the_average(tmp_path):
    cfg, stage_cfg = _config(tmp_path, ema=0.8)
    run_stage(LineFit(), _batches, stage_cfg, cfg, torch.device("cpu"))
    saved = torch.load(tmp_path / "ck" / "toy.pt", weights_only=False)
    assert "ema" not in saved  # the modules hold the average: no second copy of the weights
    longer = load_config(None, {"coarse": {"steps": 13, "lr": 0.05, "ema": 0.8}}).coarse
    stage, seen = LineFit(), {}
    original = stage.step

    def step(batch, number):
        seen.setdefault("weight", stage.net.weight.detach().clone())
        return original(batch, number)

    stage.step = step
    run_stage(stage, lambda start: iter([{"x": torch.ones(4, 1)}]), longer, cfg, torch.device("cpu"))
    assert torch.equal(seen["weight"], saved["net"]["weight"])


def test_weight_average_tracks_only_trainable_parameters():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net[0].bias.requires_grad_(False)
    average = WeightAverage({"net": net}, 0.5)
    assert set(average.average["net"]) == {"0.weight", "1.weight", "1.bias"}
    with torch.no_grad():
        net[0].weight.add_(2.0)
    before = average.average["net"]["0.weight"].clone()
    average.update()
    assert torch.allclose(average.average["net"]["0.weight"], before + 1.0)


def test_ema_outside_zero_to_one_is_refused_with_the_field_named():
    with pytest.raises(ConfigError, match=r"coarse\.warm_start\.ema: 1\.0 is not a decay"):
        load_config(None, {"coarse": {"warm_start": {"ema": 1.0}}})
