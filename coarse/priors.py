"""A simple prior over the 257 coefficients, used to draw random faces (SynthFaces, demos, augmentation)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from coarse import coefficients as C


@dataclass(frozen=True)
class CoefficientPrior:
    """Independent Gaussian / uniform ranges per coefficient group.

    Shape and albedo coefficients are N(0, std^2) (models are scaled so N(0, 1) is plausible).
    Angles are uniform in +-max (radians). Lighting perturbs Deep3D's DC light: a shared brightness
    change, a small per-channel tint and directional (first-order) and second-order terms.
    """

    id_std: float = 1.0
    exp_std: float = 0.6
    tex_std: float = 1.0
    max_yaw: float = math.radians(45)
    max_pitch: float = math.radians(15)
    max_roll: float = math.radians(10)
    brightness: float = 0.25
    tint: float = 0.05
    directional_std: float = 0.18
    top_light: float = 0.08           # mean light from above (negative SH y band), as in most photos
    second_order_std: float = 0.06
    max_shift: float = 0.08           # model units in x and y
    max_depth_shift: float = 0.5      # model units in z (towards/away from the camera)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch, 257) coefficients."""

        def normal(*shape):
            return torch.randn(*shape, generator=generator)

        def uniform(*shape):
            return torch.rand(*shape, generator=generator) * 2 - 1

        coeffs = torch.zeros(batch, C.N_COEFFS)
        coeffs[:, C.ID] = normal(batch, C.N_ID) * self.id_std
        coeffs[:, C.EXP] = normal(batch, C.N_EXP) * self.exp_std
        coeffs[:, C.TEX] = normal(batch, C.N_TEX) * self.tex_std
        coeffs[:, C.ANGLE] = uniform(batch, 3) * torch.tensor([self.max_pitch, self.max_yaw, self.max_roll])
        gamma = torch.zeros(batch, 3, 9)
        gamma[:, :, 0] = uniform(batch, 1) * self.brightness + uniform(batch, 3) * self.tint
        gamma[:, :, 1:4] = (normal(batch, 1, 3) * self.directional_std).expand(batch, 3, 3)
        gamma[:, :, 1] = gamma[:, :, 1] - self.top_light
        gamma[:, :, 4:] = (normal(batch, 1, 5) * self.second_order_std).expand(batch, 3, 5)
        coeffs[:, C.GAMMA] = gamma.reshape(batch, C.N_GAMMA)
        coeffs[:, C.TRANS] = uniform(batch, 3) * torch.tensor([self.max_shift, self.max_shift, self.max_depth_shift])
        return coeffs


def neutral_coefficients(batch: int = 1) -> torch.Tensor:
    """(batch, 257) zeros: mean face, frontal, Deep3D's default DC light."""
    return torch.zeros(batch, C.N_COEFFS)
