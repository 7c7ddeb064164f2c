"""FaceNet (facenet-pytorch 2.5.3 `InceptionResnetV1`) with VGGFace2 weights read from a local file.

Nothing is ever downloaded: the network is built with ``pretrained=None`` and the state dict is loaded from an
explicit path or from where facenet-pytorch itself caches it,
``$TORCH_HOME/checkpoints/20180402-114759-vggface2.pt`` (``$TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch``,
i.e. ``~/.cache/torch``). The file is facenet-pytorch's v2.2.9 release asset, a converted copy of David
Sandberg's `20180402-114759` model.

Input: face crops (B, 3, 160, 160), RGB in [0, 1]; facenet-pytorch's ``fixed_image_standardization``
((255 x - 127.5) / 128) is applied inside. Output: (B, 512) L2-normalised embeddings.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

FACENET_WEIGHTS_FILENAME = "20180402-114759-vggface2.pt"
FACENET_WEIGHTS_URL = ("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
                       + FACENET_WEIGHTS_FILENAME)
FACENET_INPUT_SIZE = 160
FACENET_EMBEDDING_DIM = 512
# Child modules of InceptionResnetV1 in forward order; their outputs are the available feature layers.
FACENET_STAGES = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                  "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8")
FEATURE_LAYERS = FACENET_STAGES + ("pooled", "descriptor")


class FaceNetWeightsError(RuntimeError):
    """The FaceNet weights file is missing or is not InceptionResnetV1's VGGFace2 state dict."""


class MissingWeightsError(FaceNetWeightsError, FileNotFoundError):
    """The FaceNet weights file does not exist (it is never downloaded)."""


def default_facenet_weights_path() -> Path:
    """Where facenet-pytorch caches the VGGFace2 weights: ``<torch home>/checkpoints/<file>``."""
    torch_home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(torch_home)) / "checkpoints" / FACENET_WEIGHTS_FILENAME


def _inception_resnet_v1() -> nn.Module:
    try:
        from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1
    except ImportError:
        raise FaceNetWeightsError("facenet-pytorch is not installed; run `pip install facenet-pytorch==2.5.3`") \
            from None
    return InceptionResnetV1(pretrained=None, classify=False)


def load_facenet_state_dict(weights_path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Read the VGGFace2 state dict, without the 8631-way classifier (`logits.*`), which embeddings do not use."""
    path = Path(weights_path) if weights_path is not None else default_facenet_weights_path()
    if path.is_dir():
        path = path / FACENET_WEIGHTS_FILENAME
    if not path.is_file():
        raise MissingWeightsError(
            f"{path}: FaceNet weights not found; download {FACENET_WEIGHTS_FILENAME} ({FACENET_WEIGHTS_URL}) "
            f"and put it at {path}, or give its path (idsim --weights, perception.facenet_weights in the config)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise FaceNetWeightsError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}); expected "
                                  f"facenet-pytorch's {FACENET_WEIGHTS_FILENAME}") from None
    if not isinstance(state, dict):
        raise FaceNetWeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {key: value for key, value in state.items() if not key.startswith("logits.")}


class FaceNetBackbone(nn.Module):
    """InceptionResnetV1 that takes [0, 1] RGB crops and can return intermediate features.

    network: a facenet-pytorch InceptionResnetV1 (classify=False).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    @staticmethod
    def normalise(crops: torch.Tensor) -> torch.Tensor:
        """facenet-pytorch's fixed_image_standardization on [0, 1] input: (255 x - 127.5) / 128."""
        return (crops * 255.0 - 127.5) / 128.0

    def features(self, crops: torch.Tensor, layers: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
        """Outputs of the named stages (see FEATURE_LAYERS), computing only as far as needed.

        For 160 px crops: conv2d_4b (B, 256, 17, 17), repeat_1 (B, 256, 17, 17), mixed_6a / repeat_2
        (B, 896, 8, 8), mixed_7a / repeat_3 / block8 (B, 1792, 3, 3), pooled (B, 1792),
        descriptor (B, 512) before L2 normalisation.
        """
        unknown = [name for name in layers if name not in FEATURE_LAYERS]
        if unknown:
            raise ValueError(f"unknown FaceNet feature layer(s) {unknown}; choose from {FEATURE_LAYERS}")
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"expected crops of shape (B, 3, H, W), got {tuple(crops.shape)}")
        wanted, out = set(layers), {}
        x = self.normalise(crops)
        for name in FACENET_STAGES:
            x = getattr(self.network, name)(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    return out
        pooled = self.network.avgpool_1a(x).flatten(1)
        if "pooled" in wanted:
            out["pooled"] = pooled
        if "descriptor" in wanted:
            out["descriptor"] = self.network.last_bn(self.network.last_linear(self.network.dropout(pooled)))
        return out

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (B, 3, 160, 160) RGB in [0, 1] -> (B, 512) L2-normalised embeddings."""
        descriptor = self.features(crops, ("descriptor",))["descriptor"]
        return torch.nn.functional.normalize(descriptor, dim=1)


def load_facenet(weights_path: str | Path | None = None, device: torch.device | str | None = None) -> FaceNetBackbone:
    """FaceNet with VGGFace2 weights from `weights_path` (a file, or a folder holding it) or facenet-pytorch's
    cache location. Raises MissingWeightsError (one line naming the file and where to put it) when absent.
    Returned in eval mode.
    """
    state = load_facenet_state_dict(weights_path)
    network = _inception_resnet_v1()
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise FaceNetWeightsError(f"{weights_path or default_facenet_weights_path()}: does not fit "
                                  f"InceptionResnetV1 ({first})") from None
    backbone = FaceNetBackbone(network).eval()
    return backbone.to(device) if device is not None else backbone
