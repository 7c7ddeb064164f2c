"""The 257-float coefficient layout and the camera/lighting constants (single source of truth).

Layout (Deep3DFaceRecon-compatible):
    id[0:80] exp[80:144] tex[144:224] angle[224:227] gamma[227:254] trans[254:257]
angle is in radians (x, y, z); gamma is 27 SH coefficients (3 channels x 9 bands); trans is in
model units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

N_ID = 80
N_EXP = 64
N_TEX = 80
N_ANGLE = 3
N_GAMMA = 27
N_TRANS = 3
N_COEFFS = N_ID + N_EXP + N_TEX + N_ANGLE + N_GAMMA + N_TRANS  # 257

ID = slice(0, 80)
EXP = slice(80, 144)
TEX = slice(144, 224)
ANGLE = slice(224, 227)
GAMMA = slice(227, 254)
TRANS = slice(254, 257)

# Camera (Deep3D): the camera sits at z=CAMERA_DISTANCE looking down -z; focal and principal
# point are given for a REFERENCE_IMAGE_SIZE image and scale linearly with the image size.
REFERENCE_IMAGE_SIZE = 224
FOCAL = 1015.0
CENTER = 112.0
CAMERA_DISTANCE = 10.0

# SH lighting: DC initialisation added to the first band of every channel.
SH_DC_INIT = 0.8

assert N_COEFFS == 257


@dataclass
class Coefficients:
    """A batch of 257 coefficients split by meaning. Every field is (B, k)."""

    id: torch.Tensor
    exp: torch.Tensor
    tex: torch.Tensor
    angle: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor

    def to_tensor(self) -> torch.Tensor:
        """(B, 257) in the fixed order."""
        return torch.cat([self.id, self.exp, self.tex, self.angle, self.gamma, self.trans], dim=-1)


def split_coefficients(coeffs: torch.Tensor) -> Coefficients:
    """coeffs: (B, 257) -> Coefficients with views into the input."""
    if coeffs.shape[-1] != N_COEFFS:
        raise ValueError(f"expected (..., {N_COEFFS}) coefficients, got {tuple(coeffs.shape)}")
    return Coefficients(
        id=coeffs[..., ID], exp=coeffs[..., EXP], tex=coeffs[..., TEX],
        angle=coeffs[..., ANGLE], gamma=coeffs[..., GAMMA], trans=coeffs[..., TRANS],
    )


def camera_intrinsics(image_size: int) -> tuple[float, float]:
    """(focal, centre) in pixels for a square image of `image_size` pixels."""
    scale = image_size / REFERENCE_IMAGE_SIZE
    return FOCAL * scale, CENTER * scale
