"""ResNet-50 coefficient regressor (Deep3DFaceRecon's ReconNetWrapper layout, so its checkpoints load)."""
from __future__ import annotations

import functools
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


PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so bf16 convolutions are faster than fp32.

    On other CPUs oneDNN emulates bfloat16 and it is slower, so "auto" keeps float32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """"auto" -> "bf16" on a CPU with native bfloat16 (ResNet-50 forward+backward at 64 px: 1.8x faster here),
    else "fp32". CUDA keeps "fp32" under "auto" (the paper's recipe)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "auto":
        return "bf16" if device == "cpu" and native_bf16() else "fp32"
    return precision


class CoarseRegressor(nn.Module):
    """ResNet-50 mapping an aligned face image to 257 coefficients.

    forward(images: (B, 3, 224, 224) RGB in [0, 1], no ImageNet normalisation as in Deep3D) -> (B, 257).
    The heads start at zero, so an untrained regressor predicts the mean face, frontal, under the DC light.
    """

    def __init__(self, imagenet_weights: str | Path | None | bool = "auto", precision: str = "fp32"):
        super().__init__()
        resolve_precision(precision)  # rejects unknown names now; "auto" is resolved per call, for the input's device
        self.precision = precision
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
        # bf16: the backbone's convolutions run in bfloat16 (weights stay float32), the heads in float32.
        bf16 = resolve_precision(self.precision, images.device.type) == "bf16"
        if bf16:  # oneDNN's bfloat16 convolutions prefer NHWC: a 64-px training step (batch 32) 1.1x faster here
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            features = self.backbone(images)
        features = features.float().reshape(images.shape[0], -1, 1, 1)
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
