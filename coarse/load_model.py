"""Pick the morphable model: the full-scale BFM when a path is given, SynthFace otherwise."""
from __future__ import annotations

from coarse.bfm import load_bfm
from coarse.morphable_model import MorphableModel


def load_morphable_model(bfm_path: str | None = None, synthface_seed: int = 0) -> MorphableModel:
    """BFM_model_front.mat at `bfm_path`, or the embedded procedural SynthFace model."""
    if bfm_path:
        return load_bfm(bfm_path)
    from coarse.synthface import build_synthface

    return build_synthface(seed=synthface_seed)
