"""One typed configuration, loaded from YAML into dataclasses, passed down explicitly."""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


IDENTITY_WEIGHTINGS = ("uniform", "size")
LIGHT_MODES = ("regressed", "solved")


class ConfigError(ValueError):
    """The YAML file does not match the config schema."""


@dataclass
class ModelConfig:
    bfm: str | None = None            # path to BFM_model_front.mat; None uses SynthFace
    synthface_seed: int = 0
    synthface_resolution: int | None = None  # SynthFace grid side (None: its default, 9,025 vertices); tests use less


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
    cache_dir: str = ".cache"        # rendered SynthFaces pools, mesh hierarchies, UV layouts


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
    sa_photo: float = 0.5            # self-augmentation image consistency (section 3.2.3), stage 2
    # Deep3D-style auxiliaries of the coarse stage (landmarks in image-size units, coefficient prior,
    # skin-albedo flatness).
    landmark: float = 100.0
    reg: float = 3e-4
    reflectance: float = 5e-3
    # Stage 2 keeps stage 1's photometric loss on the coarse (PCA-albedo) render: the fine render reproduces
    # the photo it unwraps whatever the pose, so without this term nothing anchors the regressor's pose and light.
    coarse_photo: float = 1.0
    # Holds each face's mean skin albedo at the model's mean (losses.albedo_gain): with the light solved from the
    # photo nothing else fixes how the brightness splits between albedo and light (the default sets 0.1).
    albedo_gain: float = 0.0
    # Stage 2: left-right symmetry of the fine albedo (losses.albedo_symmetry), against the one-sided shading a
    # wrong shape or light bakes into the albedo read from the photo. Not in the paper; 0 turns it off.
    albedo_symmetry: float = 0.0


BATCHNORM_MODES = ("recalibrate", "running", "frozen")


