"""dlib's ResNet face descriptor (`dlib_face_recognition_resnet_model_v1`) ported to PyTorch.

The weights are read from the `.dat` file that the `face_recognition_models` PyPI package ships. The file
is dlib's own binary ``serialize`` of the network below (dlib's `dnn_face_recognition_ex.cpp`, `anet_type`);
this module parses it in pure Python + numpy, so dlib is not needed at run time.

Network, input to output (29 convolutions; dlib's affine layers are batch norms frozen into a per-channel
scale and shift, which are folded into the convolution before them here)::

    input_rgb_image_sized<150>      x = (255 * rgb - mean_rgb) / 256, mean_rgb read from the file
    con 32 7x7 /2, affine, relu     padding 0 (dlib pads only stride-1 layers, by size // 2)
    max_pool 3x3 /2                 padding 0
    stage1: 3 x residual(32)        35 x 35
    stage2: residual_down(64),  3 x residual(64)     17 x 17
    stage3: residual_down(128), 2 x residual(128)     8 x 8
    stage4: residual_down(256), 2 x residual(256)     4 x 4
    stage5: residual_down(256)                        2 x 2
    avg_pool_everything, fc 128 (no bias)

    residual(N)      = relu(x + affine(con3x3/1(relu(affine(con3x3/1(x))))))
    residual_down(N) = relu(avg_pool2x2/2(x) + affine(con3x3/1(relu(affine(con3x3/2(x))))))

dlib's add_prev layer adds tensors of different shapes by treating missing elements as zeros and returns the
larger shape. This matters twice: the shortcut has fewer channels than the residual branch when a stage widens
(extra channels are zero), and in stage4 and stage5 the strided, unpadded 3x3 convolution gives a smaller map
than the 2x2 average pool (8 -> 3 vs 4, and 4 -> 1 vs 2), so the branch is zero-padded at the bottom and right.

The output is dlib's raw 128-D descriptor (not normalised); dlib's same-person threshold is a Euclidean
distance of 0.6 between descriptors.

The converted ``state_dict`` is cached (``$FAID_CACHE`` or ``~/.cache/faid_recon``), keyed by the SHA-256 of the
`.dat` file, so the parse happens once per machine.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fileio import torch_save_atomically

DLIB_MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
CONVERTER_VERSION = 1
DLIB_INPUT_MEAN_RGB = (122.782, 117.001, 104.298)  # as stored in the .dat; loading takes the file's values

# (output channels, downsamples) of each residual block from the input side; dlib's alevel4 ... alevel0.
BLOCK_SPECS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)
STAGE_ENDS = {"stage1": 2, "stage2": 6, "stage3": 9, "stage4": 12, "stage5": 13}  # index of a stage's last block
FEATURE_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "pooled", "descriptor")
HOW_TO_GET = "run `pip install face_recognition_models==0.3.0` or pass the path of the .dat file"


class DlibModelError(RuntimeError):
    """The dlib face-recognition `.dat` file is missing or is not the network this port expects."""


def _fail(path: Path | str, what: str) -> DlibModelError:
    return DlibModelError(f"{path}: {what}; expected dlib's {DLIB_MODEL_FILENAME} ({HOW_TO_GET})")


def default_dlib_model_path(filename: str = DLIB_MODEL_FILENAME) -> Path:
    """Location of a `.dat` file inside the installed `face_recognition_models` package.

    filename: one of the package's models (default: the face descriptor; ``perception.landmarks`` asks for
    ``shape_predictor_68_face_landmarks.dat``). The path is returned whether or not the file exists.
    The package is located without being imported: its ``__init__`` imports ``pkg_resources``, which recent
    setuptools no longer ship.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DlibModelError(f"{filename}: the face_recognition_models package is not installed; "
                             f"{HOW_TO_GET}")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / filename


def default_cache_dir() -> Path:
    """Folder for converted weights: ``$FAID_CACHE`` if set, else ``~/.cache/faid_recon``."""
    return Path(os.environ.get("FAID_CACHE") or Path.home() / ".cache" / "faid_recon")


# ------------------------------------------------------------------------------------------------
# dlib's serialization format

