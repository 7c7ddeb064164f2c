import pytest

from experiments.config import Config, ConfigError, load_config


def test_default_yaml_loads_into_typed_config():
    cfg = load_config("experiments/configs/default.yaml")
    assert isinstance(cfg, Config)
    assert cfg.losses.id == 0.2 and cfg.losses.rob == 0.001
    assert cfg.data.dataset == "synthfaces"


def test_overrides_apply_on_top_of_file():
    cfg = load_config("experiments/configs/default.yaml", {"train": {"steps": 3}, "data": {"image_size": 64}})
    assert cfg.train.steps == 3 and cfg.data.image_size == 64 and cfg.train.batch_size == 8


def test_unknown_key_and_wrong_type_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {stepz: 3}\n")
    with pytest.raises(ConfigError, match="unknown key.*stepz"):
        load_config(bad)
    bad.write_text("train: {steps: many}\n")
    with pytest.raises(ConfigError, match="train.steps: expected int"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
