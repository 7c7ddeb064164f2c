"""One typed configuration, loaded from YAML into dataclasses, passed down explicitly."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """The YAML file does not match the config schema."""


@dataclass
class ModelConfig:
    bfm: str | None = None            # path to BFM_model_front.mat; None uses SynthFace
    synthface_seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "synthfaces"       # synthfaces | celeba | aflw2000 | folder
    root: str | None = None
    image_size: int = 224
    synth_seed: int = 0
    train_size: int = 20000
    val_size: int = 64
    test_size: int = 512
    occlusion_prob: float = 0.5
    num_workers: int = 2


@dataclass
class PerceptionTrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    image_size: int = 112
    train_size: int = 3000
    val_size: int = 512
    device: str = "auto"


@dataclass
class PerceptionConfig:
    identity_net: str = "dlib"        # dlib | facenet
    facenet_weights: str | None = None
    attributes_checkpoint: str = "checkpoints/attributes.pt"
    parsing_checkpoint: str = "checkpoints/parsing.pt"
    attributes_train: PerceptionTrainConfig = field(default_factory=PerceptionTrainConfig)
    parsing_train: PerceptionTrainConfig = field(default_factory=PerceptionTrainConfig)


@dataclass
class LossWeights:
    """The paper's eq. 5 weights."""

    photo: float = 1.0
    id: float = 0.2
    att: float = 0.005
    rob: float = 0.001
    # Deep3D-style auxiliaries of the coarse stage (landmarks in image-size units, coefficient prior,
    # skin-albedo flatness).
    landmark: float = 100.0
    reg: float = 3e-4
    reflectance: float = 5e-3


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    device: str = "auto"
    log_dir: str = "runs/default"
    checkpoint_dir: str = "checkpoints/default"
    log_every: int = 20
    image_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    max_bad_steps: int = 10           # consecutive non-finite losses before giving up


@dataclass
class Config:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    train: TrainConfig = field(default_factory=TrainConfig)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = _check_scalar(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def _check_scalar(value, hint, where: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not any(isinstance(value, t) for t in allowed if t is not type(None)):
        names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Load a YAML config (missing keys take the defaults); `overrides` is a nested dict applied on top."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if overrides:
        values = _merge(values, overrides)
    return _build(Config, values, str(path) if path else "config")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out
