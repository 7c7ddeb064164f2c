"""ResNet-50 coefficient regressor (Deep3DFaceRecon's ReconNetWrapper layout, so its checkpoints load)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from coarse import coefficients as C

# Output heads in Deep3D's order: id, exp, tex, angle, gamma, (tx, ty), tz. Their concatenation is
# exactly the 257-coefficient layout.
HEAD_SIZES = (C.N_ID, C.N_EXP, C.N_TEX, C.N_ANGLE, C.N_GAMMA, 2, 1)
IMAGENET_CHECKPOINTS = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")


class CheckpointError(ValueError):
    """A checkpoint file is missing or does not hold the expected weights."""


def imagenet_weights_path() -> Path | None:
    """The first torchvision ResNet-50 ImageNet checkpoint present in the local torch hub cache."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in IMAGENET_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    return None


class CoarseRegressor(nn.Module):
    """ResNet-50 mapping an aligned face image to 257 coefficients.

    forward(images: (B, 3, 224, 224) RGB in [0, 1], no ImageNet normalisation as in Deep3D) -> (B, 257).
    The heads start at zero, so an untrained regressor predicts the mean face, frontal, under the DC light.
    """

    def __init__(self, imagenet_weights: str | Path | None | bool = "auto"):
        super().__init__()
        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.fc = nn.Identity()
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, k, kernel_size=1, bias=True) for k in HEAD_SIZES])
        self.reset_parameters()
        if imagenet_weights:
            self._load_imagenet(imagenet_weights)

    def reset_parameters(self) -> None:
        for layer in self.final_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _load_imagenet(self, weights: str | Path | bool) -> None:
        path = imagenet_weights_path() if weights in ("auto", True) else Path(weights)
        if path is None or not path.is_file():
            if weights in ("auto", True):
                warnings.warn(
                    "no ImageNet ResNet-50 checkpoint in the local torch cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints'}); the backbone starts from random weights",
                    stacklevel=3,
                )
                return
            raise CheckpointError(f"{path}: ImageNet ResNet-50 checkpoint not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.backbone.load_state_dict(state)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images).reshape(images.shape[0], -1, 1, 1)
        return torch.cat([layer(features) for layer in self.final_layers], dim=1).flatten(1)


def load_deep3d_checkpoint(regressor: CoarseRegressor, path: str | Path) -> None:
    """Load Deep3DFaceRecon's `epoch_20.pth` (its `net_recon` state dict) into `regressor`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: Deep3D checkpoint not found (epoch_20.pth from Deep3DFaceRecon_pytorch)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    state = blob.get("net_recon", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no 'net_recon' state dict inside")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("backbone.fc.")}
    result = regressor.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise CheckpointError(f"{path}: 'net_recon' lacks {len(result.missing_keys)} keys, e.g. {result.missing_keys[0]}")
