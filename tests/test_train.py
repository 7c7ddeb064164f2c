import pytest
import torch

from coarse import coefficients as C
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments import train as train_module
from experiments.config import load_config
from experiments.perception_nets import main as perception_main
from experiments.train import CoarseObjective, StepSampler, main, train
from perception.attributes import AttributeNet, save_attribute_net
from perception.identity import build_identity_net
from perception.parsing import ParsingNet, save_parsing_net


def _config(tmp_path, **train):
    overrides = {
        "name": "test",
        "data": {"image_size": 64, "train_size": 16, "num_workers": 0},
        "perception": {"attributes_checkpoint": str(tmp_path / "attr.pt"), "parsing_checkpoint": str(tmp_path / "parsing.pt")},
        "train": {"steps": 2, "batch_size": 2, "log_dir": str(tmp_path / "runs"), "checkpoint_dir": str(tmp_path / "ck"),
                  "image_every": 2, "checkpoint_every": 1, "log_every": 1, **train},
    }
    return load_config("experiments/configs/default.yaml", overrides)


@pytest.fixture()
def perception_checkpoints(tmp_path):
    torch.manual_seed(0)
    finished = {"epochs": _config(tmp_path).perception.attributes_train.epochs}  # counts as fully trained
    save_attribute_net(AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=64), tmp_path / "attr.pt", finished)
    save_parsing_net(ParsingNet(image_size=64), tmp_path / "parsing.pt", finished)
    return tmp_path


def test_step_sampler_resumes_with_the_same_batches():
    full = list(StepSampler(100, 4, seed=1, start=0, total=6))
    resumed = list(StepSampler(100, 4, seed=1, start=3, total=6))
    assert resumed == full[12:] and len(full) == 24


def test_training_writes_checkpoint_and_resumes(perception_checkpoints, capsys):
    tmp_path = perception_checkpoints
    cfg = _config(tmp_path)
    summary = train(cfg)
    assert summary["step"] == 2 and (tmp_path / "ck" / "last.pt").is_file()
    assert list((tmp_path / "runs" / "previews").glob("*.png"))
    assert any(p.name.startswith("events") for p in (tmp_path / "runs").iterdir())
    capsys.readouterr()
    summary = train(_config(tmp_path, steps=3))
    assert "resuming from" in capsys.readouterr().out and summary["step"] == 3


def test_non_finite_losses_stop_with_a_clear_error_and_keep_a_checkpoint(perception_checkpoints, monkeypatch, capsys):
    tmp_path = perception_checkpoints
    original = CoarseObjective.__call__

    def poisoned(self, coeffs, batch):
        total, terms, visuals = original(self, coeffs, batch)
        return total * float("nan"), terms, visuals

    monkeypatch.setattr(CoarseObjective, "__call__", poisoned)
    monkeypatch.setattr(train_module, "load_config", lambda *a, **k: _config(tmp_path, steps=5, max_bad_steps=2))
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "non-finite losses in a row" in err and (tmp_path / "ck" / "last.pt").is_file()


def test_losses_fit_an_image_by_analysis_by_synthesis(perception_checkpoints, monkeypatch):
    """Optimising the coefficients themselves through the renderer and losses must fit a SynthFaces image."""
    tmp_path = perception_checkpoints
    cfg = _config(tmp_path)
    data = SynthFaces("val", size=1, config=SynthFacesConfig(image_size=64, occlusion_prob=0.0))
    sample = data[0]
    batch = {"image": sample["image"][None], "landmarks5": sample["landmarks5"][None]}
    from perception.attributes import load_attribute_net
    from perception.parsing import load_parsing_net

    objective = CoarseObjective(cfg, data.model, build_identity_net("dlib").eval(),
                                load_attribute_net(tmp_path / "attr.pt").eval(), load_parsing_net(tmp_path / "parsing.pt").eval())
    # Use the true skin mask instead of an untrained parsing net.
    monkeypatch.setattr(train_module, "skin_mask", lambda net, image: sample["face_mask"][None])
    coeffs = torch.zeros(1, C.N_COEFFS)
    coeffs[0, C.TRANS] = data.base_translation
    coeffs.requires_grad_()
    optimiser = torch.optim.Adam([coeffs], lr=0.03)
    first = None
    for _ in range(60):
        loss, terms, _ = objective(coeffs, batch)
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


def test_half_trained_perception_net_is_trained_again(tmp_path, monkeypatch):
    from experiments import perception_nets

    cfg = _config(tmp_path)
    save_attribute_net(AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=64), tmp_path / "attr.pt", {"epochs": 1})
    save_parsing_net(ParsingNet(image_size=64), tmp_path / "parsing.pt", {"epochs": cfg.perception.parsing_train.epochs})
    calls = []
    monkeypatch.setattr(perception_nets, "train_attributes", lambda c: calls.append("attributes"))
    monkeypatch.setattr(perception_nets, "train_parsing", lambda c: calls.append("parsing"))
    perception_nets.ensure_perception_nets(cfg)
    assert calls == ["attributes"]
    assert perception_nets.trained_epochs(tmp_path / "missing.pt") == 0
