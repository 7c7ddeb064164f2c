import pytest

from experiments.config import Config, ConfigError, WarmStartConfig, load_config


def test_default_yaml_loads_into_typed_config():
    cfg = load_config("experiments/configs/default.yaml")
    assert isinstance(cfg, Config)
    assert cfg.losses.id == 0.2 and cfg.losses.rob == 0.001
    assert cfg.data.dataset == "synthfaces"


def test_overrides_apply_on_top_of_file():
    cfg = load_config("experiments/configs/default.yaml", {"coarse": {"steps": 3}, "data": {"image_size": 48}})
    assert cfg.coarse.steps == 3 and cfg.data.image_size == 48 and cfg.coarse.batch_size == 16
    # untouched nested stages keep the file's values
    assert cfg.coarse.warm_start == load_config("experiments/configs/default.yaml").coarse.warm_start
    assert cfg.coarse.warm_start.steps != WarmStartConfig().steps


def test_unknown_key_and_wrong_type_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("coarse: {stepz: 3}\n")
    with pytest.raises(ConfigError, match="unknown key.*stepz"):
        load_config(bad)
    bad.write_text("coarse: {steps: many}\n")
    with pytest.raises(ConfigError, match="coarse.steps: expected int"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_paper_recipe_loads_with_the_papers_settings():
    cfg = load_config("experiments/configs/paper.yaml")
    assert cfg.data.image_size == 224 and cfg.fine.batch_size == 16 and cfg.coarse.lr == 1e-4
    assert cfg.coarse.lr_decay == 0.9 and cfg.coarse.steps + cfg.fine.steps == 200_000
    assert cfg.coarse.warm_start.enabled == "off" and cfg.data.dataset == "celeba"


def test_fine_channels_is_a_list_of_positive_integers_and_survives_a_checkpoints_config(tmp_path):
    from dataclasses import asdict

    cfg = load_config(None, {"fine": {"channels": [8, 16, 32, 64]}})
    assert cfg.fine.channels == (8, 16, 32, 64)
    # A checkpoint stores asdict(cfg) and rebuilds the config from it; one written before the field existed has none.
    assert load_config(None, asdict(cfg)).fine.channels == (8, 16, 32, 64)
    older = asdict(cfg)
    del older["fine"]["channels"]
    assert load_config(None, older).fine.channels == (16, 32, 32, 64)
    bad = tmp_path / "bad.yaml"
    for value in ("[]", "[8, 0, 32]", "8", "[8.5, 16]", "[true]"):
        bad.write_text(f"fine: {{channels: {value}}}\n")
        with pytest.raises(ConfigError, match="fine.channels: expected a non-empty list of positive integers"):
            load_config(bad)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-3` as the string "1e-3"; the config means the number
    cfg = load_config("experiments/configs/default.yaml", {"coarse": {"lr": "1e-3", "warm_start": {"lr": "5E-4"}}})
    assert cfg.coarse.lr == 1e-3 and cfg.coarse.warm_start.lr == 5e-4
    good = tmp_path / "good.yaml"
    good.write_text("fine: {lr: 2e-4}\n")
    assert load_config(good).fine.lr == 2e-4
    with pytest.raises(ConfigError, match="coarse.lr: expected float"):
        load_config(None, {"coarse": {"lr": "1e-3x"}})
    with pytest.raises(ConfigError, match="coarse.steps: expected int"):  # only float fields read it as a number
        load_config(None, {"coarse": {"steps": "1e3"}})
