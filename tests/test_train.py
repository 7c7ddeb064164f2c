import pytest
import torch
from torch import nn

from coarse import coefficients as C
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments import train as train_module
from experiments.config import ConfigError
from experiments.loop import StepSampler
from experiments.objectives import coarse as coarse_objective_module
from experiments.objectives.coarse import CoarseObjective
from experiments.perception_nets import main as perception_main
from experiments.pipeline import FacePipeline
from experiments.train import main, overrides_from, train
from perception.attributes import AttributeNet, load_attribute_net, save_attribute_net
from perception.identity import build_identity_net
from perception.parsing import ParsingNet, load_parsing_net, save_parsing_net
from tests.tiny_runs import save_trained_looking_perception_nets, tiny_config


def _config(tmp_path, **overrides):
    return tiny_config(tmp_path, {"coarse": {"steps": 2, "batch_size": 2, "pool_size": 16,
                                             "warm_start": {"steps": 2, "batch_size": 2}},
                                  "fine": {"enabled": False}}, **overrides)


@pytest.fixture()
def perception_checkpoints(tmp_path):
    save_trained_looking_perception_nets(_config(tmp_path))
    return tmp_path


def test_step_sampler_resumes_with_the_same_batches():
    full = list(StepSampler(100, 4, seed=1, start=0, total=6))
    resumed = list(StepSampler(100, 4, seed=1, start=3, total=6))
    assert resumed == full[12:] and len(full) == 24


