"""Random poses, synthetic occluders and the self-augmentation loop."""
from augment.occluders import (
    BACKGROUND_KINDS, OCCLUDER_KINDS, Occluder, composite, default_landmarks5, occlude, sample_background, sample_occluder,
)

__all__ = [
    "BACKGROUND_KINDS", "OCCLUDER_KINDS", "Occluder", "composite", "default_landmarks5", "occlude",
    "sample_background", "sample_occluder",
]
