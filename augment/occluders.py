"""Synthetic occluders and backgrounds, drawn procedurally as (RGB, alpha) layers.

One implementation serves both the SynthFaces dataset and the self-augmentation loop. Every
shape is drawn from an (approximate) signed distance field in pixels, so edges are antialiased
and shapes scale with the image. All randomness comes from the `torch.Generator` passed in, so a
seeded generator gives the same layers every time; the tensors live on the generator's device.

Pixel coordinates follow `render.camera`: x points right, y points down, and pixel (i, j) has its
centre at (j + 0.5, i + 0.5). Five landmarks are, in order: left eye, right eye, nose tip, left
mouth corner, right mouth corner (pixels). Occluders that belong on a face (glasses, masks, hands,
hair) are placed in a face frame built from them: the origin is the eye midpoint, `u` runs along
the eye line and `v` towards the mouth, both in units of the inter-ocular distance.

Kinds (`OCCLUDER_KINDS`):
    glasses  two lens rims, a bridge and temple arms; sometimes dark sunglasses.
    hand     a skin-toned palm with fingers, thumb and wrist, or a skin-toned blob with
             finger-like lobes, over a random part of the face.
    hair     thin dark curved strands falling from above the forehead.
    mask     a surgical/cloth mask over the nose, mouth and chin, with pleats and ear loops.
    noise    a rotated patch of blocky colour or grey noise.
    texture  a patch (rectangle, ellipse or blob) of stripes, checks, dots or smooth noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

OCCLUDER_KINDS: tuple[str, ...] = ("glasses", "hand", "hair", "mask", "noise", "texture")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "linear_gradient", "radial_gradient", "noise", "texture", "shapes")

# Typical aligned layout as fractions of the image size (x, y): eyes, nose tip, mouth corners.
_ALIGNED_LANDMARKS5 = ((0.36, 0.42), (0.64, 0.42), (0.50, 0.58), (0.39, 0.72), (0.61, 0.72))

# RGB in [0, 1], light to dark.
_SKIN_TONES = (
    (0.96, 0.82, 0.71), (0.93, 0.74, 0.60), (0.84, 0.63, 0.48),
    (0.70, 0.49, 0.34), (0.53, 0.36, 0.24), (0.36, 0.24, 0.16),
)
_HAIR_COLOURS = (
    (0.05, 0.04, 0.03), (0.13, 0.08, 0.05), (0.25, 0.15, 0.08),
    (0.38, 0.20, 0.10), (0.72, 0.58, 0.36), (0.55, 0.53, 0.52),
)
_FRAME_COLOURS = (
    (0.04, 0.04, 0.04), (0.22, 0.13, 0.07), (0.78, 0.64, 0.32),
    (0.72, 0.72, 0.74), (0.55, 0.08, 0.10), (0.10, 0.18, 0.45),
)
_MASK_COLOURS = (
    (0.56, 0.76, 0.90), (0.93, 0.94, 0.95), (0.10, 0.10, 0.11),
    (0.88, 0.66, 0.74), (0.55, 0.57, 0.60), (0.35, 0.55, 0.45),
)


@dataclass(frozen=True)
class Occluder:
    """One occluder layer.

    Attributes:
        rgb: (3, H, W) colour in [0, 1] (straight, not premultiplied).
        alpha: (1, H, W) coverage in [0, 1]; 0 where the occluder is absent.
        kind: one of OCCLUDER_KINDS.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    kind: str


