"""Landmark re-projection loss (Deep3D's weighting: nose and inner mouth count 20x)."""
from __future__ import annotations

import torch


def landmark_weights(count: int = 68, device: torch.device | str = "cpu") -> torch.Tensor:
    """(count,) weights: 20 for the nose ridge points 28-30 and the 8 inner-mouth points, 1 elsewhere."""
    weights = torch.ones(count, device=device)
    if count == 68:
        weights[28:31] = 20
        weights[-8:] = 20
    return weights / weights.mean()


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, image_size: int) -> torch.Tensor:
    """predicted, target: (B, K, 2) pixels -> scalar weighted mean squared distance in image-size units."""
    weights = landmark_weights(predicted.shape[1], predicted.device)
    squared = (((predicted - target) / image_size) ** 2).sum(-1)
    return (squared * weights).mean()