class _DlibReader:
    """Reads dlib's `serialize` primitives from a byte buffer.

    Integers: one header byte (low nibble = number of payload bytes, bit 7 = negative) then little-endian bytes.
    bool: the character '0' or '1'. float/double: integer mantissa then integer exponent (value m * 2**e).
    string: integer length then bytes. tensor: version, 4 dims (n, k, nr, nc), then the values (version 2:
    raw little-endian float32; version 1: one dlib float each). alias_tensor: version, 4 dims.
    """

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> DlibModelError:
        return _fail(self.path, f"{what} at byte {self.pos}")

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        return self.data[self.pos]

    def read_int(self) -> int:
        header = self.peek()
        size, negative = header & 0x0F, header & 0x80
        if size > 8 or header & 0x70:
            raise self.fail(f"bad integer header 0x{header:02x}")
        end = self.pos + 1 + size
        if end > len(self.data):
            raise self.fail("unexpected end of file")
        value = int.from_bytes(self.data[self.pos + 1:end], "little")
        self.pos = end
        return -value if negative else value

    def read_bool(self) -> bool:
        char = self.peek()
        if char not in (0x30, 0x31):
            raise self.fail(f"bad bool 0x{char:02x}")
        self.pos += 1
        return char == 0x31

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        return float(mantissa) * 2.0 ** exponent

    def read_string(self) -> str:
        length = self.read_int()
        if not 0 <= length <= 256:
            raise self.fail(f"bad string length {length}")
        text = self.data[self.pos:self.pos + length].decode("latin-1")
        self.pos += length
        return text

    def read_tensor(self) -> np.ndarray:
        version = self.read_int()
        dims = [self.read_int() for _ in range(4)]
        count = int(np.prod(dims))
        if version == 2:
            end = self.pos + 4 * count
            if end > len(self.data):
                raise self.fail("tensor runs past the end of the file")
            values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
            self.pos = end
        elif version == 1:
            values = np.array([self.read_float() for _ in range(count)], dtype=np.float32)
        else:
            raise self.fail(f"unknown tensor version {version}")
        return values.reshape(dims)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != 1:
            raise self.fail(f"unknown alias_tensor version {version}")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    """One computational layer read from the file.

    kind: 'con', 'affine', 'relu', 'max_pool', 'avg_pool', 'add_prev' or 'fc'.
    arrays: float32 parameters, e.g. con: weight (out, in, kh, kw), bias (out,); affine: gamma, beta (C,);
        fc: weight (in, out) as dlib multiplies x @ W.
    config: integers such as kernel, stride and padding (rows, cols).
    """

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, tuple[int, int] | int] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """The parsed file: input normalisation and the computational layers from input to output."""

    input_mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]


def _read_layer_details(reader: _DlibReader) -> DlibLayer:
    name = reader.read_string()
    if name in ("con_4", "con_5"):
        params = reader.read_tensor().reshape(-1)
        num_filters = reader.read_int()
        kernel = (reader.read_int(), reader.read_int())
        stride = (reader.read_int(), reader.read_int())
        padding = (reader.read_int(), reader.read_int())
        filters = reader.read_alias_tensor()
        reader.read_alias_tensor()  # biases: (1, num_filters), stored after the filters
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.read_float()
        use_bias = reader.read_bool() if name == "con_5" else True
        n_filter = int(np.prod(filters))
        if filters[0] != num_filters or params.size != n_filter + (num_filters if use_bias else 0):
            raise reader.fail(f"con_ parameter count {params.size} does not match filters {filters}")
        weight = params[:n_filter].reshape(filters)
        bias = params[n_filter:] if use_bias else np.zeros(num_filters, np.float32)
        return DlibLayer("con", {"weight": weight, "bias": bias},
                         {"kernel": kernel, "stride": stride, "padding": padding})
    if name == "affine_":
        params = reader.read_tensor().reshape(-1)
        gamma_shape = reader.read_alias_tensor()
        reader.read_alias_tensor()
        if reader.peek() not in (0x30, 0x31):  # newer dlib writes the mode (conv/fc) as well
            reader.read_int()
        n = int(np.prod(gamma_shape))
        if params.size != 2 * n:
            raise reader.fail(f"affine_ parameter count {params.size} is not 2 x {n}")
        return DlibLayer("affine", {"gamma": params[:n], "beta": params[n:]})
    if name == "relu_":
        return DlibLayer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        kernel = (reader.read_int(), reader.read_int())
        stride = (reader.read_int(), reader.read_int())
        padding = (reader.read_int(), reader.read_int())
        return DlibLayer(name[:8], config={"kernel": kernel, "stride": stride, "padding": padding})
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name in ("fc_2", "fc_3"):
        num_outputs = reader.read_int()
        num_inputs = reader.read_int()
        params = reader.read_tensor().reshape(-1)
        reader.read_alias_tensor()
        reader.read_alias_tensor()
        bias_mode = reader.read_int()
        for _ in range(4):
            reader.read_float()
        if name == "fc_3":
            reader.read_bool()
        if bias_mode != 1 or params.size != num_inputs * num_outputs:  # 1 = FC_NO_BIAS
            raise reader.fail("expected an fc layer without bias")
        return DlibLayer("fc", {"weight": params.reshape(num_inputs, num_outputs)})
    raise reader.fail(f"unsupported layer '{name}'")


