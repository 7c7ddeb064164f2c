"""Spherical-harmonics (order 2, 9 bands) Lambertian shading with Deep3D's constants."""
from __future__ import annotations

import math

import torch

_A0 = math.pi
_A1 = 2 * math.pi / math.sqrt(3.0)
_A2 = 2 * math.pi / math.sqrt(8.0)
_C0 = 1 / math.sqrt(4 * math.pi)
_C1 = math.sqrt(3.0) / math.sqrt(4 * math.pi)
_C2 = 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """normals: (..., 3) unit vectors -> (..., 9) irradiance-weighted SH basis."""
    x, y, z = normals.unbind(-1)
    ones = torch.ones_like(x)
    return torch.stack(
        [
            _A0 * _C0 * ones,
            -_A1 * _C1 * y,
            _A1 * _C1 * z,
            -_A1 * _C1 * x,
            _A2 * _C2 * x * y,
            -_A2 * _C2 * y * z,
            0.5 * _A2 * _C2 / math.sqrt(3.0) * (3 * z * z - 1),
            -_A2 * _C2 * x * z,
            0.5 * _A2 * _C2 * (x * x - y * y),
        ],
        dim=-1,
    )


def sh_shading(normals: torch.Tensor, gamma: torch.Tensor, dc_init: float) -> torch.Tensor:
    """Irradiance per vertex.

    normals: (B, N, 3) unit normals in the rotated (world) frame.
    gamma: (B, 27) SH coefficients, 9 per channel (R, G, B); `dc_init` is added to each DC term.
    Returns (B, N, 3) non-negative-ish irradiance (not clamped, as in Deep3D).
    """
    b = gamma.shape[0]
    g = gamma.reshape(b, 3, 9).clone()
    g[:, :, 0] = g[:, :, 0] + dc_init
    return torch.einsum("bnk,bck->bnc", sh_basis(normals), g)
