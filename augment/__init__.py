"""Random poses, synthetic occluders and the self-augmentation loop."""
from augment.occluders import (
    BACKGROUND_KINDS, OCCLUDER_KINDS, Occluder, composite, default_landmarks5, occlude, sample_background, sample_occluder,
)
from augment.self_augmentation import (
    AugmentedView, PoseRanges, Reconstruction, SelfAugmentation, SelfAugmentationConfig, SelfAugmentationOutput,
    original_view_coefficients, random_pose,
)

__all__ = [
    "BACKGROUND_KINDS", "OCCLUDER_KINDS", "Occluder", "composite", "default_landmarks5", "occlude",
    "sample_background", "sample_occluder",
    "AugmentedView", "PoseRanges", "Reconstruction", "SelfAugmentation", "SelfAugmentationConfig",
    "SelfAugmentationOutput", "original_view_coefficients", "random_pose",
]
