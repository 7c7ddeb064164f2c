"""The whole network at inference: coarse regressor -> morphable model -> fine GCN stage, and rendering.

    pipeline = FacePipeline.from_checkpoint("checkpoints/default/last.pt")
    prediction = pipeline.predict(images)            # aligned crops (B, 3, S, S) in [0, 1]
    rendered = pipeline.render(prediction.coeffs, prediction.albedo("fine"), image_size=224)

Evaluation, reconstruction and the training objectives all go through this one class, so a checkpoint
means the same thing everywhere.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from coarse import coefficients as C
from coarse.face_model import (FaceGeometry, assemble_face, compute_albedo, compute_normals, compute_shape,
                               facing_camera, rotation_matrix)
from coarse.load_model import load_morphable_model
from coarse.morphable_model import MorphableModel
from coarse.mirror import CoefficientMirror, flip_average
from coarse.regressor import CoarseRegressor
from losses import feature_targets
from perception.training import CheckpointError, read_checkpoint
from render.rasterizer import rasterize, render_mesh
from render.shading import LIGHT_RIDGE, fit_sh_light
from render.texture_sampling import sample_at_pixels, visible_vertices

CHECKPOINT_FORMAT = "faid-recon"
STAGES = ("warm_start", "coarse", "fine")


@dataclass
class Prediction:
    """What the network predicts for a batch of B aligned crops (N vertices).

    coeffs: (B, 257). coarse_albedo: (B, N, 3) the PCA albedo of the coefficients, [0, 1] in range.
    fine_albedo: (B, N, 3) the GCN-refined albedo, None when the checkpoint has no fine stage.
    features: (B, D) the FAID vector (identity + attribute features) the fine stage used, if any.
    """

    coeffs: torch.Tensor
    coarse_albedo: torch.Tensor
    fine_albedo: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def albedo(self, stage: str = "fine") -> torch.Tensor:
        """(B, N, 3) the albedo of `stage`: "coarse" or "fine" (KeyError when there is no fine stage)."""
        if stage == "coarse":
            return self.coarse_albedo
        if stage == "fine":
            if self.fine_albedo is None:
                raise KeyError("this checkpoint has no fine stage; train it with `make train`")
            return self.fine_albedo
        raise ValueError(f"unknown stage '{stage}': use coarse or fine")


@dataclass
class RenderedFace:
    """image: (B, 3, S, S) shaded render over the background (black if none); mask: (B, 1, S, S) coverage;
    landmarks68: (B, 68, 2) projected, pixel-index units (renderer px - 0.5) as data samples use."""

    image: torch.Tensor
    mask: torch.Tensor
    landmarks68: torch.Tensor
    geometry: FaceGeometry
    fragments: object


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, size, size), antialiased when shrinking."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)


def vertex_observations(model: MorphableModel, image: torch.Tensor, coeffs: torch.Tensor,
                        fragments_size: int | None = None, skin: torch.Tensor | None = None,
                        skin_threshold: float = 0.5) -> tuple[FaceGeometry, torch.Tensor, torch.Tensor]:
    """The photo read at every projected vertex (no gradient): -> (face, colours (B, N, 3), seen (B, N, 1)).

    image: (B, 3, S, S) in [0, 1]; coeffs: (B, 257); skin: optional (B, 1, S', S') skin probability (the parsing
    net's mask M). A vertex counts as seen when it passes the depth test, faces the camera, projects at least
    one pixel inside the face's silhouette (border vertices would read the background) and, with `skin`, lands
    where the skin probability is at least `skin_threshold` (occluders are not read). `face` is
    assemble_face(model, coeffs) at the sampling size.
    """
    size = fragments_size or image.shape[-1]
    with torch.no_grad():
        face = assemble_face(model, coeffs, size)
        fragments = rasterize(face.screen, model.triangles, size)
        seen = visible_vertices(face.screen, fragments.zbuf, facing_camera(face.vertices, face.normals))
        covered = fragments.mask.unsqueeze(1).to(image.dtype)
        interior = -F.max_pool2d(-covered, 3, stride=1, padding=1)  # the silhouette eroded by one pixel
        points = face.screen[..., :2]
        seen &= sample_at_pixels(interior, points)[..., 0] > 0.5
        if skin is not None:
            seen &= sample_at_pixels(resize_square(skin.to(image.dtype), size), points)[..., 0] >= skin_threshold
        colours = sample_at_pixels(resize_square(image, size), points)
    return face, colours, seen.unsqueeze(-1).to(image.dtype)


def observed_vertex_albedo(model: MorphableModel, image: torch.Tensor, coeffs: torch.Tensor,
                           fragments_size: int | None = None, skin: torch.Tensor | None = None,
                           skin_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The photo read at every projected vertex and divided by the predicted shading (no gradient).

    Arguments as `vertex_observations`. Returns (albedo (B, N, 3) in [0, 1.5], zero where not seen; seen (B, N, 1)).
    This is the "unwrapped texture" the mesh-wise refiner reads (Lin et al.). It is a constant for the
    optimiser: rendered with the same geometry it reproduces the photo whatever that geometry is, so a gradient
    through it would only teach the regressor to stop caring about pose.
    """
    face, colours, seen = vertex_observations(model, image, coeffs, fragments_size, skin, skin_threshold)
    with torch.no_grad():
        albedo = (colours / face.shading.clamp(min=0.05)).clamp(0, 1.5)
    return albedo * seen, seen


def solve_light(model: MorphableModel, image: torch.Tensor, coeffs: torch.Tensor, fragments_size: int | None = None,
                skin: torch.Tensor | None = None, ridge: float = LIGHT_RIDGE) -> torch.Tensor:
    """coeffs with their SH light (gamma) replaced by the least-squares light of the photo (`fit_sh_light`).

    The light that best explains the photo's colours at the seen vertices (`vertex_observations`) given the
    predicted shape, pose and PCA albedo, pulled toward the regressed light by `ridge`. The photo is read
    without gradient; the light stays differentiable in the shape, albedo and regressed light.
    """
    _, colours, seen = vertex_observations(model, image, coeffs, fragments_size, skin)
    c = C.split_coefficients(coeffs)
    rotation = rotation_matrix(c.angle)
    normals = compute_normals(compute_shape(model, c.id, c.exp), model.triangles, model.point_buf) @ rotation.transpose(1, 2)
    gamma = fit_sh_light(compute_albedo(model, c.tex), normals, colours, seen, c.gamma, C.SH_DC_INIT, ridge)
    return torch.cat([coeffs[:, :C.GAMMA.start], gamma.to(coeffs.dtype), coeffs[:, C.GAMMA.stop:]], dim=1)


class FacePipeline(nn.Module):
    """Coarse regressor + optional fine stage (+ the frozen perception nets that make the FAID vector).

    model: the morphable model; regressor: CoarseRegressor; input_size: the regressor's input side (pixels);
    fine: a fine.FineStage or None; identity_net / attribute_net: the FAID feature extractors (needed with
    a FAID branch); use_attributes: include the attribute features in the FAID vector; parsing_net: when set,
    the photo is read only where this net sees skin, by the light solve and (with refine_reads_skin,
    ``fine.read_skin_only``) by the mesh-wise refiner; light: "regressed" or "solved" (``coarse.light``);
    skin_threshold: the skin probability from which the mesh-wise refiner reads a vertex (``fine.read_skin_threshold``);
    flip_average: at inference, average the predictions for the photo and its mirror image (``coarse.flip_average``).
    """

    def __init__(self, model: MorphableModel, regressor: CoarseRegressor, input_size: int, fine: nn.Module | None = None,
                 identity_net: nn.Module | None = None, attribute_net: nn.Module | None = None,
                 use_attributes: bool = True, checkpoint: str | None = None, stage: str = "coarse",
                 parsing_net: nn.Module | None = None, light: str = "regressed", refine_reads_skin: bool = True,
                 skin_threshold: float = 0.5, flip_average: bool = False):
        super().__init__()
        self.model, self.regressor, self.input_size = model, regressor, int(input_size)
        self.fine, self.identity_net, self.attribute_net = fine, identity_net, attribute_net
        self.parsing_net, self.light, self.refine_reads_skin = parsing_net, light, refine_reads_skin
        self.use_attributes, self.checkpoint, self.stage = use_attributes, checkpoint, stage
        self.skin_threshold = skin_threshold
        self.flip_average, self._mirror = flip_average, None

    @property
    def has_fine(self) -> bool:
        return self.fine is not None

    @property
    def stages(self) -> tuple[str, ...]:
        return ("coarse", "fine") if self.has_fine else ("coarse",)

    @classmethod
    def mean_face(cls, model: MorphableModel, input_size: int = 224) -> "FacePipeline":
        """An untrained pipeline: zero-initialised heads predict the mean face, frontal, under the DC light."""
        return cls(model, CoarseRegressor(imagenet_weights=False).eval(), input_size, stage="mean_face").eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str = "cpu", bfm: str | None = None) -> "FacePipeline":
        """Rebuild the pipeline a `make train` checkpoint describes (its config names the model and nets)."""
        from experiments.config import load_config

        payload = read_checkpoint(path, CHECKPOINT_FORMAT, device)
        cfg = load_config(None, payload["config"])
        model = load_morphable_model(bfm or cfg.model.bfm, cfg.model.synthface_seed, cfg.model.synthface_resolution).to(device)
        regressor = CoarseRegressor(imagenet_weights=False)
        regressor.load_state_dict(payload["regressor"])
        fine = identity_net = attribute_net = parsing_net = None
        if cfg.coarse.light == "solved":
            parsing_net = skin_reader(cfg, device, required=False)
        if payload.get("fine") is not None:
            fine, identity_net, attribute_net = build_fine_parts(cfg, model, device)
            fine.load_state_dict(payload["fine"])
            for key, file in fine_stage_inputs(cfg).items():
                recorded = payload.get(key)
                if recorded and recorded != file_sha1(file):
                    raise CheckpointError(
                        f"{path}: its fine stage was trained with a different {file} than the one there now (retrained "
                        f"since?); restore that file, or delete {Path(path).with_name('fine.pt')} and run "
                        "`python -m experiments.train --only fine`")
            parsing_net = skin_reader(cfg, device, parsing_net) if cfg.fine.read_skin_only else parsing_net
        pipeline = cls(model, regressor, cfg.data.image_size, fine, identity_net, attribute_net,
                       cfg.fine.use_attributes, str(path), payload.get("stage", "coarse"), parsing_net,
                       **reading_options(cfg))
        return pipeline.to(device).eval()

    def faid_features(self, images: torch.Tensor, targets=None) -> torch.Tensor:
        """images: (B, 3, S, S) aligned crops -> (B, D) identity embedding (+ attribute features), no gradient.
        targets: these nets' features of images (`losses.feature_targets`), when the caller has them already."""
        with_attributes = self.use_attributes and self.attribute_net is not None
        if targets is None or targets.identity is None or (with_attributes and targets.attributes is None):
            targets = feature_targets(self.identity_net, self.attribute_net if with_attributes else None, images)
        parts = [targets.identity] + ([targets.attributes] if with_attributes else [])
        # Each part unit-length, then scaled by sqrt(dim) so every entry is O(1) whatever the net's scale.
        return torch.cat([F.normalize(p, dim=-1) * p.shape[-1] ** 0.5 for p in parts], dim=-1)

    def refine(self, images: torch.Tensor, coeffs: torch.Tensor, coarse_albedo: torch.Tensor,
               features: torch.Tensor | None = None, skin: torch.Tensor | None = None, targets=None):
        """Run the fine stage: -> (fine.FineOutput, features). images: (B, 3, S, S); coeffs: (B, 257);
        skin: the parsing net's (B, 1, S', S') mask of images, and targets: the perception nets' features of images
        (`losses.feature_targets`), when already computed."""
        if features is None and getattr(self.fine, "use_faid", False):
            features = self.faid_features(images, targets)
        observed, visible = self.read_photo(images, coeffs, skin)
        mesh_input = torch.cat([coarse_albedo, observed, visible], dim=-1)
        return self.fine(coarse_albedo, features, mesh_input=mesh_input), features

    def read_photo(self, images: torch.Tensor, coeffs: torch.Tensor, skin: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the mesh-wise refiner reads (no gradient): `observed_vertex_albedo` at the input size, through the
        parsing net's skin mask at `skin_threshold` when `refine_reads_skin`. -> (albedo (B, N, 3), seen (B, N, 1)).
        skin: the parsing net's mask of images, when the caller has it."""
        skin = self.skin(images, skin) if self.refine_reads_skin else None
        return observed_vertex_albedo(self.model, images, coeffs, self.input_size, skin, self.skin_threshold)

    def regress(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, S, S) -> the regressor's (B, 257) coefficients, with its own light (what the warm start
        trains); `predict` replaces that light with the solved one when self.light is "solved". With
        `flip_average` set and no gradient (inference), the mean of the photo's and its mirror image's."""
        images = resize_square(images, self.input_size)
        if self.flip_average and not torch.is_grad_enabled():
            if self._mirror is None:
                self._mirror = CoefficientMirror(self.model)
            return flip_average(self.regressor, images, self._mirror)
        return self.regressor(images)

    def skin(self, images: torch.Tensor, skin: torch.Tensor | None = None) -> torch.Tensor | None:
        """The parsing net's skin mask of images (no gradient), `skin` when the caller has it, None without a net."""
        if skin is not None or self.parsing_net is None:
            return skin
        with torch.no_grad():
            return self.parsing_net.predict_mask(resize_square(images, self.parsing_net.image_size))

    def predict(self, images: torch.Tensor, stage: str | None = None, skin: torch.Tensor | None = None,
                targets=None) -> Prediction:
        """images: (B, 3, S, S) aligned crops in [0, 1], any S -> Prediction. Call under torch.no_grad() for
        inference; gradients flow when training. stage "coarse" skips the fine stage. skin: the parsing net's
        mask of images, and targets: the perception nets' features of images (`losses.feature_targets`), when
        the caller has them already."""
        coeffs = self.regress(images)
        if self.light == "solved":
            skin = self.skin(images, skin)
            coeffs = solve_light(self.model, images, coeffs, self.input_size, skin)
        coarse_albedo = compute_albedo(self.model, coeffs[:, C.TEX])
        if not self.has_fine or stage == "coarse":
            return Prediction(coeffs, coarse_albedo)
        output, features = self.refine(images, coeffs, coarse_albedo, skin=skin, targets=targets)
        return Prediction(coeffs, coarse_albedo, output.albedo, features)

    def render(self, coeffs: torch.Tensor, albedo: torch.Tensor | None, image_size: int,
               background: torch.Tensor | None = None) -> RenderedFace:
        """Shade and rasterize. coeffs: (B, 257); albedo: (B, N, 3) or None for the PCA albedo;
        background: (B, 3, S, S) or None (black)."""
        face = assemble_face(self.model, coeffs, image_size, albedo=albedo)
        out = render_mesh(face.screen, self.model.triangles, face.colors, image_size, background=background)
        return RenderedFace(out.image.clamp(0, 1), out.mask, face.landmarks - 0.5, face, out.fragments)


