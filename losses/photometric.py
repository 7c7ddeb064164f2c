"""Masked photometric loss (Deep3D's skin-attention form)."""
from __future__ import annotations

import torch


def photometric_loss(image: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean per-pixel colour distance over the mask.

    image, rendered: (B, 3, H, W) in [0, 1]; mask: (B, 1, H, W) in [0, 1] (render coverage times the
    parsing mask M of visible skin). Returns a scalar: sum_p M_p ||I_p - R_p||_2 / sum_p M_p, averaged
    over the batch; items whose mask is empty contribute zero.
    """
    distance = torch.sqrt(((image - rendered) ** 2).sum(1, keepdim=True) + eps)
    per_item = (distance * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1.0)
    return per_item.mean()
