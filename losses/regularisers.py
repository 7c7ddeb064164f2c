"""Coefficient and reflectance regularisers (Deep3D's forms), the albedo-gain anchor of the solved light, and the
left-right symmetry prior on a per-vertex albedo."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from coarse import coefficients as C


@dataclass(frozen=True)
class RegulariserWeights:
    """Deep3D's relative weights inside the coefficient prior."""

    id: float = 1.0
    exp: float = 0.8
    tex: float = 1.7e-2
    gamma: float = 10.0


def coefficient_regulariser(coeffs: torch.Tensor, weights: RegulariserWeights = RegulariserWeights()) -> torch.Tensor:
    """coeffs: (B, 257) -> scalar: weighted squared norms of id/exp/tex plus light monochromaticity.

    The gamma term penalises the spread of SH coefficients across the R, G, B channels, which keeps the
    light close to white so colour is explained by albedo.
    """
    c = C.split_coefficients(coeffs)
    prior = (weights.id * c.id.pow(2).sum(-1) + weights.exp * c.exp.pow(2).sum(-1)
             + weights.tex * c.tex.pow(2).sum(-1))
    gamma = c.gamma.reshape(-1, 3, 9)
    light = (gamma - gamma.mean(1, keepdim=True)).pow(2).sum((1, 2))
    return (prior + weights.gamma * light).mean()


def albedo_flatness(albedo: torch.Tensor, skin_mask: torch.Tensor) -> torch.Tensor:
    """albedo: (B, N, 3), skin_mask: (N,) bool -> scalar variance of skin albedo around its mean."""
    skin = albedo[:, skin_mask]
    return (skin - skin.mean(1, keepdim=True)).pow(2).sum(-1).mean()


def albedo_gain(albedo: torch.Tensor, reference: torch.Tensor, skin_mask: torch.Tensor) -> torch.Tensor:
    """albedo: (B, N, 3), reference: (N, 3), skin_mask: (N,) bool -> scalar: the squared log ratio of each face's
    mean skin albedo to the reference's, per colour channel, averaged.

    A photo shows only albedo x light, so with the light solved from the photo (`coarse.light: solved`) the
    split of brightness between them is free, and any loss term that is not exactly invariant to it (the
    attribute net's, the ridge) walks the albedo's brightness away. This term holds that split at the
    reference (the model's mean albedo) and leaves the albedo's pattern, which the photo does determine, free.
    """
    mean = albedo[:, skin_mask].mean(1).clamp(min=1e-3)
    target = reference[skin_mask].mean(0).clamp(min=1e-3)
    return (mean.log() - target.log()).pow(2).mean()


def albedo_symmetry(albedo: torch.Tensor, mirror: torch.Tensor, skin_mask: torch.Tensor) -> torch.Tensor:
    """albedo: (B, N, 3), mirror: (N,) each vertex's left-right counterpart (coarse.morphable_model.mirror_vertices),
    skin_mask: (N,) bool -> scalar: the squared difference between each skin vertex's albedo and its mirror's,
    summed over channels and averaged.

    A face's reflectance is close to symmetric (SynthFaces' true albedo: 0.005 mean absolute asymmetry), while the
    shading that a wrong shape or light leaves in an albedo read from the photo usually is not: a light from one
    side darkens one cheek. The term pulls each pair together without saying which half is right.
    """
    skin_mask = skin_mask.to(albedo.device)
    return (albedo[:, skin_mask] - albedo[:, mirror.to(albedo.device)[skin_mask]]).pow(2).sum(-1).mean()