@dataclass
class StageConfig:
    """One optimisation stage: Adam with the paper's step decay (lr * lr_decay ** (step // lr_decay_every))."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    lr_decay: float = 0.9
    lr_decay_every: int = 1000
    # Decay of an exponential moving average of the trained weights (0: off). When on, the stage ends on the
    # average, so its checkpoint and the next stage use it.
    ema: float = 0.0
    # The regressor's BatchNorm statistics (warm start, coarse and fine stages):
    #   recalibrate  batch statistics while training, recomputed over 512 training images at the end;
    #   running      batch statistics while training, PyTorch's running averages kept;
    #   frozen       the running statistics the stage starts from, used and not updated (the affine weights
    #                still train), so training sees the normalisation that inference uses.
    batchnorm: str = "recalibrate"
    # With batchnorm "running": from this step on, the stage trains as "frozen", with the running statistics it
    # has reached by then, so its last steps fit the weights to the normalisation inference will use. 0: never.
    batchnorm_frozen_from: int = 0

    def __post_init__(self):
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema: {self.ema} is not a decay in [0, 1); 0.995 averages about the last 200 steps, "
                              "0 turns it off")
        if self.batchnorm not in BATCHNORM_MODES:
            raise ConfigError(f"batchnorm: '{self.batchnorm}' is not one of {', '.join(BATCHNORM_MODES)}")
        if self.batchnorm_frozen_from < 0:
            raise ConfigError(f"batchnorm_frozen_from: {self.batchnorm_frozen_from} is not a step; 0 never freezes")
        if self.batchnorm_frozen_from and self.batchnorm == "recalibrate":
            raise ConfigError("batchnorm_frozen_from: needs batchnorm 'running' (a recalibration at the end would "
                              "replace the statistics the frozen steps trained with)")


@dataclass
class WarmStartConfig(StageConfig):
    """Stage 0 (embedded default only): supervised on SynthFaces' true coefficients and 68 landmarks.

    It stands in for the ImageNet initialisation that cannot be downloaded here. enabled: "auto" runs it
    when the data set is SynthFaces and neither ImageNet weights nor a Deep3D checkpoint are given.
    """

    enabled: str = "auto"             # auto | on | off
    pool_size: int = 6000             # SynthFaces train samples rendered once and reused every epoch
    landmark: float = 100.0           # weight of the 68-point landmark term
    # Albedo (tex) and light (gamma) weigh 0.05 while the pose is being learned; from appearance_after on they
    # weigh `appearance`, so the regressor also learns the light (the fine stage divides the photo by it).
    appearance: float = 0.05
    appearance_after: int = 0
    # How the identity coefficient term weighs the 80 modes: "uniform" (each alike), or "size" (each by its squared
    # vertex norm, mean weight 1: an error in shape space). The first modes move the landmarks most; see README.
    identity_weighting: str = "uniform"

    def __post_init__(self):
        super().__post_init__()
        if self.identity_weighting not in IDENTITY_WEIGHTINGS:
            raise ConfigError(f"identity_weighting: '{self.identity_weighting}' is not one of "
                              f"{', '.join(IDENTITY_WEIGHTINGS)}")


@dataclass
class CoarseConfig(StageConfig):
    """Stage 1: the coarse regressor, self-supervised (Deep3D's recipe with the paper's L_id and L_att)."""

    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    imagenet_weights: str | None = None   # "auto" (local torch cache), a path, or None
    deep3d_checkpoint: str | None = None  # Deep3D epoch_20.pth to start from
    pool_size: int = 6000                 # SynthFaces samples rendered once; 0 renders on the fly
    # The SH light the face is rendered with: "regressed" (Deep3D's and the paper's: the regressor's 27 light
    # coefficients) or "solved" (the least-squares light of the photo given the predicted shape, pose and
    # albedo, pulled toward the regressed one; experiments.pipeline.solve_light). Used by every stage after
    # the warm start, by evaluation and by reconstruction; the warm start always trains the regressed light.
    light: str = "regressed"
    # At inference (no gradient), regress the photo and its mirror image and average the two predictions, the
    # second mirrored back (coarse.mirror): twice the regressor's cost. Training is unchanged; not in the paper.
    flip_average: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.light not in LIGHT_MODES:
            raise ConfigError(f"light: '{self.light}' is not one of {', '.join(LIGHT_MODES)}")


@dataclass
class FineConfig(StageConfig):
    """Stage 2: GCN refiners + self-augmentation, trained end to end with the regressor (eq. 5)."""

    enabled: bool = True
    use_mesh: bool = True             # mesh-wise refiner branch
    use_faid: bool = True             # FAID decoder branch
    use_attributes: bool = True       # FA features in the FAID vector (False: identity only, "w/o FA")
    fusion: str = "average"           # average (the paper's) | learned
    chebyshev_k: int = 6
    # Feature channels of both branches per mesh level, finest first (fine.FineStage's `channels`). Level 0 (the
    # 9,025-vertex mesh on the embedded default) costs the most: there a Chebyshev block's K - 1 sparse products
    # run over every input channel of every face.
    channels: tuple[int, ...] = (16, 32, 32, 64)
    regressor_lr_scale: float = 0.1   # the pre-trained regressor moves slower than the new GCNs
    correction_weight: float = 0.01   # L2 prior on the fine albedo correction (keeps it to what the photo shows)
    read_skin_only: bool = True       # the mesh-wise refiner reads the photo only where the parsing net sees skin
    read_skin_threshold: float = 0.5  # ... i.e. where its skin probability is at least this

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.read_skin_threshold <= 1.0:
            raise ConfigError(f"read_skin_threshold: a skin probability in (0, 1], got {self.read_skin_threshold}")


@dataclass
class AugmentConfig:
    """Self-augmentation (the paper's section 3.2.3); ranges in degrees."""

    pose: bool = True
    occlusion: bool = True
    max_yaw_deg: float = 90.0
    max_pitch_deg: float = 30.0
    max_roll_deg: float = 20.0
    detach_inputs: bool = True
    feedback: bool = True             # False: re-render but don't feed back through the network ("w/o SA")


@dataclass
class TrainConfig:
    """The loop every stage runs in: device, logging, checkpoints, resume, NaN guard."""

    device: str = "auto"
    log_dir: str = "runs/default"
    checkpoint_dir: str = "checkpoints/default"
    log_every: int = 20
    image_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    max_bad_steps: int = 10           # consecutive non-finite losses before giving up
    eval_size: int = 128              # held-out samples in the table at the end of training
    precision: str = "auto"           # the regressor's backbone while training: fp32 | bf16 | auto (bf16 on a
                                      # CPU that computes it natively, else fp32); evaluation runs in fp32


@dataclass
class Config:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a field's own check (__post_init__) names the field, not where it sits
        raise ConfigError(f"{where}.{exc}") from None


def _check_ints(value, where: str) -> tuple[int, ...]:
    """A YAML list of positive integers (a tuple[int, ...] field) -> tuple."""
    if not isinstance(value, (list, tuple)) or not value or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"{where}: expected a non-empty list of positive integers, e.g. [8, 16, 32, 64], got {value!r}")
    return tuple(value)


_YAML11_UNDOTTED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_scalar(value, hint, where: str):
    if typing.get_origin(hint) is tuple:
        return _check_ints(value, where)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str) and _YAML11_UNDOTTED_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-3 as a string (YAML 1.1 wants 1.0e-3); mean the number
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