def _skip_add_layer_state(reader: _DlibReader, version: int, is_input_layer: bool) -> None:
    # add_layer's bookkeeping after the layer details: setup flags and cached tensors (empty after clean()).
    reader.read_bool()
    reader.read_bool()
    reader.read_bool()
    reader.read_tensor()
    reader.read_tensor()
    reader.read_tensor()  # params_grad, or grad_final for the input layer's add_layer
    if is_input_layer and version >= 3:
        reader.read_int()  # sample expansion factor


def parse_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse dlib's serialized `loss_metric` network into its computational layers.

    dlib writes a network outside-in: each wrapper writes its version and then its sub-network first, and only
    after that its own layer, so the file starts with the versions of all wrappers (add_layer = 2, tag and
    skip layers = 1, the add_layer holding the input layer = 2 or 3), then the input layer, then the layers'
    details from the input side outwards. Tags and skips carry no data; the residual wiring is the fixed
    anet_type topology, which `convert_dlib_network` checks the layer sequence against.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found")
    data = path.read_bytes()
    try:  # dlib.net distributes the file as .dat.bz2; accept compressed copies too
        if data[:3] == b"BZh":
            data = bz2.decompress(data)
        elif data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError):
        raise _fail(path, "damaged compressed file") from None
    reader = _DlibReader(data, path)
    try:
        if reader.read_int() != 1:
            raise reader.fail("not a dlib network (add_loss_layer version is not 1)")
        loss_name = reader.read_string()
        if loss_name not in ("loss_metric_", "loss_metric_2"):
            raise reader.fail(f"expected a loss_metric network, found '{loss_name}'")
        reader.read_float()  # margin
        if loss_name == "loss_metric_2":
            reader.read_float()  # distance threshold
        versions = []
        while reader.peek() == 0x01 and reader.pos + 1 < len(data) and data[reader.pos + 1] in (1, 2, 3):
            versions.append(reader.read_int())
        if not versions:
            raise reader.fail("no layers found")
        if reader.read_string() != "input_rgb_image_sized":
            raise reader.fail("expected an input_rgb_image_sized input layer")
        mean_rgb = (reader.read_float(), reader.read_float(), reader.read_float())
        input_size = (reader.read_int(), reader.read_int())
        layers = [_read_layer_details(reader)]
        _skip_add_layer_state(reader, versions[-1], is_input_layer=True)
        for version in reversed(versions[:-1]):
            if version == 1:  # add_tag_layer or add_skip_layer: nothing after the sub-network
                continue
            layers.append(_read_layer_details(reader))
            _skip_add_layer_state(reader, version, is_input_layer=False)
    except DlibModelError:
        raise
    except (IndexError, ValueError, OverflowError) as exc:
        raise _fail(path, f"cannot parse ({type(exc).__name__} at byte {reader.pos})") from None
    if reader.pos != len(data):
        raise _fail(path, f"{len(data) - reader.pos} unread bytes after the network")
    return DlibNetwork(mean_rgb, input_size, layers)


# ------------------------------------------------------------------------------------------------
# PyTorch network

