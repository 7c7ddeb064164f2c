"""Training losses: photometric, identity, attribute, landmark and regularisers."""
from losses.landmark import landmark_loss, landmark_weights
from losses.perceptual import FeatureTargets, attribute_loss, feature_targets, identity_loss, skin_mask
from losses.photometric import photometric_loss
from losses.robust import RobustWeights, robust_loss
from losses.regularisers import RegulariserWeights, albedo_flatness, albedo_gain, albedo_symmetry, coefficient_regulariser

__all__ = [
    "landmark_loss", "landmark_weights", "FeatureTargets", "feature_targets", "attribute_loss", "identity_loss",
    "skin_mask", "photometric_loss",
    "RegulariserWeights", "albedo_flatness", "albedo_gain", "albedo_symmetry", "coefficient_regulariser",
    "RobustWeights", "robust_loss",
]
