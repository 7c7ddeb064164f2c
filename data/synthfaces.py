"""SynthFaces: the embedded data set, rendered from a morphable model with full ground truth.

Every sample is a deterministic function of (seed, split, index). Identities are drawn from a stream
keyed by (seed, split, identity), so the train / val / test splits never share an identity; with
``views_per_identity = k`` consecutive indices show one identity under k poses, expressions, lights,
backgrounds and occluders (for ID-consistency evaluation).

A sample (see data.samples for shared keys; pixel coordinates in index units, centre of image[i, j]
at x=j, y=i, as data.align):
    image          (3, S, S) in [0, 1]   the input: clean render, plus an occluder with prob occlusion_prob
    clean_image    (3, S, S) in [0, 1]   the same view without the occluder (evaluation reference)
    face_mask      (1, S, S) in [0, 1]   pixels where the face's skin region is rendered (before occlusion)
    render_mask    (1, S, S) in [0, 1]   every pixel the face mesh covers (skin, eyes, lips, brows)
    occluder_mask  (1, S, S) in [0, 1]   the occluder's alpha (zeros when clean)
    coeffs         (257,)                 the true coefficients (model units; see coarse.coefficients)
    albedo         (N, 3) in [0, 1]       the true per-vertex albedo, PCA part plus detail outside its span
    landmarks68    (68, 2)  landmarks5 (5, 2)   projected model landmarks, pixels
    attributes     (A,) float 0/1         SYNTHFACES_ATTRIBUTES
    identity       int                    identity index within the split
    occluder       str                    occluder kind or "none"
    split          str

Faces are placed like aligned photos: a fixed translation (fitted once per model) puts the mean face's
5 landmarks on the aligned-crop template, and the prior's pose and shift vary around it.

    python -m data.synthfaces preview -o out/synthfaces     # contact sheet PNG
"""
from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from augment.occluders import OCCLUDER_KINDS, composite, sample_background, sample_occluder
from coarse import coefficients as C
from coarse.face_model import assemble_face
from coarse.morphable_model import MorphableModel
from coarse.priors import CoefficientPrior
from data.face_detail import DetailConfig, sample_detail
from perception.template import ALIGNED_CROP_SIZE, TEMPLATE_LANDMARKS5
from render.rasterizer import interpolate, rasterize

SPLITS = {"train": 0, "val": 1, "test": 2}
SYNTHFACES_ATTRIBUTES = (
    "dark_skin", "masculine", "aged", "stubble", "freckles", "makeup", "smiling", "mouth_open", "glasses", "occluded",
)
# Thresholds that turn continuous ground truth into binary attributes.
SMILE_THRESHOLD = 0.5          # `smile` expression coefficient
MOUTH_OPEN_THRESHOLD = 0.6     # `jaw_open` expression coefficient
AGED_THRESHOLD = 0.5           # wrinkle level
STUBBLE_THRESHOLD = 0.3        # stubble level
DARK_SKIN_LUMINANCE = 0.52     # mean skin albedo luminance below this is "dark_skin" (about the darkest fifth)


@dataclass(frozen=True)
class SynthFacesConfig:
    """What SynthFaces draws. Sizes in pixels; probabilities per sample."""

    image_size: int = 224
    occlusion_prob: float = 0.5
    occluder_kinds: tuple[str, ...] = OCCLUDER_KINDS
    views_per_identity: int = 1
    prior: CoefficientPrior = field(default_factory=CoefficientPrior)
    detail: DetailConfig = field(default_factory=DetailConfig)


