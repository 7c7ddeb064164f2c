"""Pretrained and project-trained perception networks (imports nothing of ours).

Public API (loaded lazily, so importing one submodule does not pull in all the backbones):
    FaceDetector, FaceDetection                 MTCNN faces and 5 landmarks (perception.detect)
    Landmarks68Predictor                        dlib's 68 landmarks on photos (perception.landmarks)
    TEMPLATE_LANDMARKS5                         the aligned-crop template (perception.template)
    IdentityNet, build_identity_net             dlib port / FaceNet embeddings (perception.identity)
    AttributeNet, train_attribute_net, load_attribute_net      FA features (perception.attributes)
    ParsingNet, train_parsing_net, load_parsing_net            mask M (perception.parsing)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FaceDetector": "detect", "FaceDetection": "detect", "DetectorUnavailableError": "detect",
    "TEMPLATE_LANDMARKS5": "template",
    "Landmarks68Predictor": "landmarks", "LandmarkPredictorUnavailableError": "landmarks",
    "dlib_box_from_mtcnn": "landmarks",
    "IdentityNet": "identity", "build_identity_net": "identity", "IDENTITY_NETS": "identity",
    "MissingWeightsError": "facenet",
    "AttributeNet": "attributes", "AttributeTrainConfig": "attributes", "train_attribute_net": "attributes",
    "evaluate_attribute_net": "attributes", "save_attribute_net": "attributes", "load_attribute_net": "attributes",
    "ParsingNet": "parsing", "ParsingTrainConfig": "parsing", "train_parsing_net": "parsing",
    "evaluate_parsing_net": "parsing", "save_parsing_net": "parsing", "load_parsing_net": "parsing",
    "parsing_labels_from_masks": "parsing",
    "CheckpointError": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"perception.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'perception' has no attribute '{name}'")
