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


# fit_sh_light's default ridge (relative to the normal matrix's mean eigenvalue): about the strength of the first
# form, 0.01 x the seen vertices' count, at the true albedo of 32 SynthFaces train faces; 0.003-0.03 score alike there.
LIGHT_RIDGE = 0.03


def fit_sh_light(albedo: torch.Tensor, normals: torch.Tensor, colours: torch.Tensor, weights: torch.Tensor,
                 prior: torch.Tensor, dc_init: float, ridge: float = LIGHT_RIDGE) -> torch.Tensor:
    """The SH light that best explains observed vertex colours, in closed form (weighted ridge least squares).

    Lambertian shading is linear in the light: colour[v, c] = albedo[v, c] * sh_basis(normal[v]) . g[c], so each
    colour channel's 9 coefficients solve a 9 x 9 normal equation. The ridge pulls them toward `prior` (the
    regressed light), so a face seen from one side keeps the prior's coefficients along the directions its
    normals do not span, and a face with no weight keeps the prior. Its strength is `ridge` times the normal
    matrix's mean eigenvalue (its trace / 9), per face and channel: scaling the albedo by s and the prior by 1/s
    then scales the solved light by exactly 1/s. A strength that ignored the albedo's scale would weaken, relative
    to the data, as the albedo brightens, so a brighter albedo would always fit the photo a little better and
    training would drift the albedo bright and the light dark (it did: +16-26 % in 400 coarse steps).

    albedo, normals, colours: (B, N, 3); weights: (B, N) or (B, N, 1) >= 0 (0 for vertices not seen);
    prior: (B, 27) in sh_shading's convention (`dc_init` added to each DC term). Returns (B, 27), same convention.
    Differentiable in albedo, normals, colours and prior.
    """
    b = albedo.shape[0]
    w = weights.reshape(b, -1, 1).to(albedo.dtype)
    basis = sh_basis(normals)                                             # (B, N, 9)
    design = albedo.transpose(1, 2).unsqueeze(-1) * basis.unsqueeze(1)  # (B, 3, N, 9)
    weighted = design * w.unsqueeze(1)
    gram = weighted.transpose(-1, -2) @ design                            # (B, 3, 9, 9)
    moment = (weighted * colours.transpose(1, 2).unsqueeze(-1)).sum(-2)  # (B, 3, 9)
    g0 = prior.reshape(b, 3, 9).clone()
    g0[:, :, 0] = g0[:, :, 0] + dc_init
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True)         # (B, 3, 1): the mean eigenvalue
    strength = torch.where(scale > 0, ridge * scale, torch.ones_like(scale))  # nothing seen: the prior
    eye = torch.eye(9, dtype=albedo.dtype, device=albedo.device)
    g = torch.linalg.solve(gram + strength.unsqueeze(-1) * eye, (moment + strength * g0).unsqueeze(-1)).squeeze(-1)
    g = g.clone()
    g[:, :, 0] = g[:, :, 0] - dc_init
    return g.reshape(b, 27)
