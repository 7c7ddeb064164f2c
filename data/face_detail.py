"""Per-identity albedo detail outside a morphable model's albedo span (for SynthFaces).

A PCA albedo is smooth; real skin is not. ``sample_detail`` draws what a smooth basis cannot express:
freckles, moles, stubble (dark speckle over the beard area), wrinkles (thin dark lines on the
forehead, at the eye corners, under the eyes and along the nasolabial folds) and make-up (lipstick,
eyeshadow, blush). It returns the per-vertex change to add to the PCA albedo and the attribute labels
that went with it, deterministically from the generator it is given.

Placement uses the model's mean shape and 68 landmarks, so it works for any model; the region masks in
``model.extras["regions"]`` (SynthFace) are used when present, else rough ones come from the
landmarks. Sizes scale with the distance between the eye centres.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from coarse.morphable_model import MorphableModel

# Order of the attribute labels (all floats; booleans are 0.0 / 1.0).
DETAIL_LABEL_NAMES = (
    "has_freckles", "freckle_density", "num_moles", "stubble", "wrinkles",
    "makeup", "lipstick", "eyeshadow", "blush",
)
# SynthFace's eye-centre distance; sizes below are in SynthFace units and rescale for other models.
REFERENCE_EYE_DISTANCE = 0.64

LIPSTICK_COLOURS = ((0.62, 0.08, 0.12), (0.82, 0.32, 0.45), (0.45, 0.10, 0.22), (0.72, 0.45, 0.40),
                    (0.88, 0.38, 0.28))
EYESHADOW_COLOURS = ((0.45, 0.30, 0.22), (0.45, 0.30, 0.55), (0.30, 0.40, 0.60), (0.75, 0.62, 0.35),
                     (0.40, 0.40, 0.42))
BLUSH_COLOUR = (0.90, 0.45, 0.50)
# Multiplicative tints of dark marks (fraction of R, G, B removed per unit darkness): browner marks
# remove more green and blue.
FRECKLE_TINT = np.array([0.55, 0.75, 0.85])
MOLE_TINT = np.array([0.75, 0.85, 0.90])
HAIR_TINT = np.array([0.90, 0.93, 0.95])
WRINKLE_TINT = np.array([0.85, 0.95, 1.0])


@dataclass(frozen=True)
class DetailConfig:
    """How often each kind of detail appears (probabilities per identity) and how strong it gets."""

    freckles_prob: float = 0.25
    moles_per_face: float = 1.0      # Poisson mean, at most 5
    stubble_prob: float = 0.3
    wrinkles_prob: float = 0.6       # otherwise wrinkle level 0
    makeup_prob: float = 0.25
    strength: float = 1.0            # scales every darkening and make-up opacity


def _numpy_rng(rng: np.random.Generator | torch.Generator) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=rng, device=rng.device).item())
        return np.random.default_rng(seed)
    raise TypeError("data/face_detail.py: rng must be a numpy.random.Generator or a torch.Generator")


class _FaceFrame:
    """Vertex positions, landmarks, soft regions and scales of one model, as numpy arrays."""

    def __init__(self, model: MorphableModel):
        self.xy = model.mean_shape[:, :2].detach().cpu().double().numpy()
        self.xy_t = torch.from_numpy(self.xy.astype(np.float32))
        self.n = self.xy.shape[0]
        self.triangles = model.triangles.detach().cpu().numpy()
        lm = self.xy[model.landmarks68.cpu().numpy()]
        self.lm = lm
        self.eye_left, self.eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
        self.unit = float(np.linalg.norm(self.eye_right - self.eye_left)) / REFERENCE_EYE_DISTANCE
        edges = np.linalg.norm(self.xy[self.triangles[:, 0]] - self.xy[self.triangles[:, 1]], axis=1)
        self.edge = float(np.median(edges))
        regions = model.extras.get("regions") if isinstance(model.extras, dict) else None
        if regions:
            self.masks = {k: v.detach().cpu().numpy().astype(bool) for k, v in regions.items()}
        else:
            self.masks = self._masks_from_landmarks(model)
        self.soft = {k: self.smooth(v.astype(np.float64), 2) for k, v in self.masks.items()}

    def smooth(self, values: np.ndarray, iterations: int) -> np.ndarray:
        """Average each vertex with its mesh neighbours `iterations` times. values: (N,) or (N, C)."""
        src = self.triangles.reshape(-1)
        dst = np.roll(self.triangles, 1, axis=1).reshape(-1)
        a = np.concatenate([src, dst])
        b = np.concatenate([dst, src])
        degree = np.bincount(a, minlength=self.n) + 1.0
        out = values
        for _ in range(iterations):
            if out.ndim == 1:
                out = (np.bincount(a, weights=out[b], minlength=self.n) + out) / degree
            else:
                out = np.stack([(np.bincount(a, weights=out[b, c], minlength=self.n) + out[:, c]) / degree
                                for c in range(out.shape[1])], 1)
        return out

    def _masks_from_landmarks(self, model: MorphableModel) -> dict[str, np.ndarray]:
        """Rough regions for models without extras["regions"] (e.g. BFM)."""
        xy, lm, u = self.xy, self.lm, self.unit
        skin = model.skin_mask.cpu().numpy().astype(bool)
        lips = _inside_polygon(xy, lm[48:60])
        eyes = _inside_polygon(xy, lm[36:42]) | _inside_polygon(xy, lm[42:48])
        eye_surround = (_polyline_distance(xy, np.vstack([lm[36:42], lm[36:37]])) < 0.03 * u) \
            | (_polyline_distance(xy, np.vstack([lm[42:48], lm[42:43]])) < 0.03 * u) | eyes
        brows = (_polyline_distance(xy, lm[17:22]) < 0.03 * u) | (_polyline_distance(xy, lm[22:27]) < 0.03 * u)
        nose_base_y = lm[33, 1]
        brow_top = lm[17:27, 1].max()
        face = skin | lips | eyes | brows
        beard = face & (xy[:, 1] < nose_base_y - 0.02 * u) & ~lips
        cheeks = face & ~lips & ~eye_surround & (
            np.exp(-0.5 * (((np.abs(xy[:, 0]) - 0.42 * u) / (0.14 * u)) ** 2
                           + ((xy[:, 1] - 0.5 * (self.eye_left[1] + lm[48, 1])) / (0.17 * u)) ** 2)) > 0.35)
        forehead = face & (xy[:, 1] > brow_top + 0.06 * u)
        eye_y = 0.5 * (self.eye_left[1] + self.eye_right[1])
        upper_lids = face & ~eye_surround & ~brows & (xy[:, 1] > eye_y) & (xy[:, 1] < brow_top - 0.02 * u) \
            & (np.minimum(np.linalg.norm(xy - self.eye_left, axis=1), np.linalg.norm(xy - self.eye_right, axis=1))
               < 0.2 * u)
        nose = _inside_polygon(xy, np.vstack([lm[27:28] + [-0.06 * u, 0], lm[31:36], lm[27:28] + [0.06 * u, 0]]))
        return {"face": face, "skin": skin, "lips": lips, "eyes": eyes, "eye_surround": eye_surround,
                "brows": brows, "beard_area": beard, "cheeks": cheeks, "forehead": forehead,
                "upper_lids": upper_lids, "nose": nose}

    def in_box(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Indices of the vertices whose (x, y) lies inside the box [low, high]."""
        return np.flatnonzero(((self.xy > low) & (self.xy < high)).all(1))

    def mask(self, name: str) -> np.ndarray:
        return self.masks.get(name, np.zeros(self.n, dtype=bool))

    def soft_mask(self, name: str) -> np.ndarray:
        return self.soft.get(name, np.zeros(self.n))


