"""A `make train` small enough for a test: every stage a step or two at 48 px, and perception nets that count as
trained (untrained weights saved with the config's epoch count), so that `train` goes straight to the stages."""
import torch

from data.synthfaces import SYNTHFACES_ATTRIBUTES
from experiments.config import Config, load_config
from perception.attributes import AttributeNet, save_attribute_net
from perception.parsing import ParsingNet, save_parsing_net

SIZE = 48


def tiny_config(tmp_path, sections: dict, **overrides) -> Config:
    """The default config with every file under tmp_path, 48-px images, 16 training faces, no held-out table,
    and a checkpoint each step; `sections` (e.g. the stages' step counts), then `overrides`, update its sections."""
    values = {
        "name": "test",
        "data": {"image_size": SIZE, "train_size": 16, "num_workers": 0, "cache_dir": str(tmp_path / "cache")},
        "perception": {"attributes_checkpoint": str(tmp_path / "attr.pt"),
                       "parsing_checkpoint": str(tmp_path / "parsing.pt"),
                       "attributes_train": {"image_size": SIZE}, "parsing_train": {"image_size": SIZE}},
        "train": {"log_dir": str(tmp_path / "runs"), "checkpoint_dir": str(tmp_path / "ck"), "image_every": 2,
                  "checkpoint_every": 1, "log_every": 1, "eval_size": 0},
    }
    for extra in (sections, overrides):
        for section, fields in extra.items():
            values[section] = {**values.get(section, {}), **fields}
    return load_config("experiments/configs/default.yaml", values)


def save_trained_looking_perception_nets(cfg: Config) -> None:
    """Untrained attribute and parsing nets at cfg's paths, recorded as trained for the config's epochs."""
    torch.manual_seed(0)
    save_attribute_net(AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=SIZE), cfg.perception.attributes_checkpoint,
                       {"epochs": cfg.perception.attributes_train.epochs})
    save_parsing_net(ParsingNet(image_size=SIZE), cfg.perception.parsing_checkpoint,
                     {"epochs": cfg.perception.parsing_train.epochs})