def _stream_seed(*keys: int) -> int:
    """A 63-bit seed that mixes the keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(*keys))


def template_translation(model: MorphableModel) -> torch.Tensor:
    """(3,) translation that puts the mean face's 5 landmarks on the aligned-crop template (frontal)."""
    coeffs = torch.zeros(1, C.N_COEFFS)
    target = torch.tensor(TEMPLATE_LANDMARKS5, dtype=torch.float32) + 0.5  # renderer pixel convention
    trans = torch.zeros(3, requires_grad=True)
    optimiser = torch.optim.LBFGS([trans], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        c = coeffs.clone()
        c[0, C.TRANS] = trans
        face = assemble_face(model, c, ALIGNED_CROP_SIZE)
        loss = ((model.landmarks5_from_68(face.landmarks)[0] - target) ** 2).mean()
        loss.backward()
        return loss

    optimiser.step(closure)
    return trans.detach()


class SynthFaces(Dataset):
    """Procedurally rendered faces with ground truth; deterministic by (seed, split, index).

    model: the morphable model to render (default: SynthFace). size: number of samples in this split.
    """

    def __init__(self, split: str = "train", size: int = 1000, seed: int = 0,
                 config: SynthFacesConfig = SynthFacesConfig(), model: MorphableModel | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown SynthFaces split '{split}'; use one of {', '.join(SPLITS)}")
        if model is None:
            from coarse.synthface import build_synthface

            model = build_synthface()
        self.split, self.size, self.seed, self.config, self.model = split, size, seed, config, model
        self.base_translation = template_translation(model)
        names = model.extras.get("exp_names", [])
        self._one_sided = torch.tensor(model.extras.get("exp_one_sided", [False] * C.N_EXP))
        self._smile = names.index("smile") if "smile" in names else None
        self._jaw_open = names.index("jaw_open") if "jaw_open" in names else None
        id_names = model.extras.get("id_names", [])
        self._masculinity = id_names.index("masculinity") if "masculinity" in id_names else None
        skin = model.extras.get("regions", {}).get("skin", model.skin_mask)
        self._skin_vertices = skin.bool()
        self._skin_attribute = model.skin_mask.float().unsqueeze(-1)

    def __len__(self) -> int:
        return self.size

    def identity_of(self, index: int) -> int:
        return index // self.config.views_per_identity

    @functools.lru_cache(maxsize=64)
    def identity(self, identity: int) -> dict:
        """One identity's shape, albedo coefficients, detailed albedo (N, 3) and detail labels."""
        g = _generator(self.seed, SPLITS[self.split], identity, 0)
        prior = self.config.prior
        id_coeff = torch.randn(C.N_ID, generator=g) * prior.id_std
        tex_coeff = torch.randn(C.N_TEX, generator=g) * prior.tex_std
        pca_albedo = (self.model.mean_albedo + (self.model.albedo_base @ tex_coeff).reshape(-1, 3)).clamp(0, 1)
        delta, labels = sample_detail(self.model, g, self.config.detail, base_albedo=pca_albedo)
        return {"id": id_coeff, "tex": tex_coeff, "albedo": (pca_albedo + delta).clamp(0, 1), "detail": labels}

    def _view_coefficients(self, identity: dict, g: torch.Generator) -> torch.Tensor:
        coeffs = self.config.prior.sample(1, g)[0]
        exp = coeffs[C.EXP]
        coeffs[C.EXP] = torch.where(self._one_sided, exp.abs(), exp)
        coeffs[C.ID] = identity["id"]
        coeffs[C.TEX] = identity["tex"]
        coeffs[C.TRANS] = coeffs[C.TRANS] + self.base_translation
        return coeffs

    def render(self, coeffs: torch.Tensor, albedo: torch.Tensor, background: torch.Tensor | None) -> dict:
        """Render (B, 257) coefficients with (B, N, 3) albedo over (B, 3, S, S) backgrounds (grey if None).

        Returns image, render_mask, face_mask (B, ., S, S) and landmarks68 (B, 68, 2) in renderer pixels.
        """
        size = self.config.image_size
        face = assemble_face(self.model, coeffs, size, albedo=albedo)
        fragments = rasterize(face.screen, self.model.triangles, size)
        attrs = torch.cat([face.colors, self._skin_attribute.expand(coeffs.shape[0], -1, -1)], dim=-1)
        pixels = interpolate(attrs, self.model.triangles, fragments).permute(0, 3, 1, 2)
        coverage = fragments.mask.unsqueeze(1).float()
        if background is None:
            background = torch.full((coeffs.shape[0], 3, size, size), 0.5)
        image = (pixels[:, :3] * coverage + background * (1 - coverage)).clamp(0, 1)
        return {"image": image, "render_mask": coverage, "face_mask": (pixels[:, 3:4] > 0.5).float() * coverage,
                "landmarks68": face.landmarks}

    def attributes(self, coeffs: torch.Tensor, identity: dict, occluder: str) -> torch.Tensor:
        albedo = identity["albedo"][self._skin_vertices]
        luminance = float((albedo * torch.tensor([0.299, 0.587, 0.114])).sum(-1).mean())
        exp = coeffs[C.EXP]
        detail = identity["detail"]
        values = {
            "dark_skin": luminance < DARK_SKIN_LUMINANCE,
            "masculine": self._masculinity is not None and float(identity["id"][self._masculinity]) > 0,
            "aged": detail["wrinkles"] > AGED_THRESHOLD,
            "stubble": detail["stubble"] > STUBBLE_THRESHOLD,
            "freckles": detail["has_freckles"] > 0,
            "makeup": detail["makeup"] > 0,
            "smiling": self._smile is not None and float(exp[self._smile]) > SMILE_THRESHOLD,
            "mouth_open": self._jaw_open is not None and float(exp[self._jaw_open]) > MOUTH_OPEN_THRESHOLD,
            "glasses": occluder == "glasses",
            "occluded": occluder != "none",
        }
        return torch.tensor([float(values[name]) for name in SYNTHFACES_ATTRIBUTES])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"SynthFaces[{self.split}] has {self.size} samples, asked for {index}")
        identity_index = self.identity_of(index)
        identity = self.identity(identity_index)
        g = _generator(self.seed, SPLITS[self.split], index, 1)
        size = self.config.image_size
        coeffs = self._view_coefficients(identity, g)
        background = sample_background(size, g)
        with torch.no_grad():
            rendered = self.render(coeffs[None], identity["albedo"][None], background[None])
        clean = rendered["image"][0]
        landmarks68 = rendered["landmarks68"][0]
        landmarks5 = self.model.landmarks5_from_68(landmarks68)
        occluder_kind, image, occluder_mask = "none", clean, torch.zeros(1, size, size)
        if torch.rand(1, generator=g).item() < self.config.occlusion_prob:
            kind_index = int(torch.randint(len(self.config.occluder_kinds), (1,), generator=g))
            layer = sample_occluder(self.config.occluder_kinds[kind_index], size, g, landmarks5)
            occluder_kind, occluder_mask = layer.kind, layer.alpha
            image = composite(clean, layer.rgb, layer.alpha)
        return {
            "image": image,
            "clean_image": clean,
            "face_mask": rendered["face_mask"][0],
            "render_mask": rendered["render_mask"][0],
            "occluder_mask": occluder_mask,
            "coeffs": coeffs,
            "albedo": identity["albedo"],
            "landmarks68": landmarks68 - 0.5,
            "landmarks5": landmarks5 - 0.5,
            "attributes": self.attributes(coeffs, identity, occluder_kind),
            "identity": identity_index,
            "occluder": occluder_kind,
            "split": self.split,
        }


def preview(out: Path, count: int = 8, image_size: int = 160, seed: int = 0) -> Path:
    """Contact sheet: per identity a column of clean, occluded, rotated, face mask and occluder mask.

    Column i uses occluder kind i (cycling through OCCLUDER_KINDS) so every kind shows.
    """
    from dataclasses import replace

    from render.image_io import contact_sheet, save_png

    base = SynthFaces("train", size=count, seed=seed, config=SynthFacesConfig(image_size=image_size, occlusion_prob=1.0))
    rows: list[list[torch.Tensor]] = [[], [], [], [], []]
    for i in range(count):
        kind = OCCLUDER_KINDS[i % len(OCCLUDER_KINDS)]
        data = SynthFaces("train", size=count, seed=seed, model=base.model,
                          config=replace(base.config, occluder_kinds=(kind,)))
        s = data[i]
        rotated = s["coeffs"].clone()
        rotated[C.ANGLE.start + 1] = np.radians(60 if i % 2 else -60)
        with torch.no_grad():
            turned = data.render(rotated[None], s["albedo"][None], None)["image"][0]
        rows[0].append(s["clean_image"])
        rows[1].append(s["image"])
        rows[2].append(turned)
        rows[3].append(s["face_mask"].expand(3, -1, -1))
        rows[4].append(s["occluder_mask"].expand(3, -1, -1))
    labels = [f"{name} {i}" for name in ("clean", "occluded", "yaw 60", "face mask", "occluder") for i in range(count)]
    images = [im for row in rows for im in row]
    return save_png(contact_sheet(images, columns=count, labels=labels), out / "synthfaces_preview.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SynthFaces tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preview", help="write a contact sheet PNG of samples")
    p.add_argument("-o", "--out", type=Path, default=Path("out/synthfaces"))
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = preview(args.out, args.count, args.size, args.seed)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