_FRAMES: dict[int, tuple[weakref.ref, _FaceFrame]] = {}


def _frame_of(model: MorphableModel) -> _FaceFrame:
    """The model's _FaceFrame, built once per model object (models are not hashable)."""
    entry = _FRAMES.get(id(model))
    if entry is not None and entry[0]() is model:
        return entry[1]
    frame = _FaceFrame(model)
    for key in [k for k, (ref, _) in _FRAMES.items() if ref() is None]:
        del _FRAMES[key]
    _FRAMES[id(model)] = (weakref.ref(model), frame)
    return frame


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule. points: (N, 2), polygon: (K, 2) -> (N,) bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0][None], polygon[:, 1][None]
    x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(1) % 2 == 1


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance from points (N, 2) to a polyline (K, 2) -> (N,)."""
    a, b = line[:-1][None], line[1:][None]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    closest = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(1)


def _spots(frame: _FaceFrame, centres: np.ndarray, radii: np.ndarray, darkness: np.ndarray) -> np.ndarray:
    """Sum of Gaussian spots (cut at 4 radii). centres: (K, 2), radii, darkness: (K,) -> (N,) darkness."""
    out = np.zeros(frame.n)
    if len(centres) == 0:
        return out
    reach = 4 * radii.max()
    near = frame.in_box(centres.min(0) - reach, centres.max(0) + reach)
    d2 = torch.cdist(frame.xy_t[near], torch.from_numpy(centres.astype(np.float32))) ** 2       # (n, K)
    scaled = d2 / torch.from_numpy(2 * radii.astype(np.float32) ** 2)[None]
    rows, cols = torch.nonzero(scaled < 8.0, as_tuple=True)                                   # within 4 radii
    values = torch.exp(-scaled[rows, cols]) * torch.from_numpy(darkness.astype(np.float32))[cols]
    out[near] = torch.zeros(len(near)).index_add_(0, rows, values).double().numpy()
    return out


def _lines_darkness(frame: _FaceFrame, lines: list[tuple[np.ndarray, float]], width: float) -> np.ndarray:
    """max over polylines of strength * exp(-d^2 / 2 width^2), d the distance to the line -> (N,).

    Each line only looks at the vertices in its bounding box grown by 4 widths.
    """
    out = np.zeros(frame.n)
    for line, strength in lines:
        near = frame.in_box(line.min(0) - 4 * width, line.max(0) + 4 * width)
        d = _polyline_distance(frame.xy[near], line)
        out[near] = np.maximum(out[near], strength * np.exp(-0.5 * (d / width) ** 2))
    return out


def _pick_vertices(rng: np.random.Generator, weights: np.ndarray, count: int) -> np.ndarray:
    total = weights.sum()
    if count == 0 or total <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(len(weights), size=count, p=weights / total)


def _freckles(frame: _FaceFrame, rng: np.random.Generator, density: float) -> np.ndarray:
    u = frame.unit
    xy = frame.xy
    nose_bridge = frame.lm[28]
    zone = np.exp(-0.5 * (((xy - nose_bridge) / (np.array([0.45, 0.22]) * u)) ** 2).sum(1))
    allowed = frame.mask("face") & ~frame.mask("eye_surround") & ~frame.mask("lips") & ~frame.mask("brows")
    count = int(round(40 + 200 * density))
    picks = _pick_vertices(rng, zone * allowed, count)
    centres = xy[picks] + rng.normal(0, 0.3 * frame.edge, (len(picks), 2))
    radii = np.maximum(rng.uniform(0.006, 0.014, len(picks)) * u, 0.6 * frame.edge)
    darkness = rng.uniform(0.08, 0.22, len(picks))
    return np.clip(_spots(frame, centres, radii, darkness), 0, 0.35)


def _moles(frame: _FaceFrame, rng: np.random.Generator, count: int) -> np.ndarray:
    allowed = (frame.mask("face") & ~frame.mask("eye_surround") & ~frame.mask("lips")
               & ~frame.mask("brows")).astype(np.float64)
    picks = _pick_vertices(rng, allowed, count)
    radii = np.maximum(rng.uniform(0.010, 0.020, len(picks)) * frame.unit, 0.7 * frame.edge)
    darkness = rng.uniform(0.35, 0.6, len(picks))
    return np.clip(_spots(frame, frame.xy[picks], radii, darkness), 0, 0.7)


def _stubble(frame: _FaceFrame, rng: np.random.Generator, level: float) -> np.ndarray:
    """Independent per-vertex speckle (the highest frequency the mesh holds) under a soft beard mask."""
    speckle = rng.random(frame.n) ** 1.5
    area = frame.soft_mask("beard_area") * (1 - frame.soft_mask("lips"))
    return level * area * (0.12 + 0.35 * speckle)


def _wrinkle_lines(frame: _FaceFrame, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """Polylines (K, 2) with a relative strength each: forehead, crow's feet, under-eye, nasolabial."""
    u, lm = frame.unit, frame.lm
    lines = []
    brow_top = lm[17:27, 1].max()
    for k in range(rng.integers(2, 6)):
        xs = np.linspace(-0.34, 0.34, 24) * u * rng.uniform(0.8, 1.1)
        base = brow_top + (0.08 + 0.065 * k + rng.normal(0, 0.008)) * u
        ys = base + 0.012 * u * np.sin(2 * np.pi * xs / (rng.uniform(0.4, 0.7) * u) + rng.uniform(0, 6.3)) \
            + 0.03 * u * (xs / (0.34 * u)) ** 2
        lines.append((np.stack([xs + lm[27, 0], ys], 1), rng.uniform(0.6, 1.0)))
    for corner, side in ((lm[36], -1.0), (lm[45], 1.0)):
        for angle in np.deg2rad([-28, -5, 18]) + rng.normal(0, 0.08, 3):
            direction = np.array([side * np.cos(angle), np.sin(angle)])
            start = corner + direction * 0.02 * u
            end = start + direction * rng.uniform(0.05, 0.09) * u
            lines.append((np.stack([start, end]), rng.uniform(0.5, 0.9)))
    for eye, inner, outer in ((frame.eye_left, lm[39], lm[36]), (frame.eye_right, lm[42], lm[45])):
        ts = np.linspace(0, 1, 10)
        xs = inner[0] + (outer[0] - inner[0]) * ts
        ys = eye[1] - (0.045 + 0.02 * np.sin(np.pi * ts)) * u
        lines.append((np.stack([xs, ys], 1), rng.uniform(0.3, 0.6)))
    for ala, mouth_corner, side in ((lm[31], lm[48], -1.0), (lm[35], lm[54], 1.0)):
        start = ala + np.array([side * 0.05, 0.03]) * u
        end = mouth_corner + np.array([side * 0.04, -0.04]) * u
        ts = np.linspace(0, 1, 12)[:, None]
        bulge = np.array([side * 0.03, 0.0]) * u * np.sin(np.pi * ts)
        lines.append((start + (end - start) * ts + bulge, rng.uniform(0.7, 1.0)))
    return lines


