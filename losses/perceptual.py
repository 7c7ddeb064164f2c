"""Identity and attribute feature losses (the paper's L_id and L_att). The networks are passed in, frozen."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class FeatureTargets(NamedTuple):
    """The frozen nets' features of one batch of input photos, computed once and shared by every loss term that
    compares a render with those photos (stage 2 has up to four such terms per net, and the fine stage's FAID
    vector reads the same features). identity: (B, D) unit embeddings or None; attributes: (B, F) or None."""

    identity: torch.Tensor | None
    attributes: torch.Tensor | None


def feature_targets(identity_net, attribute_net, image: torch.Tensor) -> FeatureTargets:
    """FeatureTargets of image (B, 3, S, S) in [0, 1], no gradient; a net given as None gives None."""
    with torch.no_grad():
        identity = identity_net(image) if identity_net is not None else None
        attributes = attribute_net.features(_at_size(image, attribute_net.image_size)) \
            if attribute_net is not None else None
    return FeatureTargets(identity, attributes)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in ("mean", "none"):
        raise ValueError(f"losses/perceptual.py: reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.mean() if reduction == "mean" else per_sample


def identity_loss(identity_net, image: torch.Tensor | None, rendered: torch.Tensor,
                  target: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """1 - cos(e(I), e(I_R)), batch mean. image, rendered: (B, 3, S, S) aligned crops in [0, 1].

    identity_net: a perception.identity.IdentityNet (returns unit embeddings). The target side carries
    no gradient. target: e(I) when the caller has it already (`feature_targets`); image is then not read.
    reduction: "mean" (a scalar) or "none" (the (B,) per-sample values).
    """
    if target is None:
        with torch.no_grad():
            target = identity_net(image)
    return _reduce(1 - (identity_net(rendered) * target).sum(-1), reduction)


# Keeps the distance's gradient finite where the render's features equal the photo's.
_DISTANCE_EPS = 1e-8


def attribute_loss(attribute_net, image: torch.Tensor | None, rendered: torch.Tensor,
                   target: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Euclidean distance between the attribute net's penultimate ("FA") features, batch mean.

    The distance, not its square: on the embedded default the squared distance of the 512 features is 30 to
    130, so eq. 5's 0.005 made L_att 2 to 4 times the photometric term, and the self-supervised coarse stage
    then lost the warm start's pose (3.5 -> 5.8 degrees on 64 held-out faces; without L_att 4.2). The distance
    (6 to 11 here) puts 0.005 L_att at the scale of 0.2 L_id.
    attribute_net: a perception.attributes.AttributeNet (in eval mode); inputs are resized to its size.
    target: the features of image when the caller has them already (`feature_targets`); image is then not read.
    reduction: "mean" (a scalar) or "none" (the (B,) per-sample values).
    """
    size = attribute_net.image_size
    if target is None:
        with torch.no_grad():
            target = attribute_net.features(_at_size(image, size))
    squared = (attribute_net.features(_at_size(rendered, size)) - target).pow(2).sum(-1)
    return _reduce((squared + _DISTANCE_EPS).sqrt(), reduction)


def skin_mask(parsing_net, image: torch.Tensor) -> torch.Tensor:
    """The photometric mask M: (B, 3, S, S) -> (B, 1, S, S) skin probability, computed at the net's size."""
    size = parsing_net.image_size
    mask = parsing_net.predict_mask(_at_size(image, size))
    return _at_size(mask, image.shape[-1]) if size != image.shape[-1] else mask
