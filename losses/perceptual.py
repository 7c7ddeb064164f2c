"""Identity and attribute feature losses (the paper's L_id and L_att). The networks are passed in, frozen."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def identity_loss(identity_net, image: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
    """1 - cos(e(I), e(I_R)), batch mean. image, rendered: (B, 3, S, S) aligned crops in [0, 1].

    identity_net: a perception.identity.IdentityNet (returns unit embeddings). The target side carries
    no gradient.
    """
    with torch.no_grad():
        target = identity_net(image)
    return (1 - (identity_net(rendered) * target).sum(-1)).mean()


def attribute_loss(attribute_net, image: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the attribute net's penultimate ("FA") features, summed over features.

    attribute_net: a perception.attributes.AttributeNet (in eval mode); inputs are resized to its size.
    """
    size = attribute_net.image_size
    with torch.no_grad():
        target = attribute_net.features(_at_size(image, size))
    return (attribute_net.features(_at_size(rendered, size)) - target).pow(2).sum(-1).mean()


def skin_mask(parsing_net, image: torch.Tensor) -> torch.Tensor:
    """The photometric mask M: (B, 3, S, S) -> (B, 1, S, S) skin probability, computed at the net's size."""
    size = parsing_net.image_size
    mask = parsing_net.predict_mask(_at_size(image, size))
    return _at_size(mask, image.shape[-1]) if size != image.shape[-1] else mask