def test_step_sampler_shards_each_step_across_processes():
    full = list(StepSampler(100, 4, seed=1, start=0, total=3))
    ranks = [list(StepSampler(100, 4, seed=1, start=0, total=3, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(3):
        assert sorted(ranks[0][2 * step:2 * step + 2] + ranks[1][2 * step:2 * step + 2]) == sorted(full[4 * step:4 * step + 4])


def test_training_runs_both_stages_writes_checkpoints_and_resumes(perception_checkpoints, capsys):
    tmp_path = perception_checkpoints
    summary = train(_config(tmp_path))
    assert set(summary["stages"]) == {"warm_start", "coarse"}
    for name in ("warm_start", "coarse", "last"):
        assert (tmp_path / "ck" / f"{name}.pt").is_file()
    assert list((tmp_path / "runs" / "previews").glob("warm_start_*.png"))
    assert list((tmp_path / "runs" / "previews").glob("coarse_*.png"))
    assert any(p.name.startswith("events") for p in (tmp_path / "runs").iterdir())
    capsys.readouterr()
    summary = train(_config(tmp_path, coarse={"steps": 3}))
    out = capsys.readouterr().out
    assert "[warm_start] done" in out and "[coarse] resuming" in out
    assert summary["stages"]["coarse"]["step"] == 3
    pipeline = FacePipeline.from_checkpoint(tmp_path / "ck" / "last.pt")
    assert pipeline.stages == ("coarse",) and pipeline.input_size == 48


def test_only_a_later_stage_starts_from_the_finished_earlier_one(perception_checkpoints, capsys):
    tmp_path = perception_checkpoints
    with pytest.raises(ConfigError, match="warm_start stage, which has not finished"):
        train(_config(tmp_path), only="coarse")
    summary = train(_config(tmp_path), only="warm_start")
    assert set(summary["stages"]) == {"warm_start"} and not (tmp_path / "ck" / "coarse.pt").exists()
    warm = torch.load(tmp_path / "ck" / "warm_start.pt", weights_only=False)["regressor"]
    started_from = {}
    original = CoarseObjective.__call__

    def spy(self, batch, step=0):
        started_from.setdefault("weights", {k: v.clone() for k, v in self.pipeline.regressor.state_dict().items()})
        return original(self, batch, step)

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CoarseObjective, "__call__", spy)
        summary = train(_config(tmp_path), only="coarse")
    assert "[warm_start] done" in capsys.readouterr().out and set(summary["stages"]) == {"warm_start", "coarse"}
    assert all(torch.equal(started_from["weights"][k], v) for k, v in warm.items())


def test_non_finite_losses_stop_with_a_clear_error_and_keep_a_checkpoint(perception_checkpoints, monkeypatch, capsys):
    tmp_path = perception_checkpoints
    original = CoarseObjective.__call__

    def poisoned(self, batch, step=0):
        total, terms, visuals = original(self, batch, step)
        return total * float("nan"), terms, visuals

    monkeypatch.setattr(CoarseObjective, "__call__", poisoned)
    monkeypatch.setattr(train_module, "load_config",
                        lambda *a, **k: _config(tmp_path, coarse={"steps": 5}, train={"max_bad_steps": 2}))
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "non-finite losses in a row" in err and (tmp_path / "ck" / "coarse.pt").is_file()


def _batchnorm_stats(path):
    state = torch.load(path, weights_only=False)["regressor"]
    return {k: v for k, v in state.items() if "running_" in k}


def test_batchnorm_modes_recalibrate_keep_or_freeze_the_running_statistics(perception_checkpoints, monkeypatch):
    tmp_path = perception_checkpoints
    calls = []
    original = train_module.recalibrate_batchnorm
    monkeypatch.setattr(train_module, "recalibrate_batchnorm", lambda *a, **k: (calls.append(1), original(*a, **k)))
    train(_config(tmp_path, coarse={"steps": 3, "batchnorm": "frozen",
                                    "warm_start": {"steps": 2, "batch_size": 2, "batchnorm": "running"}}))
    assert calls == []  # neither stage recomputes the statistics
    warm, coarse = _batchnorm_stats(tmp_path / "ck" / "warm_start.pt"), _batchnorm_stats(tmp_path / "ck" / "coarse.pt")
    assert all(torch.equal(warm[k], coarse[k]) for k in warm)  # frozen: three steps left them as they were
    trained = torch.load(tmp_path / "ck" / "coarse.pt", weights_only=False)["regressor"]
    started = torch.load(tmp_path / "ck" / "warm_start.pt", weights_only=False)["regressor"]
    assert not torch.equal(trained["backbone.bn1.weight"], started["backbone.bn1.weight"])  # affine weights train
    (tmp_path / "ck" / "coarse.pt").unlink()
    train(_config(tmp_path, coarse={"steps": 3, "batchnorm": "running"}))
    assert calls == [] and not all(torch.equal(warm[k], v) for k, v in _batchnorm_stats(tmp_path / "ck" / "coarse.pt").items())
    (tmp_path / "ck" / "coarse.pt").unlink()
    train(_config(tmp_path, coarse={"steps": 3, "batchnorm": "recalibrate"}))
    assert calls == [1]
    with pytest.raises(ConfigError, match="coarse.batchnorm: 'off' is not one of recalibrate, running, frozen"):
        _config(tmp_path, coarse={"batchnorm": "off"})


def test_batchnorm_frozen_from_freezes_the_running_statistics_from_that_step_on(perception_checkpoints):
    tmp_path = perception_checkpoints
    train(_config(tmp_path, coarse={"steps": 1, "batchnorm": "running"}))  # step 1 updates the statistics
    after_one = _batchnorm_stats(tmp_path / "ck" / "coarse.pt")
    saved = (tmp_path / "ck" / "coarse.pt").read_bytes()
    train(_config(tmp_path, coarse={"steps": 3, "batchnorm": "running", "batchnorm_frozen_from": 2}))  # steps 2, 3
    assert all(torch.equal(after_one[k], v) for k, v in _batchnorm_stats(tmp_path / "ck" / "coarse.pt").items())
    trained = torch.load(tmp_path / "ck" / "coarse.pt", weights_only=False)
    assert trained["step"] == 3
    (tmp_path / "ck" / "coarse.pt").write_bytes(saved)
    train(_config(tmp_path, coarse={"steps": 3, "batchnorm": "running", "batchnorm_frozen_from": 3}))  # step 2 moves them
    assert not all(torch.equal(after_one[k], v) for k, v in _batchnorm_stats(tmp_path / "ck" / "coarse.pt").items())
    with pytest.raises(ConfigError, match="coarse.batchnorm_frozen_from: needs batchnorm 'running'"):
        _config(tmp_path, coarse={"batchnorm": "recalibrate", "batchnorm_frozen_from": 5})
    with pytest.raises(ConfigError, match="coarse.batchnorm_frozen_from: -1 is not a step"):
        _config(tmp_path, coarse={"batchnorm": "running", "batchnorm_frozen_from": -1})


def test_set_overrides_parse_nested_yaml_values():
    assert overrides_from(["coarse.steps=200", "fine.use_faid=false", "name=x"]) == \
        {"coarse": {"steps": 200}, "fine": {"use_faid": False}, "name": "x"}


class FixedCoefficients(nn.Module):
    """A 'regressor' whose output is a free parameter: fitting it is analysis by synthesis."""

    def __init__(self, initial: torch.Tensor):
        super().__init__()
        self.coeffs = nn.Parameter(initial.clone())

    def forward(self, images):
        return self.coeffs.expand(images.shape[0], -1)


def test_losses_fit_an_image_by_analysis_by_synthesis(perception_checkpoints, monkeypatch):
    """Optimising the coefficients themselves through the renderer and losses must fit a SynthFaces image."""
    tmp_path = perception_checkpoints
    cfg = _config(tmp_path)
    data = SynthFaces("val", size=1, config=SynthFacesConfig(image_size=64, occlusion_prob=0.0))
    sample = data[0]
    batch = {"image": sample["image"][None], "landmarks68": sample["landmarks68"][None]}
    start = torch.zeros(1, C.N_COEFFS)
    start[0, C.TRANS] = data.base_translation
    regressor = FixedCoefficients(start)
    pipeline = FacePipeline(data.model, regressor, input_size=64)
    objective = CoarseObjective(pipeline, cfg.losses, build_identity_net("dlib").eval(),
                                load_attribute_net(tmp_path / "attr.pt").eval(), load_parsing_net(tmp_path / "parsing.pt").eval())
    # Use the true skin mask instead of an untrained parsing net.
    monkeypatch.setattr(coarse_objective_module, "skin_mask", lambda net, image: sample["face_mask"][None])
    optimiser = torch.optim.Adam(regressor.parameters(), lr=0.03)
    first = None
    for _ in range(60):
        loss, terms, _ = objective(batch)
        first = first or terms
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert terms["photo"] < 0.6 * first["photo"]
    assert terms["landmark"] < 0.5 * first["landmark"]


def test_perception_nets_command_trains_and_reports(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"perception:\n  attributes_checkpoint: {tmp_path / 'a.pt'}\n  parsing_checkpoint: {tmp_path / 'p.pt'}\n"
        "  attributes_train: {epochs: 1, batch_size: 8, image_size: 48, train_size: 32, val_size: 16}\n"
        "  parsing_train: {epochs: 1, batch_size: 8, image_size: 48, train_size: 32, val_size: 16}\n"
    )
    assert perception_main(["attributes", "--config", str(config)]) == 0
    assert perception_main(["parsing", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "held-out mean accuracy" in out and "held-out mean IoU" in out
    assert (tmp_path / "a.pt").is_file() and (tmp_path / "p.pt").is_file()


def test_half_trained_perception_net_is_trained_again_and_so_is_one_at_another_size(tmp_path, monkeypatch):
    from experiments import perception_nets

    cfg = _config(tmp_path)
    save_attribute_net(AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=48), tmp_path / "attr.pt", {"epochs": 1})
    save_parsing_net(ParsingNet(image_size=48), tmp_path / "parsing.pt", {"epochs": cfg.perception.parsing_train.epochs})
    calls = []
    monkeypatch.setattr(perception_nets, "train_attributes", lambda c: calls.append("attributes"))
    monkeypatch.setattr(perception_nets, "train_parsing", lambda c: calls.append("parsing"))
    perception_nets.ensure_perception_nets(cfg)
    assert calls == ["attributes"]
    assert perception_nets.checkpoint_state(tmp_path / "missing.pt") == (0, None)
    # All epochs, but at another input size than the config's: a stale net, trained again.
    save_parsing_net(ParsingNet(image_size=64), tmp_path / "parsing.pt", {"epochs": cfg.perception.parsing_train.epochs})
    calls.clear()
    perception_nets.ensure_perception_nets(cfg)
    assert calls == ["attributes", "parsing"]
    assert perception_nets.checkpoint_state(tmp_path / "parsing.pt") == (cfg.perception.parsing_train.epochs, 64)
