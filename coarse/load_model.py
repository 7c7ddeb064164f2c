"""Pick the morphable model: the full-scale BFM when a path is given, SynthFace otherwise."""
from __future__ import annotations

from coarse.bfm import load_bfm
from coarse.morphable_model import MorphableModel


def load_morphable_model(bfm_path: str | None = None, synthface_seed: int = 0,
                         synthface_resolution: int | None = None) -> MorphableModel:
    """BFM_model_front.mat at `bfm_path`, or the embedded procedural SynthFace model (grid side
    `synthface_resolution`, the default when None)."""
    if bfm_path:
        return load_bfm(bfm_path)
    from coarse.synthface import DEFAULT_RESOLUTION, build_synthface

    return build_synthface(seed=synthface_seed, resolution=synthface_resolution or DEFAULT_RESOLUTION)
