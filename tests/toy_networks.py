"""Tiny stand-ins for the reconstruction network and the perception nets, for the self-augmentation and
robust-loss tests (fast on one CPU core; random, non-zero initialisations so outputs depend on inputs)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coarse import coefficients as C
from coarse.morphable_model import MorphableModel

# How far the toy network's outputs move from its base coefficients, per slice (model units / radians).
_SPREAD = ((C.ID, 0.5), (C.EXP, 0.3), (C.TEX, 0.3), (C.ANGLE, 0.15), (C.GAMMA, 0.1), (C.TRANS, 0.02))


class ToyReconstructor(nn.Module):
    """images (B, 3, S, S) -> (coeffs (B, 257), albedo (B, N, 3)): a small conv net around fixed base
    coefficients (which place the face in frame) and the mean albedo plus a learned per-vertex offset."""

    def __init__(self, model: MorphableModel, base_coeffs: torch.Tensor, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
            self.head = nn.Linear(8 * 16, C.N_COEFFS)
            self.albedo_offset = nn.Parameter(0.02 * torch.randn(model.num_vertices, 3))
        spread = torch.zeros(C.N_COEFFS)
        for part, value in _SPREAD:
            spread[part] = value
        self.register_buffer("spread", spread)
        self.register_buffer("base_coeffs", base_coeffs.reshape(1, C.N_COEFFS).clone())
        self.register_buffer("mean_albedo", model.mean_albedo.clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = torch.tanh(self.head(self.features(images * 2 - 1)))
        coeffs = self.base_coeffs + raw * self.spread
        albedo = (self.mean_albedo + self.albedo_offset).clamp(0, 1).expand(images.shape[0], -1, -1)
        return coeffs, albedo


class ToyIdentityNet(nn.Module):
    """images (B, 3, S, S) -> (B, 16) unit embeddings (the identity-net interface)."""

    def __init__(self, seed: int = 1):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.body = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.Tanh(), nn.AdaptiveAvgPool2d(4),
                                      nn.Flatten(), nn.Linear(128, 16))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.body(images), dim=-1)


class ToyAttributeNet(nn.Module):
    """The AttributeNet interface: `.image_size` and `.features(images) -> (B, 32)`."""

    def __init__(self, image_size: int = 32, seed: int = 2):
        super().__init__()
        self.image_size = image_size
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                                      nn.Flatten(), nn.Linear(32, 32))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)