def composite(image: torch.Tensor, rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Paste a layer over an image: image * (1 - alpha) + rgb * alpha.

    image: (..., 3, H, W) in [0, 1]; rgb: (..., 3, H, W); alpha: (..., 1, H, W) in [0, 1].
    """
    return image * (1.0 - alpha) + rgb * alpha


def default_landmarks5(size: int) -> torch.Tensor:
    """(5, 2) pixel coordinates of a typical frontal, aligned face in a size x size image."""
    return torch.tensor(_ALIGNED_LANDMARKS5, dtype=torch.float32) * size


def sample_occluder(
    kind: str | None,
    size: int,
    generator: torch.Generator,
    landmarks5: torch.Tensor | None = None,
) -> Occluder:
    """Draw one occluder layer for a size x size image.

    kind: one of OCCLUDER_KINDS, or None to pick one uniformly.
    landmarks5: (5, 2) pixel coordinates (see the module docstring), or None to place the
        occluder relative to a random plausible face layout.
    Returns an Occluder on the generator's device.
    """
    rnd = _Random(generator)
    if kind is None:
        kind = rnd.choice(OCCLUDER_KINDS)
    if kind not in _DRAWERS:
        raise ValueError(f"unknown occluder kind '{kind}'; use one of {', '.join(OCCLUDER_KINDS)}")
    if landmarks5 is None:
        landmarks5 = _random_landmarks5(rnd, size)
    frame = _FaceFrame.from_landmarks(landmarks5.detach().to("cpu", torch.float32))
    rgb_window, alpha_window, window = _DRAWERS[kind](rnd, size, frame)
    x0, y0, x1, y1 = window.box
    rgb = torch.zeros(3, size, size, device=rnd.device)
    alpha = torch.zeros(1, size, size, device=rnd.device)
    rgb[:, y0:y1, x0:x1] = rgb_window.clamp(0.0, 1.0)
    alpha[0, y0:y1, x0:x1] = alpha_window.clamp(0.0, 1.0)
    return Occluder(rgb=rgb, alpha=alpha, kind=kind)


def occlude(
    images: torch.Tensor,
    generator: torch.Generator,
    landmarks5: torch.Tensor | None = None,
    kinds: Sequence[str] | None = None,
    p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one random occluder on each image with probability p.

    images: (B, 3, S, S) in [0, 1].
    landmarks5: (B, 5, 2) pixel coordinates, or None for random face layouts.
    kinds: the kinds to choose from uniformly (default: all of OCCLUDER_KINDS).
    Returns (occluded images (B, 3, S, S), occluder alpha (B, 1, S, S) in [0, 1], zero for
    images left clean). Both are on the images' device and dtype.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"occlude expects square (B, 3, S, S) images, got {tuple(images.shape)}")
    kinds = tuple(kinds) if kinds is not None else OCCLUDER_KINDS
    batch, _, size, _ = images.shape
    rnd = _Random(generator)
    layers_rgb = torch.zeros_like(images)
    layers_alpha = images.new_zeros(batch, 1, size, size)
    for index in range(batch):
        if rnd.uniform() >= p:
            continue
        marks = landmarks5[index] if landmarks5 is not None else None
        layer = sample_occluder(rnd.choice(kinds), size, generator, marks)
        layers_rgb[index] = layer.rgb.to(images)
        layers_alpha[index] = layer.alpha.to(images)
    return composite(images, layers_rgb, layers_alpha), layers_alpha


def sample_background(size: int, generator: torch.Generator, kind: str | None = None) -> torch.Tensor:
    """A random (3, size, size) background in [0, 1] on the generator's device.

    kind: one of BACKGROUND_KINDS or None to pick one uniformly.
    """
    rnd = _Random(generator)
    if kind is None:
        kind = rnd.choice(BACKGROUND_KINDS)
    canvas = _Canvas(size, rnd.device)
    if kind == "plain":
        image = _colour_field(_random_colour(rnd), canvas) + 0.03 * (_value_noise(rnd, canvas, 3, (size // 4,)) - 0.5)
    elif kind == "linear_gradient":
        angle = rnd.uniform(0.0, 2.0 * math.pi)
        t = (math.cos(angle) * (canvas.xs / size - 0.5) + math.sin(angle) * (canvas.ys / size - 0.5)) + 0.5
        image = _mix(_random_colour(rnd), _random_colour(rnd), t.clamp(0.0, 1.0), canvas)
    elif kind == "radial_gradient":
        cx, cy = rnd.uniform(0.0, size), rnd.uniform(0.0, size)
        radius = rnd.uniform(0.4, 1.0) * size
        t = (torch.hypot(canvas.xs - cx, canvas.ys - cy) / radius).clamp(0.0, 1.0)
        image = _mix(_random_colour(rnd), _random_colour(rnd), t, canvas)
    elif kind == "noise":
        t = _value_noise(rnd, canvas, 1, (3, 6, 12, 24))[0]
        image = _mix(_random_colour(rnd), _random_colour(rnd), t, canvas)
        image = image + 0.1 * (_value_noise(rnd, canvas, 3, (16, 32)) - 0.5)
    elif kind == "texture":
        pattern = _pattern(rnd, canvas, frequency_range=(0.02, 0.09))
        image = _colour_field((0.5, 0.5, 0.5), canvas) * 0.4 + 0.6 * pattern
        image = _blur(image, rnd.uniform(0.0, 1.5) * size / 224.0)
    elif kind == "shapes":  # out-of-focus blocks, like furniture or a room behind the subject
        image = _colour_field(_random_colour(rnd), canvas)
        for _ in range(rnd.randint(3, 8)):
            cx, cy = rnd.uniform(0.0, size), rnd.uniform(0.0, size)
            a, b = rnd.uniform(0.08, 0.5) * size, rnd.uniform(0.08, 0.5) * size
            u, v = canvas.rotated(cx, cy, rnd.uniform(0.0, math.pi))
            if rnd.uniform() < 0.5:
                shape_sd = _box_sd(u, v, a, b, rnd.uniform(0.0, 0.3) * min(a, b))
            else:
                shape_sd = _ellipse_sd(u, v, a, b)
            image = composite(image, _colour_field(_random_colour(rnd), canvas), _coverage(shape_sd)[None])
        image = _blur(image, rnd.uniform(1.0, 3.0) * size / 224.0)
    else:
        raise ValueError(f"unknown background kind '{kind}'; use one of {', '.join(BACKGROUND_KINDS)}")
    return image.clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Randomness, canvas and face frame


class _Random:
    """Scalar draws from a torch.Generator (so every draw is reproducible from its seed)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.device = generator.device

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, device=self.device))

    def randint(self, low: int, high: int) -> int:
        """An integer in [low, high] inclusive."""
        return int(torch.randint(low, high + 1, (), generator=self.generator, device=self.device))

    def choice(self, options: Sequence):
        return options[self.randint(0, len(options) - 1)]

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)


