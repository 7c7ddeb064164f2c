"""The robust loss (the paper's eq. 9) and the self-augmentation consistency terms (§3.2.3).

Both compare the input I, or the augmented images, with renders of what the network reconstructs
from the augmented images (see augment.self_augmentation). Per branch ("rot": random pose,
"occ": synthetic occluders):

    feature level (eq. 9, L_rob)
        rob_id_<b>, rob_att_<b>     I  vs the branch's reconstruction rendered in the original view
                                    (over I). The network must recover the same identity and
                                    attributes from a turned or occluded copy of its own prediction.
        rob_id_rot_view,            I_rot vs I_r_rot (the reconstruction of I_rot in the view it
        rob_att_rot_view            predicts for itself, over I_rot's background).
    image level (self-augmentation consistency)
        sa_photo_rot                I_rot vs I_r_rot, over I_rot's render mask times I_r_rot's.
        sa_photo_occ                I_R (the clean first-pass render) vs I_r_occ, over I_R's render
                                    mask times I_r_occ's: the known face under the occluder.
        sa_photo_orig_<b>           I vs the original-view render, over the skin mask M times its
                                    render mask. The occluder of I_occ does not matter: the target
                                    is the clean input I.

Without feedback (the "w/o SA" ablation) only rob_id_<b> and rob_att_<b> remain, between I and the
augmented render itself (I_rot, or I_occ), which carries the gradient to the first pass.

Weights (`RobustWeights`) are per kind of term, shared by the branches. Inside this loss they keep
eq. 5's relative weights L_photo : L_id : L_att = 1 : 0.2 : 0.005, scaled so id = 1:
id 1.0, att 0.025, photo 5.0. The caller multiplies the total by the paper's outer L_rob weight
(0.001 in eq. 5). A zero weight skips its terms (and their cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from losses.perceptual import FeatureTargets, attribute_loss, feature_targets, identity_loss
from losses.photometric import photometric_loss


class _FeatureTerm(NamedTuple):
    """One identity or attribute term: target_image vs rendered; target: target_image's features when known."""

    name: str
    target_image: torch.Tensor
    rendered: torch.Tensor
    target: torch.Tensor | None


def _feature_terms(loss, net, nets: tuple, requests: list[_FeatureTerm]) -> dict[str, torch.Tensor]:
    """Every term of one kind (loss: identity_loss or attribute_loss) from one pass of the frozen net over all their
    renders and one over the targets whose features are not known yet, instead of a pass per term: the same values
    (the net is in eval mode, so samples do not interact), fewer and larger batches (stage 2 has three such terms).
    nets: (net, None) or (None, net), as `feature_targets` takes them."""
    if not requests:
        return {}
    missing = {id(r.target_image): r.target_image for r in requests if r.target is None}  # each image once
    known = {}
    if missing:
        computed = feature_targets(*nets, torch.cat(list(missing.values())))
        computed = computed.identity if nets[0] is not None else computed.attributes
        known = dict(zip(missing, computed.split([m.shape[0] for m in missing.values()])))
    targets = [r.target if r.target is not None else known[id(r.target_image)] for r in requests]
    per_sample = loss(net, None, torch.cat([r.rendered for r in requests]), torch.cat(targets), reduction="none")
    values = per_sample.split([r.rendered.shape[0] for r in requests])
    return {r.name: value.mean() for r, value in zip(requests, values)}


@dataclass(frozen=True)
class RobustWeights:
    """Relative weights of the robust-loss terms (see the module docstring for the grounds)."""

    id: float = 1.0
    att: float = 0.025
    photo: float = 5.0


def robust_loss(identity_net, attribute_net, image: torch.Tensor, skin_mask: torch.Tensor, augmentation_output,
                weights: RobustWeights = RobustWeights(), targets: FeatureTargets | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted robust + self-augmentation loss.

    identity_net: a perception identity net (unit embeddings of aligned crops), or None when weights.id is 0.
    attribute_net: a perception.attributes.AttributeNet (`.features`, `.image_size`), or None when
        weights.att is 0. Both are frozen; the target side carries no gradient.
    image: (B, 3, S, S) the input I in [0, 1]. skin_mask: (B, 1, S, S) the parsing mask M of I in [0, 1].
    augmentation_output: an augment.self_augmentation.SelfAugmentationOutput for this batch.
    targets: the nets' features of I when the caller has them (`losses.perceptual.feature_targets`); the terms
        against I then reuse them instead of running the nets on I again.
    Returns (total: scalar, terms: unweighted scalar tensors by name, for logging). With no branch in
    the output the total is a zero tensor and the terms are empty.
    """
    if weights.id and identity_net is None:
        raise ValueError("losses/robust.py: weights.id > 0 needs an identity net (or set weights.id = 0)")
    if weights.att and attribute_net is None:
        raise ValueError("losses/robust.py: weights.att > 0 needs an attribute net (or set weights.att = 0)")
    id_target, att_target = targets if targets is not None else (None, None)
    terms: dict[str, torch.Tensor | None] = {}
    kinds: dict[str, float] = {}
    features: dict[str, list[_FeatureTerm]] = {"id": [], "att": []}

    def add(name: str, kind: str, compute) -> None:
        weight = getattr(weights, kind)
        if weight:
            terms[name], kinds[name] = compute(), weight

    def compare(name: str, kind: str, target_image: torch.Tensor, rendered: torch.Tensor, target=None) -> None:
        """A feature term, computed below with the others of its kind."""
        weight = getattr(weights, kind)
        if weight:
            terms[name], kinds[name] = None, weight
            features[kind].append(_FeatureTerm(name, target_image, rendered, target))

    for branch, view in augmentation_output.branches().items():
        if not view.fed_back:  # "w/o SA": the first-pass prediction re-rendered under the new view / occluder
            compare(f"rob_id_{branch}", "id", image, view.image, id_target)
            compare(f"rob_att_{branch}", "att", image, view.image, att_target)
            continue
        original = view.original_view_image
        compare(f"rob_id_{branch}", "id", image, original, id_target)
        compare(f"rob_att_{branch}", "att", image, original, att_target)
        add(f"sa_photo_orig_{branch}", "photo",
            lambda: photometric_loss(image, original, skin_mask * view.original_view_mask))
        if branch == "rot":
            compare("rob_id_rot_view", "id", view.image, view.recon_image)
            compare("rob_att_rot_view", "att", view.image, view.recon_image)
            add("sa_photo_rot", "photo",
                lambda: photometric_loss(view.image, view.recon_image, view.render_mask * view.recon_mask))
        elif augmentation_output.rendered is not None:
            add("sa_photo_occ", "photo", lambda: photometric_loss(
                augmentation_output.rendered, view.recon_image, augmentation_output.rendered_mask * view.recon_mask))
    terms.update(_feature_terms(identity_loss, identity_net, (identity_net, None), features["id"]))
    terms.update(_feature_terms(attribute_loss, attribute_net, (None, attribute_net), features["att"]))
    total = sum((kinds[name] * value for name, value in terms.items()), image.new_zeros(()))
    return total, terms