def _wrinkles(frame: _FaceFrame, rng: np.random.Generator, level: float) -> np.ndarray:
    width = max(0.005 * frame.unit, 0.5 * frame.edge)
    darkness = _lines_darkness(frame, _wrinkle_lines(frame, rng), width)
    allowed = frame.mask("face") & ~frame.mask("eyes") & ~frame.mask("lips") & ~frame.mask("brows")
    return 0.22 * level * darkness * allowed


def sample_detail(
    model: MorphableModel,
    rng: np.random.Generator | torch.Generator,
    config: DetailConfig = DetailConfig(),
    base_albedo: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Draw one identity's albedo detail.

    model: the morphable model (mean shape, landmarks68, triangles, optional extras["regions"]).
    rng: numpy Generator or torch Generator; the same generator state gives the same detail.
    base_albedo: (N, 3) albedo in [0, 1] the detail goes onto (default: the model's mean albedo); dark
        marks darken it multiplicatively and make-up blends towards its colour, so base + delta stays
        in [0, 1].
    Returns (albedo_delta (N, 3) float32 on the model's device, labels) with labels keyed by
    DETAIL_LABEL_NAMES.
    """
    gen = _numpy_rng(rng)
    frame = _frame_of(model)
    base_t = model.mean_albedo if base_albedo is None else base_albedo
    base = base_t.detach().cpu().double().numpy().reshape(frame.n, 3)
    s = config.strength

    has_freckles = gen.random() < config.freckles_prob
    freckle_density = float(gen.uniform(0.2, 1.0)) if has_freckles else 0.0
    num_moles = int(min(gen.poisson(config.moles_per_face), 5))
    stubble = float(gen.uniform(0.3, 1.0)) if gen.random() < config.stubble_prob else 0.0
    wrinkles = float(gen.uniform(0.2, 1.0)) if gen.random() < config.wrinkles_prob else 0.0
    makeup = gen.random() < config.makeup_prob
    lipstick = makeup and gen.random() < 0.8
    eyeshadow = makeup and gen.random() < 0.6
    blush = makeup and gen.random() < 0.5

    factor = np.ones((frame.n, 3))
    if has_freckles:
        factor *= 1 - s * _freckles(frame, gen, freckle_density)[:, None] * FRECKLE_TINT
    if num_moles:
        factor *= 1 - s * _moles(frame, gen, num_moles)[:, None] * MOLE_TINT
    if stubble:
        factor *= 1 - s * _stubble(frame, gen, stubble)[:, None] * HAIR_TINT
    if wrinkles:
        factor *= 1 - s * _wrinkles(frame, gen, wrinkles)[:, None] * WRINKLE_TINT
    albedo = base * np.clip(factor, 0, 1)

    def blend(weight: np.ndarray, colour) -> None:
        nonlocal albedo
        w = np.clip(s * weight, 0, 1)[:, None]
        albedo = albedo * (1 - w) + w * np.asarray(colour)[None]

    if lipstick:
        lips = frame.soft_mask("lips") * frame.mask("lips") * (1 - frame.soft_mask("mouth_line"))
        blend(gen.uniform(0.45, 0.85) * lips, LIPSTICK_COLOURS[gen.integers(len(LIPSTICK_COLOURS))])
    if eyeshadow:
        lids = frame.smooth(frame.mask("upper_lids").astype(np.float64), 2)
        blend(gen.uniform(0.3, 0.6) * lids, EYESHADOW_COLOURS[gen.integers(len(EYESHADOW_COLOURS))])
    if blush:
        cheeks = frame.smooth(frame.mask("cheeks").astype(np.float64), 4)
        blend(gen.uniform(0.12, 0.28) * cheeks, BLUSH_COLOUR)

    delta = torch.from_numpy((albedo - base).astype(np.float32)).to(model.device)
    labels = {
        "has_freckles": float(has_freckles), "freckle_density": freckle_density, "num_moles": float(num_moles),
        "stubble": stubble, "wrinkles": wrinkles, "makeup": float(makeup), "lipstick": float(lipstick),
        "eyeshadow": float(eyeshadow), "blush": float(blush),
    }
    return delta, labels