class _Canvas:
    """A rectangular window of a size x size image, where a layer is drawn.

    box: (x0, y0, x1, y1) pixel indices, half-open; xs, ys: (h, w) pixel-centre coordinates of
    the window in full-image pixels, so shapes are positioned in image coordinates.
    """

    def __init__(self, size: int, device: torch.device, box: tuple[int, int, int, int] | None = None):
        self.size = size
        self.device = device
        self.box = box if box is not None else (0, 0, size, size)
        x0, y0, x1, y1 = self.box
        self.height, self.width = y1 - y0, x1 - x0
        xs = torch.arange(x0, x1, dtype=torch.float32, device=device) + 0.5
        ys = torch.arange(y0, y1, dtype=torch.float32, device=device) + 0.5
        self.ys, self.xs = torch.meshgrid(ys, xs, indexing="ij")

    @staticmethod
    def around(size: int, device: torch.device, points: Sequence[tuple[float, float]], margin: float) -> "_Canvas":
        """The window covering `points` (pixels) plus `margin` pixels, clipped to the image."""
        xs, ys = [p[0] for p in points], [p[1] for p in points]

        def span(low: float, high: float) -> tuple[int, int]:
            start = min(max(int(math.floor(low - margin)), 0), size - 1)
            stop = min(max(int(math.ceil(high + margin)), start + 1), size)
            return start, stop

        x0, x1 = span(min(xs), max(xs))
        y0, y1 = span(min(ys), max(ys))
        return _Canvas(size, device, (x0, y0, x1, y1))

    def rotated(self, cx: float, cy: float, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates relative to (cx, cy), rotated by -angle: (h, w) each, pixels."""
        dx, dy = self.xs - cx, self.ys - cy
        c, s = math.cos(angle), math.sin(angle)
        return c * dx + s * dy, -s * dx + c * dy


@dataclass(frozen=True)
class _FaceFrame:
    """Eye-midpoint frame; `scale` is the inter-ocular distance in pixels."""

    origin: tuple[float, float]
    across: tuple[float, float]
    down: tuple[float, float]
    scale: float
    nose_v: float
    mouth_v: float
    mouth_half_width: float

    @staticmethod
    def from_landmarks(landmarks5: torch.Tensor) -> "_FaceFrame":
        """landmarks5: (5, 2) pixels."""
        if landmarks5.shape != (5, 2):
            raise ValueError(f"landmarks5 must be (5, 2) pixel coordinates, got {tuple(landmarks5.shape)}")
        eye_left, eye_right, nose, mouth_left, mouth_right = [p.tolist() for p in landmarks5]
        ox, oy = (eye_left[0] + eye_right[0]) / 2, (eye_left[1] + eye_right[1]) / 2
        ax, ay = eye_right[0] - eye_left[0], eye_right[1] - eye_left[1]
        mx, my = (mouth_left[0] + mouth_right[0]) / 2 - ox, (mouth_left[1] + mouth_right[1]) / 2 - oy
        scale = math.hypot(ax, ay)
        if scale < 1e-3:  # coincident eyes (extreme yaw): fall back on the eye-mouth distance
            scale = max(math.hypot(mx, my) / 1.1, 1.0)
            ax, ay = -my, mx
            if math.hypot(ax, ay) < 1e-6:
                ax, ay = 1.0, 0.0
        ax, ay = ax / math.hypot(ax, ay), ay / math.hypot(ax, ay)
        dx, dy = -ay, ax
        if dx * mx + dy * my < 0:  # "down" points towards the mouth whatever the eye order
            dx, dy = -dx, -dy
        mouth_v = max((dx * mx + dy * my) / scale, 0.5)
        nose_v = ((nose[0] - ox) * dx + (nose[1] - oy) * dy) / scale
        nose_v = min(max(nose_v, 0.2 * mouth_v), 0.9 * mouth_v)
        mouth_half_width = math.hypot(mouth_right[0] - mouth_left[0], mouth_right[1] - mouth_left[1]) / scale / 2
        return _FaceFrame((ox, oy), (ax, ay), (dx, dy), scale, nose_v, mouth_v, max(mouth_half_width, 0.15))

    def local(self, canvas: _Canvas) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v): (h, w) each, in inter-ocular units."""
        dx, dy = canvas.xs - self.origin[0], canvas.ys - self.origin[1]
        u = (dx * self.across[0] + dy * self.across[1]) / self.scale
        v = (dx * self.down[0] + dy * self.down[1]) / self.scale
        return u, v

    def to_pixels(self, u: float, v: float) -> tuple[float, float]:
        return (
            self.origin[0] + self.scale * (u * self.across[0] + v * self.down[0]),
            self.origin[1] + self.scale * (u * self.across[1] + v * self.down[1]),
        )

    def window(self, size: int, device: torch.device, points_uv: Sequence[tuple[float, float]], margin_px: float) -> _Canvas:
        """The canvas window covering face-frame points (inter-ocular units) plus a margin."""
        return _Canvas.around(size, device, [self.to_pixels(u, v) for u, v in points_uv], margin_px)


def _random_landmarks5(rnd: _Random, size: int) -> torch.Tensor:
    """A plausible random face layout: (5, 2) pixels."""
    iod = rnd.uniform(0.18, 0.36) * size
    roll = rnd.uniform(-0.3, 0.3)
    ox, oy = rnd.uniform(0.3, 0.7) * size, rnd.uniform(0.3, 0.55) * size
    local = [(-0.5, 0.0), (0.5, 0.0), (rnd.uniform(-0.1, 0.1), rnd.uniform(0.55, 0.75))]
    mouth_v, mouth_half = rnd.uniform(1.0, 1.2), rnd.uniform(0.33, 0.45)
    local += [(-mouth_half, mouth_v), (mouth_half, mouth_v)]
    c, s = math.cos(roll), math.sin(roll)
    points = [(ox + iod * (c * u - s * v), oy + iod * (s * u + c * v)) for u, v in local]
    return torch.tensor(points, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# Shape primitives: signed distances (negative inside) and coverage


def _coverage(signed_distance_px: torch.Tensor, softness_px: float = 1.0) -> torch.Tensor:
    """Antialiased coverage in [0, 1] of the region where the signed distance (pixels) is < 0."""
    return (0.5 - signed_distance_px / softness_px).clamp(0.0, 1.0)


def _ellipse_sd(u: torch.Tensor, v: torch.Tensor, a: float, b) -> torch.Tensor:
    """Approximate signed distance to the ellipse (u/a)^2 + (v/b)^2 = 1, in the unit of u, v.

    First order (level / |gradient|): exact on the boundary, good within a few pixels of it.
    """
    qu, qv = u / a, v / b
    level = torch.sqrt(qu * qu + qv * qv)
    grad = torch.sqrt((qu / a) ** 2 + (qv / b) ** 2) / level.clamp_min(1e-6)
    return (level - 1.0) / grad.clamp_min(1e-6)


def _superellipse_sd(u: torch.Tensor, v: torch.Tensor, a: float, b, n: float) -> torch.Tensor:
    """Approximate signed distance to |u/a|^n + |v/b|^n = 1 (n=2 ellipse, larger n squarer).

    u, v: (h, w) in any unit; a, b: semi-axes in the same unit (b may be a tensor); the result is
    in that unit, first order like `_ellipse_sd`.
    """
    au = (u.abs() / a).clamp_min(1e-4)
    av = (v.abs() / b).clamp_min(1e-4)
    radius = (au.pow(n) + av.pow(n)).pow(1.0 / n)
    grad = torch.sqrt((au.pow(n - 1) / a) ** 2 + (av.pow(n - 1) / b) ** 2) * radius.pow(1.0 - n)
    return (radius - 1.0) / grad.clamp_min(1e-6)


def _box_sd(u: torch.Tensor, v: torch.Tensor, a: float, b: float, corner: float = 0.0) -> torch.Tensor:
    """Exact signed distance to a box of half sizes (a, b) with rounded corners of radius `corner`."""
    qu = u.abs() - (a - corner)
    qv = v.abs() - (b - corner)
    outside = torch.hypot(qu.clamp_min(0.0), qv.clamp_min(0.0))
    inside = torch.maximum(qu, qv).clamp_max(0.0)
    return outside + inside - corner


def _capsules_sd(u: torch.Tensor, v: torch.Tensor, segments: Sequence[tuple[float, float, float, float, float]]) -> torch.Tensor:
    """Signed distances to capsules (thick segments).

    u, v: (h, w); segments: K tuples (u0, v0, u1, v1, radius) in the same unit.
    Returns (K, h, w) in that unit.
    """
    params = torch.tensor(segments, dtype=u.dtype, device=u.device)
    u0, v0, u1, v1, radius = (params[:, i, None, None] for i in range(5))
    du, dv = u1 - u0, v1 - v0
    pu, pv = u[None] - u0, v[None] - v0
    t = ((pu * du + pv * dv) / (du * du + dv * dv).clamp_min(1e-9)).clamp(0.0, 1.0)
    return torch.hypot(pu - t * du, pv - t * dv) - radius


def _smooth_min(distances: torch.Tensor, blend: float) -> torch.Tensor:
    """Smooth union over dim 0 of (K, h, w) signed distances; `blend` is the fillet width."""
    return -blend * torch.logsumexp(-distances / blend, dim=0)


def _over(top_rgb, top_alpha, bottom_rgb, bottom_alpha):
    """Porter-Duff 'over' for straight colours: (3, h, w), (h, w) each -> (rgb, alpha)."""
    alpha = top_alpha + bottom_alpha * (1.0 - top_alpha)
    rgb = (top_rgb * top_alpha + bottom_rgb * bottom_alpha * (1.0 - top_alpha)) / alpha.clamp_min(1e-6)
    return rgb, alpha


# --------------------------------------------------------------------------------------------
# Colour and pattern fields


def _random_colour(rnd: _Random) -> tuple[float, float, float]:
    return (rnd.uniform(), rnd.uniform(), rnd.uniform())


def _jitter(rnd: _Random, colour: Sequence[float], amount: float) -> tuple[float, float, float]:
    return tuple(min(max(c + rnd.uniform(-amount, amount), 0.0), 1.0) for c in colour)


def _colour_field(colour: Sequence[float], canvas: _Canvas) -> torch.Tensor:
    """A constant colour: (3, h, w)."""
    value = torch.tensor(colour, dtype=torch.float32, device=canvas.device)
    return value[:, None, None].expand(3, canvas.height, canvas.width)


def _mix(colour_a, colour_b, t: torch.Tensor, canvas: _Canvas) -> torch.Tensor:
    """Blend two colours with weights t: (h, w) in [0, 1] -> (3, h, w)."""
    return _colour_field(colour_a, canvas) * (1.0 - t) + _colour_field(colour_b, canvas) * t


def _value_noise(rnd: _Random, canvas: _Canvas, channels: int, cells: Sequence[int]) -> torch.Tensor:
    """Smooth fractal noise: octaves of upsampled random grids, summed.

    cells: grid resolutions of the octaves across the full image (coarse first; each finer
    octave has half the weight). Returns (channels, h, w), roughly in [0, 1].
    """
    extent = max(canvas.height, canvas.width) / canvas.size
    counts = [max(int(round(c * extent)), 1) + 1 for c in cells]
    working = min(max(canvas.height, canvas.width), 2 * max(counts) + 2)  # octaves are summed here
    total = torch.zeros(1, channels, working, working, device=canvas.device)
    weight_sum = 0.0
    for octave, count in enumerate(counts):
        weight = 0.5 ** octave
        grid = rnd.rand(1, channels, count, count)
        total += weight * F.interpolate(grid, size=(working, working), mode="bilinear", align_corners=True)
        weight_sum += weight
    total = F.interpolate(total, size=(canvas.height, canvas.width), mode="bicubic", align_corners=True)[0]
    return (total / weight_sum).clamp(0.0, 1.0)


def _blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, h, w) with standard deviation sigma_px (pixels)."""
    if sigma_px < 0.25:
        return image
    radius = max(1, int(math.ceil(2.5 * sigma_px)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    # Shifted-slice sums: for small kernels much faster on CPU than a grouped convolution.
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")[0]
    height, width = image.shape[-2:]
    rows = sum(kernel[i] * padded[:, :, i:i + width] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[:, i:i + height, :] for i in range(2 * radius + 1))


def _pattern(rnd: _Random, canvas: _Canvas, frequency_range=(0.04, 0.16)) -> torch.Tensor:
    """A pattern over the canvas: stripes, checks, dots or smooth noise, (3, h, w) in [0, 1].

    frequency_range: cycles per pixel at 224 px (scaled with the image size).
    """
    style = rnd.choice(("stripes", "checker", "dots", "noise"))
    colour_a, colour_b = _random_colour(rnd), _random_colour(rnd)
    frequency = rnd.uniform(*frequency_range) * 224.0 / canvas.size
    u, v = canvas.rotated(0.0, 0.0, rnd.uniform(0.0, math.pi))
    phase = rnd.uniform(0.0, 2.0 * math.pi)
    if style == "stripes":
        wave = torch.sin(2.0 * math.pi * frequency * u + phase)
        t = (0.5 + 0.5 * wave / 0.3).clamp(0.0, 1.0)  # a slightly soft square wave
    elif style == "checker":
        t = ((torch.sin(2.0 * math.pi * frequency * u + phase) * torch.sin(2.0 * math.pi * frequency * v)) > 0).float()
    elif style == "dots":
        period = 1.0 / frequency
        cu = torch.remainder(u, period) - period / 2
        cv = torch.remainder(v, period) - period / 2
        t = _coverage(torch.hypot(cu, cv) - rnd.uniform(0.2, 0.4) * period)
    else:
        t = _value_noise(rnd, canvas, 1, (4, 8, 16, 32))[0]
        t = ((t - 0.5) * rnd.uniform(2.0, 4.0) + 0.5).clamp(0.0, 1.0)
    return _mix(colour_a, colour_b, t, canvas)


# --------------------------------------------------------------------------------------------
# Drawers: (rnd, size, frame) -> (rgb (3, h, w), alpha (h, w), the window they cover)


def _draw_glasses(rnd: _Random, size: int, frame: _FaceFrame):
    px = frame.scale  # pixels per inter-ocular unit
    half_width = rnd.uniform(0.34, 0.45)
    half_height_top = half_width * rnd.uniform(0.55, 0.8)
    half_height_bottom = half_height_top * rnd.uniform(1.0, 1.3)
    roundness = rnd.uniform(2.0, 5.0)
    centre_u = 0.5 + rnd.uniform(-0.02, 0.05)
    centre_v = rnd.uniform(-0.04, 0.08)
    rim = max(rnd.uniform(0.025, 0.075), 1.2 / px)  # at least ~1 pixel wide
    sunglasses = rnd.uniform() < 0.4
    inner_u, outer_u = centre_u - half_width, centre_u + half_width
    bridge_v = centre_v - half_height_top * rnd.uniform(0.2, 0.6)
    arch = rnd.uniform(0.0, 0.08)
    arm_v = centre_v - half_height_top * rnd.uniform(0.4, 0.8)
    arm_length = rnd.uniform(0.25, 0.5)
    arm_drop = rnd.uniform(-0.05, 0.08)
    frame_colour = _jitter(rnd, rnd.choice(_FRAME_COLOURS), 0.05)
    if sunglasses:
        lens_colour = _jitter(rnd, rnd.choice(((0.05, 0.05, 0.06), (0.18, 0.11, 0.06), (0.06, 0.12, 0.08))), 0.03)
        lens_opacity = rnd.uniform(0.85, 0.97)
    else:
        lens_colour = _jitter(rnd, (0.85, 0.9, 0.95), 0.05)
        lens_opacity = rnd.uniform(0.06, 0.18)
    streak_offset = rnd.uniform(-0.2, 0.2)

    extent_u = outer_u + arm_length + rim
    corners = [(-extent_u, bridge_v - arch - half_height_top), (extent_u, bridge_v - arch - half_height_top),
               (-extent_u, centre_v + half_height_bottom + rim + abs(arm_drop)),
               (extent_u, centre_v + half_height_bottom + rim + abs(arm_drop))]
    canvas = frame.window(size, rnd.device, corners, margin_px=3.0)
    u, v = frame.local(canvas)

    lens_sd = []
    for side in (-1.0, 1.0):
        lu, lv = u - side * centre_u, v - centre_v
        half_height = torch.where(lv > 0, torch.full_like(lv, half_height_bottom), torch.full_like(lv, half_height_top))
        lens_sd.append(_superellipse_sd(lu, lv, half_width, half_height, roundness) * px)
    lens_sd = torch.minimum(lens_sd[0], lens_sd[1])

    r = rim / 2
    segments = [
        (-inner_u - r, bridge_v, 0.0, bridge_v - arch, r),
        (0.0, bridge_v - arch, inner_u + r, bridge_v, r),
        (-outer_u + r, arm_v, -outer_u - arm_length, arm_v + arm_drop, r),
        (outer_u - r, arm_v, outer_u + arm_length, arm_v + arm_drop, r),
    ]
    bars_sd = _capsules_sd(u, v, segments).amin(dim=0) * px
    frame_alpha = _coverage(torch.minimum(lens_sd.abs() - r * px, bars_sd))
    shine = 0.85 + 0.3 * torch.sigmoid(-(v - centre_v) * 6.0)  # glossy top edge of the rim
    frame_rgb = _colour_field(frame_colour, canvas) * shine

    inside = _coverage(lens_sd)
    streak = torch.exp(-(((u.abs() - centre_u) + (v - centre_v) - streak_offset) / 0.08) ** 2)  # reflection
    lens_rgb = _colour_field(lens_colour, canvas) + 0.35 * streak
    lens_alpha = inside * (lens_opacity + (1.0 - lens_opacity) * 0.5 * streak)
    rgb, alpha = _over(frame_rgb, frame_alpha, lens_rgb, lens_alpha)
    return rgb, alpha, canvas


def _draw_hand(rnd: _Random, size: int, frame: _FaceFrame):
    px = frame.scale
    targets = [(-0.5, 0.0), (0.5, 0.0), (0.0, frame.nose_v), (0.0, frame.mouth_v),
               (0.0, frame.mouth_v + 0.5), (-0.75, frame.nose_v), (0.75, frame.nose_v)]
    target_u, target_v = rnd.choice(targets)
    centre_u = target_u + rnd.uniform(-0.25, 0.25)
    centre_v = target_v + rnd.uniform(-0.25, 0.25)
    angle = rnd.uniform(0.0, 2.0 * math.pi)  # where the fingers point, in the (u, v) plane
    fu, fv = math.cos(angle), math.sin(angle)  # along the fingers
    lu, lv = -fv, fu  # across the palm
    scale = rnd.uniform(1.1, 1.45)

    def at(along: float, across: float) -> tuple[float, float]:
        return (centre_u + scale * (along * fu + across * lu), centre_v + scale * (along * fv + across * lv))

    palm_length, palm_width = 0.5, rnd.uniform(0.44, 0.52)
    lobes = []  # capsules (u0, v0, u1, v1, radius), face-frame units
    is_hand = rnd.uniform() < 0.75
    if is_hand:  # four fingers, a thumb and the wrist
        spread = rnd.uniform(0.0, 0.2)
        curl = rnd.uniform(0.55, 1.0)
        mirror = rnd.choice((-1.0, 1.0))
        for index, (offset, length) in enumerate(zip((-0.75, -0.25, 0.25, 0.75), (0.62, 0.76, 0.7, 0.54))):
            finger_angle = (index - 1.5) * spread * mirror + rnd.uniform(-0.05, 0.05)
            base_along, base_across = palm_length * 0.8, mirror * offset * palm_width
            tip_length = length * curl * rnd.uniform(0.9, 1.1)
            tip_along = base_along + tip_length * math.cos(finger_angle)
            tip_across = base_across + tip_length * math.sin(finger_angle)
            lobes.append((*at(base_along, base_across), *at(tip_along, tip_across), scale * rnd.uniform(0.1, 0.115)))
        thumb_angle = rnd.uniform(0.5, 1.2)  # away from the fingers, on the side `-mirror`
        base = (-0.1, -mirror * palm_width * 0.85)
        tip = (base[0] + 0.5 * math.cos(thumb_angle), base[1] - mirror * 0.5 * math.sin(thumb_angle))
        lobes.append((*at(*base), *at(*tip), scale * 0.125))
        crease_count = len(lobes)
        wrist_width = palm_width * rnd.uniform(0.75, 0.9)
        lobes.append((*at(-0.3, 0.0), *at(-4.0, rnd.uniform(-0.6, 0.6)), scale * wrist_width))
        blend = 0.025
    else:  # a skin-toned blob with a few finger-like lobes
        for _ in range(rnd.randint(2, 5)):
            lobe_angle = rnd.uniform(-math.pi, math.pi)
            length = rnd.uniform(0.4, 0.9)
            start = (palm_length * 0.5 * math.cos(lobe_angle), palm_width * 0.5 * math.sin(lobe_angle))
            end = (start[0] + length * math.cos(lobe_angle), start[1] + length * math.sin(lobe_angle))
            lobes.append((*at(*start), *at(*end), scale * rnd.uniform(0.1, 0.2)))
        crease_count = 0
        blend = 0.08
    skin = _jitter(rnd, rnd.choice(_SKIN_TONES), 0.04)
    light_angle = rnd.uniform(0.0, 2.0 * math.pi)

    outline = [at(sa * palm_length, sb * palm_width) for sa in (-1, 1) for sb in (-1, 1)]
    outline += [(seg[0], seg[1]) for seg in lobes] + [(seg[2], seg[3]) for seg in lobes]
    widest = max(seg[4] for seg in lobes)
    canvas = frame.window(size, rnd.device, outline, margin_px=(widest + blend) * px + 3.0)
    u, v = frame.local(canvas)
    pu, pv = u - centre_u, v - centre_v
    palm_sd = _superellipse_sd(pu * fu + pv * fv, pu * lu + pv * lv, scale * palm_length, scale * palm_width, 3.0)
    lobe_sd = _capsules_sd(u, v, lobes)
    hand_sd = _smooth_min(torch.cat([palm_sd[None], lobe_sd]), blend) * px
    alpha = _coverage(hand_sd)

    # Bulge shading (brighter inside), a directional light, and darker creases along the fingers.
    bulge = (-hand_sd / (0.25 * px)).clamp(0.0, 1.0).sqrt()
    light = 0.08 * torch.tanh((math.cos(light_angle) * pu + math.sin(light_angle) * pv) / scale)
    shade = 0.78 + 0.22 * bulge + light
    if crease_count:
        crease_width = max(0.012 * px, 0.6)
        nearest_edge = lobe_sd[:crease_count].abs().amin(dim=0) * px
        creases = (1.0 - (nearest_edge / (2.0 * crease_width)) ** 2).clamp_min(0.0) ** 2  # a smooth bump
        shade = shade * (1.0 - 0.22 * creases * (hand_sd < -1.5 * crease_width).float())
    rgb = _colour_field(skin, canvas) * shade
    rgb = rgb + 0.03 * (_value_noise(rnd, canvas, 1, (12, 24)) - 0.5)
    return rgb, alpha, canvas


def _bezier_points(controls: torch.Tensor, samples: int) -> torch.Tensor:
    """Cubic Bezier curves: controls (K, 4, 2) -> points (K, samples, 2)."""
    t = torch.linspace(0.0, 1.0, samples, device=controls.device)[None, :, None]
    p0, p1, p2, p3 = (controls[:, i, None, :] for i in range(4))
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t * t * p2 + (t ** 3) * p3


def _splat(points: torch.Tensor, weights: torch.Tensor, colours: torch.Tensor, canvas: _Canvas) -> torch.Tensor:
    """Bilinearly splat weighted coloured points into the canvas window.

    points: (N, 2) image pixels (x, y); weights: (N,); colours: (N, 3).
    Returns (4, h, w): the weighted colour sum (3 channels) and the density (weight sum).
    """
    x0, y0, _, _ = canvas.box
    height, width = canvas.height, canvas.width
    grid = points - torch.tensor([x0 + 0.5, y0 + 0.5], device=points.device)  # window pixel centres at integers
    base = grid.floor()
    frac = grid - base
    values = torch.cat([colours * weights[:, None], weights[:, None]], dim=1)  # (N, 4)
    accumulator = torch.zeros(height * width, 4, device=canvas.device)
    for dx in (0, 1):
        for dy in (0, 1):
            x = base[:, 0].long() + dx
            y = base[:, 1].long() + dy
            w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            valid = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            accumulator.index_add_(0, (y * width + x)[valid], values[valid] * w[valid, None])
    return accumulator.T.reshape(4, height, width)


def _draw_hair(rnd: _Random, size: int, frame: _FaceFrame):
    px = frame.scale
    base_colour = rnd.choice(_HAIR_COLOURS[:4]) if rnd.uniform() < 0.8 else rnd.choice(_HAIR_COLOURS)
    controls_uv, shades = [], []
    for _ in range(rnd.randint(1, 4)):  # locks of roughly parallel strands
        root_u, root_v = rnd.uniform(-1.0, 1.0), rnd.uniform(-1.7, -0.9)
        length = rnd.uniform(1.0, 2.2)
        sway = rnd.uniform(-0.6, 0.6) - 0.3 * root_u  # falls slightly away from the parting
        bend = rnd.uniform(-0.4, 0.4)
        width = rnd.uniform(0.15, 0.45)
        jitter = rnd.rand(rnd.randint(12, 35), 7) * 2.0 - 1.0  # per-strand variations in [-1, 1]
        ru = root_u + width * jitter[:, 0]
        rv = root_v + 0.1 * jitter[:, 1]
        strand_length = length * (0.9 + 0.2 * jitter[:, 2])
        s = sway + 0.1 * jitter[:, 3]
        b = bend + 0.12 * jitter[:, 4]
        controls_uv.append(torch.stack([
            torch.stack([ru, rv], dim=-1),
            torch.stack([ru + (s * 0.3 + b) * strand_length, rv + strand_length * 0.33], dim=-1),
            torch.stack([ru + (s * 0.7 - b * 0.5) * strand_length, rv + strand_length * 0.66], dim=-1),
            torch.stack([ru + s * strand_length + 0.05 * jitter[:, 5], rv + strand_length * torch.cos(s * 0.6)], dim=-1),
        ], dim=1))  # (n, 4, 2)
        shades.append(1.0 + 0.25 * jitter[:, 6])
    controls_uv = torch.cat(controls_uv)
    origin = torch.tensor(frame.origin, device=rnd.device)
    axes = torch.tensor([frame.across, frame.down], device=rnd.device)  # rows: pixel directions of u and v
    controls = origin + px * controls_uv @ axes  # (K, 4, 2) pixels
    colours = (torch.tensor(base_colour, device=rnd.device) * torch.cat(shades)[:, None]).clamp(0.0, 1.0)
    thickness = max(rnd.uniform(0.35, 0.6) * size / 224.0, 0.3)  # blur sigma, pixels
    opacity = rnd.rand(controls.shape[0], 1) * 0.4 + 0.6

    low, high = controls.reshape(-1, 2).amin(dim=0).tolist(), controls.reshape(-1, 2).amax(dim=0).tolist()
    canvas = _Canvas.around(size, rnd.device, [low, high], margin=3.0 * thickness + 2.0)
    polygon_length = (controls[:, 1:] - controls[:, :-1]).norm(dim=-1).sum(dim=1).max().item()
    samples = max(int(polygon_length / 0.8), 8)  # <= 0.8 px between samples
    points = _bezier_points(controls, samples)
    spacing = (points[:, 1:] - points[:, :-1]).norm(dim=-1).mean(dim=1)  # (K,) pixels per sample
    taper = torch.linspace(1.0, 0.3, samples, device=rnd.device)[None, :]  # strands thin towards the tips
    weights = (spacing[:, None] * taper * opacity * 0.9).reshape(-1)
    per_point_colours = colours[:, None, :].expand(-1, samples, -1).reshape(-1, 3)
    layer = _blur(_splat(points.reshape(-1, 2), weights, per_point_colours, canvas), thickness)
    density = layer[3]
    rgb = torch.where(density > 1e-6, layer[:3] / density.clamp_min(1e-6), _colour_field(base_colour, canvas))
    alpha = 1.0 - torch.exp(-2.5 * density)
    return rgb, alpha, canvas


def _draw_mask(rnd: _Random, size: int, frame: _FaceFrame):
    px = frame.scale
    top_centre = frame.nose_v * rnd.uniform(0.35, 0.65)
    top_curve = rnd.uniform(0.25, 0.45)
    chin_v = frame.mouth_v + rnd.uniform(0.45, 0.65)
    bottom_curve = rnd.uniform(0.3, 0.5)
    half_width = max(frame.mouth_half_width * 2.3, 0.8) * rnd.uniform(0.95, 1.15)
    colour = _jitter(rnd, rnd.choice(_MASK_COLOURS), 0.04)
    pleat_count = rnd.randint(0, 3)
    loop_radius = max(0.012, 0.7 / px)
    loop_colour = colour if rnd.uniform() < 0.7 else (0.95, 0.95, 0.95)
    loops = []
    for s in (-1.0, 1.0):
        corner_top = (s * half_width, top_centre + top_curve * half_width ** 2 + 0.03)
        corner_bottom = (s * half_width, chin_v - bottom_curve * half_width ** 2 - 0.05)
        ear = (s * (half_width + rnd.uniform(0.2, 0.35)), rnd.uniform(0.05, 0.35))
        loops += [(*corner_top, *ear, loop_radius), (*corner_bottom, *ear, loop_radius)]
    printed = rnd.uniform() < 0.25

    outline = [(-half_width - 0.4, top_centre), (half_width + 0.4, top_centre),
               (-half_width - 0.4, chin_v), (half_width + 0.4, chin_v), (0.0, 0.0)]
    canvas = frame.window(size, rnd.device, outline, margin_px=3.0)
    u, v = frame.local(canvas)
    v_top = top_centre + top_curve * u * u
    v_bottom = chin_v - bottom_curve * u * u
    mask_sd = torch.maximum(torch.maximum(v_top - v, v - v_bottom), u.abs() - half_width) * px
    alpha = _coverage(mask_sd)

    t = ((v - v_top) / (v_bottom - v_top).clamp_min(1e-3)).clamp(0.0, 1.0)
    shade = 1.0 - 0.28 * (u / half_width).clamp(-1.0, 1.0) ** 2  # the sides turn away from the light
    pleats = torch.zeros_like(u)
    for index in range(pleat_count):
        centre = (index + 1) / (pleat_count + 1)
        distance_px = (t - centre) * (v_bottom - v_top) * px
        pleats = torch.maximum(pleats, torch.exp(-(distance_px / max(0.012 * px, 0.7)) ** 2))
    rgb = _colour_field(colour, canvas) * (shade * (1.0 - 0.22 * pleats))[None]
    if printed:  # a cloth mask with a printed pattern
        rgb = rgb * 0.6 + 0.4 * _pattern(rnd, canvas)

    loop_alpha = _coverage(_capsules_sd(u, v, loops).amin(dim=0) * px) * (u.abs() > half_width - 0.02).float()
    rgb, alpha = _over(rgb, alpha, _colour_field(loop_colour, canvas) * 0.9, loop_alpha)
    return rgb, alpha, canvas


def _patch_centre(rnd: _Random, size: int, frame: _FaceFrame) -> tuple[float, float]:
    """Near a random facial landmark half the time, anywhere in the image otherwise (pixels)."""
    if rnd.uniform() < 0.5:
        u, v = rnd.choice([(-0.5, 0.0), (0.5, 0.0), (0.0, frame.nose_v), (0.0, frame.mouth_v)])
        return frame.to_pixels(u + rnd.uniform(-0.3, 0.3), v + rnd.uniform(-0.3, 0.3))
    return rnd.uniform(0.1, 0.9) * size, rnd.uniform(0.1, 0.9) * size


def _draw_noise(rnd: _Random, size: int, frame: _FaceFrame):
    cx, cy = _patch_centre(rnd, size, frame)
    half_w, half_h = rnd.uniform(0.07, 0.22) * size, rnd.uniform(0.07, 0.22) * size
    angle = rnd.uniform(0.0, math.pi)
    reach = math.hypot(half_w, half_h)
    canvas = _Canvas.around(size, rnd.device, [(cx - reach, cy - reach), (cx + reach, cy + reach)], 2.0)
    pu, pv = canvas.rotated(cx, cy, angle)
    alpha = _coverage(_box_sd(pu, pv, half_w, half_h)) * rnd.uniform(0.8, 1.0)
    block = rnd.choice((1, 2, 4, 8))
    channels = 3 if rnd.uniform() < 0.6 else 1
    noise = rnd.rand(1, channels, -(-canvas.height // block), -(-canvas.width // block))
    noise = noise.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    noise = noise[0, :, : canvas.height, : canvas.width].expand(3, -1, -1)
    return noise, alpha, canvas


def _draw_texture(rnd: _Random, size: int, frame: _FaceFrame):
    cx, cy = _patch_centre(rnd, size, frame)
    half_w, half_h = rnd.uniform(0.08, 0.25) * size, rnd.uniform(0.08, 0.25) * size
    angle = rnd.uniform(0.0, math.pi)
    shape = rnd.choice(("rectangle", "ellipse", "blob"))
    opacity = rnd.uniform(0.85, 1.0)
    reach = math.hypot(half_w, half_h) * 1.3
    canvas = _Canvas.around(size, rnd.device, [(cx - reach, cy - reach), (cx + reach, cy + reach)], 2.0)
    pu, pv = canvas.rotated(cx, cy, angle)
    if shape == "rectangle":
        shape_sd = _box_sd(pu, pv, half_w, half_h, rnd.uniform(0.0, 0.2) * min(half_w, half_h))
    elif shape == "ellipse":
        shape_sd = _ellipse_sd(pu, pv, half_w, half_h)
    else:
        theta = torch.atan2(pv / half_h, pu / half_w)
        wobble = sum(rnd.uniform(0.0, 0.18) * torch.cos(k * theta + rnd.uniform(0.0, 2 * math.pi)) for k in (2, 3, 5))
        shape_sd = _ellipse_sd(pu, pv, half_w, half_h) - wobble * min(half_w, half_h)
    alpha = _coverage(shape_sd) * opacity
    return _pattern(rnd, canvas), alpha, canvas


_DRAWERS = {
    "glasses": _draw_glasses,
    "hand": _draw_hand,
    "hair": _draw_hair,
    "mask": _draw_mask,
    "noise": _draw_noise,
    "texture": _draw_texture,
}
assert set(_DRAWERS) == set(OCCLUDER_KINDS)