def reading_options(cfg) -> dict:
    """FacePipeline's keyword arguments for how it reads the photo, from a config: the light (``coarse.light``),
    whether it also reads the mirror image (``coarse.flip_average``) and where the mesh-wise refiner reads
    (``fine.read_skin_only``, ``fine.read_skin_threshold``)."""
    return {"light": cfg.coarse.light, "flip_average": cfg.coarse.flip_average,
            "refine_reads_skin": cfg.fine.read_skin_only, "skin_threshold": cfg.fine.read_skin_threshold}


def file_sha1(path: str | Path) -> str | None:
    """Hex SHA-1 of a file's bytes, or None when it cannot be read."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def fine_stage_inputs(cfg) -> dict[str, str]:
    """The frozen nets' checkpoint files a fine stage reads at inference, under the keys its checkpoint records their
    SHA-1 with: the FAID branch only makes sense with the attribute features it was trained on, and the mesh-wise
    refiner and the solved light with the parsing mask they read the photo through."""
    files = {}
    if cfg.fine.use_faid and cfg.fine.use_attributes:
        files["attribute_net_sha1"] = cfg.perception.attributes_checkpoint
    if cfg.fine.read_skin_only or cfg.coarse.light == "solved":
        files["parsing_net_sha1"] = cfg.perception.parsing_checkpoint
    return files


MESH_INPUT_CHANNELS = 7  # coarse albedo (3) + observed albedo (3) + visibility (1)


def build_fine_parts(cfg, model: MorphableModel, device: torch.device | str = "cpu", nets: tuple | None = None):
    """(FineStage, identity_net, attribute_net) as the config describes them; the perception nets are frozen.

    nets: (identity_net, attribute_net) already loaded, to reuse instead of loading them again.
    """
    from fine import FineStage, build_mesh_hierarchy
    from perception.attributes import FEATURE_DIM, load_attribute_net
    from perception.identity import build_identity_net

    identity_net = attribute_net = None
    feature_dim = 0
    if cfg.fine.use_faid:
        identity_net = nets[0] if nets else build_identity_net(
            cfg.perception.identity_net, cfg.perception.facenet_weights, device=device).eval()
        feature_dim = identity_net.embedding_dim
        if cfg.fine.use_attributes:
            attribute_net = nets[1] if nets else \
                load_attribute_net(cfg.perception.attributes_checkpoint, device).eval().requires_grad_(False)
            feature_dim += FEATURE_DIM
    hierarchy = build_mesh_hierarchy(model.mean_shape.cpu(), model.triangles.cpu(), cache_dir=Path(cfg.data.cache_dir) / "mesh_hierarchy")
    fine = FineStage(hierarchy, feature_dim=feature_dim or None, fusion=cfg.fine.fusion, use_mesh=cfg.fine.use_mesh,
                     use_faid=cfg.fine.use_faid, channels=cfg.fine.channels, K=cfg.fine.chebyshev_k,
                     mesh_in_channels=MESH_INPUT_CHANNELS)
    return fine.to(device), identity_net, attribute_net


def skin_reader(cfg, device: torch.device | str = "cpu", net: nn.Module | None = None,
                required: bool = True) -> nn.Module | None:
    """The frozen parsing net the pipeline reads the photo through (``fine.read_skin_only``, ``coarse.light``
    "solved"), or None when neither needs it.

    net: an already loaded parsing net to reuse. Raises CheckpointError (one line) when it is configured but
    its checkpoint is missing; with required=False the photo is then read wherever the face covers it instead.
    """
    if not (cfg.fine.read_skin_only or cfg.coarse.light == "solved"):
        return None
    if net is None and not required and not Path(cfg.perception.parsing_checkpoint).is_file():
        return None
    if net is None:
        from perception.parsing import load_parsing_net

        net = load_parsing_net(cfg.perception.parsing_checkpoint, device)
    return net.eval().requires_grad_(False)


__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "FacePipeline", "Prediction", "RenderedFace", "build_fine_parts",
           "file_sha1", "fine_stage_inputs", "observed_vertex_albedo", "reading_options", "resize_square", "skin_reader",
           "solve_light", "vertex_observations"]