def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: a + b where missing channels / rows / columns count as zero.

    a: (B, Ca, Ha, Wa), b: (B, Cb, Hb, Wb) -> (B, max C, max H, max W); padding goes after the existing
    elements (extra channels last, extra rows at the bottom, extra columns at the right).
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class DlibResidualBlock(nn.Module):
    """dlib's `ares` (stride 1) or `ares_down` (stride 2 with a 2x2 average-pool shortcut) block.

    The affine (frozen batch-norm) layers are folded into conv1 / conv2. Strided convolutions are unpadded,
    as in dlib.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        stride, padding = (2, 0) if downsample else (1, 1)
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H', W') with H' = H (stride 1) or floor(H / 2)."""
        branch = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_zero_padded(branch, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's 29-convolution face-descriptor ResNet.

    Input: face chips (B, 3, 150, 150), RGB in [0, 1], framed like dlib's ``get_face_chip(img, shape, 150,
    0.25)``. Output: (B, 128) raw descriptors, equal to dlib's ``compute_face_descriptor`` on the same chips.
    The network is fully convolutional with a global pool, so other sizes run, but the descriptor is only
    trained for 150 x 150.
    """

    def __init__(self, input_mean_rgb: tuple[float, float, float] = DLIB_INPUT_MEAN_RGB):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(input_mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks, in_channels = [], 32
        for out_channels, downsample in BLOCK_SPECS:
            blocks.append(DlibResidualBlock(in_channels, out_channels, downsample))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(in_channels, DESCRIPTOR_DIM, bias=False)

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        """dlib's input layer: (255 * rgb - mean) / 256. chips: (B, 3, H, W) in [0, 1]."""
        return (chips * 255.0 - self.input_mean) / 256.0

    def features(self, chips: torch.Tensor, layers: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
        """Intermediate activations by name (see FEATURE_LAYERS), computing only as far as needed.

        stem (B, 32, 35, 35), stage1 (B, 32, 35, 35), stage2 (B, 64, 17, 17), stage3 (B, 128, 8, 8),
        stage4 (B, 256, 4, 4), stage5 (B, 256, 2, 2), pooled (B, 256), descriptor (B, 128), for 150 px chips.
        """
        unknown = [name for name in layers if name not in FEATURE_LAYERS]
        if unknown:
            raise ValueError(f"unknown dlib feature layer(s) {unknown}; choose from {FEATURE_LAYERS}")
        if chips.dim() != 4 or chips.shape[1] != 3:
            raise ValueError(f"expected chips of shape (B, 3, H, W), got {tuple(chips.shape)}")
        wanted, out = set(layers), {}

        def keep(name: str, value: torch.Tensor) -> bool:
            if name in wanted:
                out[name] = value
            return len(out) == len(wanted)

        x = F.max_pool2d(F.relu(self.stem(self.normalise(chips))), 3, 2)
        if keep("stem", x):
            return out
        stage_of_block = {index: name for name, index in STAGE_ENDS.items()}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in stage_of_block and keep(stage_of_block[index], x):
                return out
        pooled = x.mean(dim=(2, 3))
        if keep("pooled", pooled):
            return out
        keep("descriptor", self.fc(pooled))
        return out

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """chips: (B, 3, 150, 150) RGB in [0, 1] -> (B, 128) dlib descriptors (not normalised)."""
        return self.features(chips, ("descriptor",))["descriptor"]


def _expected_layers() -> list[tuple[str, tuple[int, ...] | None]]:
    """(kind, conv weight shape) from the input side, as anet_type builds it."""
    expected: list[tuple[str, tuple[int, ...] | None]] = [
        ("con", (32, 3, 7, 7)), ("affine", None), ("relu", None), ("max_pool", None)]
    in_channels = 32
    for out_channels, downsample in BLOCK_SPECS:
        expected += [("con", (out_channels, in_channels, 3, 3)), ("affine", None), ("relu", None),
                     ("con", (out_channels, out_channels, 3, 3)), ("affine", None)]
        expected += [("avg_pool", None)] if downsample else []
        expected += [("add_prev", None), ("relu", None)]
        in_channels = out_channels
    return expected + [("avg_pool", None), ("fc", None)]


def _conv_config(kernel: int, stride: int) -> dict[str, tuple[int, int]]:
    padding = 0 if stride != 1 else kernel // 2  # dlib's default padding rule
    return {"kernel": (kernel, kernel), "stride": (stride, stride), "padding": (padding, padding)}


def convert_dlib_network(network: DlibNetwork, path: Path | str = DLIB_MODEL_FILENAME) -> dict[str, torch.Tensor]:
    """State dict for `DlibFaceResNet` from a parsed file, folding each affine into the conv before it.

    affine(conv(x)) = gamma * (W * x + b) + beta = (gamma W) * x + (gamma b + beta).
    Raises DlibModelError if the layers are not anet_type's.
    """
    layers = network.layers
    expected = _expected_layers()
    kinds = [layer.kind for layer in layers]
    if kinds != [kind for kind, _ in expected]:
        raise _fail(path, f"layer sequence ({len(kinds)} layers) is not dlib's face-recognition anet_type")
    if tuple(network.input_size) != (CHIP_SIZE, CHIP_SIZE):
        raise _fail(path, f"input size {network.input_size} is not {CHIP_SIZE}x{CHIP_SIZE}")
    pools = [layer for layer in layers if layer.kind in ("max_pool", "avg_pool")]
    pool_configs = [{"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0)}]
    pool_configs += [{"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}] * sum(d for _, d in BLOCK_SPECS)
    pool_configs += [{"kernel": (0, 0), "stride": (1, 1), "padding": (0, 0)}]
    if [p.config for p in pools] != pool_configs:
        raise _fail(path, "pooling windows, strides or paddings differ from anet_type's")

    folded: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index, layer in enumerate(layers):
        if layer.kind != "con":
            continue
        weight_shape = expected[index][1]
        if layer.arrays["weight"].shape != weight_shape:
            raise _fail(path, f"convolution {len(folded)} has weights {layer.arrays['weight'].shape}, "
                              f"expected {weight_shape}")
        kernel = weight_shape[2]
        stride = layer.config["stride"][0]
        if layer.config != _conv_config(kernel, stride) or stride not in (1, 2):
            raise _fail(path, f"convolution {len(folded)} has unexpected stride/padding {layer.config}")
        affine = layers[index + 1]
        gamma = affine.arrays["gamma"].astype(np.float64)
        beta = affine.arrays["beta"].astype(np.float64)
        weight = layer.arrays["weight"].astype(np.float64) * gamma[:, None, None, None]
        bias = layer.arrays["bias"].astype(np.float64) * gamma + beta
        folded.append((torch.from_numpy(weight).float(), torch.from_numpy(bias).float()))

    model = DlibFaceResNet(network.input_mean_rgb)
    state = {"input_mean": torch.tensor(network.input_mean_rgb, dtype=torch.float32).view(1, 3, 1, 1),
             "stem.weight": folded[0][0], "stem.bias": folded[0][1]}
    for block_index in range(len(BLOCK_SPECS)):
        for conv_index in (1, 2):
            weight, bias = folded[1 + 2 * block_index + conv_index - 1]
            state[f"blocks.{block_index}.conv{conv_index}.weight"] = weight
            state[f"blocks.{block_index}.conv{conv_index}.bias"] = bias
    # dlib's fc computes x @ W with W (in, out); nn.Linear stores (out, in).
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(layers[-1].arrays["weight"].T)).float()
    missing = set(model.state_dict()) ^ set(state)
    if missing:
        raise AssertionError(f"converter and DlibFaceResNet disagree on keys: {sorted(missing)}")
    return state


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converted_cache_path(model_path: Path, cache_dir: Path) -> Path:
    """Where the converted state dict of `model_path` lives in `cache_dir` (keyed by the file's SHA-256)."""
    return cache_dir / f"dlib_face_resnet_v{CONVERTER_VERSION}_{_file_digest(model_path)[:16]}.pt"


def load_dlib_state_dict(model_path: str | Path | None = None, cache_dir: str | Path | None = None,
                         use_cache: bool = True) -> dict[str, torch.Tensor]:
    """Converted weights of the `.dat` file, from the cache when present, else parsed and cached.

    model_path: the `.dat` file (default: the one in `face_recognition_models`).
    cache_dir: default `default_cache_dir()`. An unwritable cache only costs a re-parse next time.
    """
    path = Path(model_path) if model_path is not None else default_dlib_model_path()
    if not path.is_file():
        raise _fail(path, "file not found")
    if not use_cache:
        return convert_dlib_network(parse_dlib_network(path), path)
    cache_file = converted_cache_path(path, Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if cache_file.is_file():
        try:
            cached = torch.load(cache_file, map_location="cpu", weights_only=True)
            if cached.get("converter_version") == CONVERTER_VERSION:
                return cached["state_dict"]
        except Exception:  # a damaged cache file is rebuilt below
            pass
    state = convert_dlib_network(parse_dlib_network(path), path)
    try:
        torch_save_atomically({"converter_version": CONVERTER_VERSION, "source": path.name, "state_dict": state},
                           cache_file)
    except OSError as exc:
        warnings.warn(f"{cache_file}: could not cache converted dlib weights ({exc.strerror})", stacklevel=2)
    return state


def load_dlib_face_resnet(model_path: str | Path | None = None, cache_dir: str | Path | None = None,
                          device: torch.device | str | None = None) -> DlibFaceResNet:
    """`DlibFaceResNet` with dlib's pretrained weights, in eval mode (parameters still trainable)."""
    state = load_dlib_state_dict(model_path, cache_dir)
    model = DlibFaceResNet()
    model.load_state_dict(state)
    model.eval()
    return model.to(device) if device is not None else model
