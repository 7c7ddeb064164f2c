"""Morphable models (BFM, SynthFace), the coefficient layout, face assembly and the ResNet-50 regressor."""
from coarse import coefficients
from coarse.bfm import BFMFormatError, load_bfm
from coarse.face_model import FaceGeometry, assemble_face, camera_for, compute_albedo, compute_normals, compute_shape, facing_camera, rotation_matrix
from coarse.morphable_model import MorphableModel, build_point_buf
from coarse.regressor import CheckpointError, CoarseRegressor, load_deep3d_checkpoint

__all__ = [
    "coefficients", "BFMFormatError", "load_bfm", "FaceGeometry", "assemble_face", "camera_for",
    "compute_albedo", "compute_normals", "compute_shape", "rotation_matrix", "MorphableModel",
    "build_point_buf", "CheckpointError", "CoarseRegressor", "load_deep3d_checkpoint",
]
from coarse.load_model import load_morphable_model
from coarse.priors import CoefficientPrior, neutral_coefficients
from coarse.synthface import DEFAULT_RESOLUTION, build_synthface

__all__ += ["load_morphable_model", "CoefficientPrior", "neutral_coefficients", "DEFAULT_RESOLUTION", "build_synthface"]
from coarse.uv_layout import UVLayout, ensure_uv

__all__ += ["UVLayout", "ensure_uv"]
