"""SynthFace: a procedural, deterministic morphable face model with BFM's 80/64/80 layout.

The mesh is a regular grid of ``rows x cols`` vertices (``cols`` odd, so the midline is a grid column).
Column parameter s in [-1, 1] sweeps an angle around a head-like superellipse cross-section (so the
sides curve back and a yawed face still shows a head front); row parameter t in [0, 1] runs from the
chin/jaw line (bottom row) to the forehead (top row), with extra rows around the eyes and the mouth.
Facial features (forehead, brow ridge, eye sockets and eyeballs, nose with bridge, tip and alae,
lips, chin, cheeks, jaw) are smooth displacements along +z. The closed mouth is a dark band between
two grid rows (``extras["mouth_row"]`` and the row below), so opening the jaw stretches dark triangles.
UVs are the grid parameters ((s + 1) / 2, t), covering [0, 1]^2.

Units and placement fit Deep3D's camera (z = 10, focal 1015 at 224 px): one model unit is about 9.5 cm,
the face is about 1.5 units wide and 1.9 tall, the mean vertex is the origin, the face looks down +z,
y is up and +x is the subject's left (image right). "left"/"right" in mode names mean the subject's.

Coefficient convention: coefficients drawn from N(0, 1) give a plausible face for every basis.
- Identity: 80 columns, orthogonal, translation-free, RMS displacement strictly decreasing. Named
  macro modes first (see ``extras["id_names"]``), then smooth random low-frequency modes.
- Expression: 64 localised modes; named ones first (``extras["exp_names"]``), then random localised
  smooth modes. Modes in ``extras["exp_one_sided"]`` (jaw open, eyelid close, ...) are meant for
  non-negative coefficients: a negative value pushes lips or lids through each other.
- Albedo: mean in [0, 1]; 80 orthogonal modes with decreasing RMS: global skin tone first, then
  regional colours (lips, brows, cheeks, iris, ...), then smooth random colour fields.

The seed only changes the random (unnamed) modes; the mean face, masks, landmarks and named modes are
the same for every seed. ``extras`` holds: regions (dict of (N,) bool tensors: face, skin, border, eyes,
iris, eye_surround, brows, lips, mouth_line, nose, nostrils, cheeks, forehead, chin, beard_area,
upper_lids, under_eyes), mirror_index ((N,) int64 left-right mirror vertex), grid_shape (rows, cols),
mouth_row, id_names / exp_names / tex_names (one per basis column) and exp_one_sided (bools).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

from coarse.coefficients import N_EXP, N_ID, N_TEX
from coarse.morphable_model import MorphableModel, build_point_buf

DEFAULT_RESOLUTION = 95
MIN_RESOLUTION = 25

# ---- Layout (model units before centring; 1 unit ~ 9.5 cm) ----
THETA_MAX = 1.45            # radians swept by the outermost columns (about 83 degrees)
COLUMN_WARP = 0.7           # < 1 puts more columns near the midline
SUPERELLIPSE_EXPONENT = 2.3  # head cross-section |x/W|^n + |z/D|^n = 1 (n = 2 is an ellipse)
Y_CHIN, Y_JAW_ANGLE, Y_FOREHEAD, Y_TEMPLE = -0.97, -0.50, 0.97, 0.74
HALF_WIDTH = ((-1.0, 0.45), (-0.85, 0.52), (-0.65, 0.58), (-0.45, 0.67), (-0.2, 0.74), (0.1, 0.77),
              (0.4, 0.75), (0.7, 0.70), (1.0, 0.62))
FRONT_DEPTH = ((-1.0, 0.64), (-0.9, 0.72), (-0.75, 0.78), (-0.4, 0.82), (0.0, 0.83), (0.3, 0.82),
               (0.55, 0.79), (0.8, 0.72), (1.0, 0.63))

EYE_X, EYE_Y, EYE_HALF_WIDTH = 0.32, 0.22, 0.15
LID_UP, LID_LOW, EYE_TILT = 0.05, 0.035, 0.012
IRIS_RADIUS, PUPIL_RADIUS = 0.044, 0.017
MOUTH_Y, MOUTH_HALF_WIDTH = -0.50, 0.25
UPPER_LIP_HEIGHT, LOWER_LIP_HEIGHT = 0.065, 0.085
NOSE_PROFILE = ((0.40, 0.0), (0.30, 0.012), (0.22, 0.05), (0.10, 0.12), (0.0, 0.19), (-0.08, 0.26),
                (-0.13, 0.29), (-0.17, 0.27), (-0.21, 0.19), (-0.25, 0.07), (-0.29, 0.01), (-0.34, 0.0))
NOSE_HALF_WIDTH = ((0.40, 0.05), (0.25, 0.05), (0.1, 0.058), (-0.05, 0.07), (-0.14, 0.085),
                   (-0.22, 0.09), (-0.34, 0.08))

# ---- Mean albedo colours in [0, 1] ----
SKIN = (0.76, 0.58, 0.49)
LIPS = (0.72, 0.38, 0.40)
MOUTH_LINE = (0.28, 0.13, 0.13)
BROWS = (0.30, 0.22, 0.17)
SCLERA = (0.86, 0.83, 0.80)
IRIS = (0.36, 0.25, 0.17)
PUPIL = (0.04, 0.03, 0.03)
LASHES = (0.16, 0.12, 0.11)
NOSTRIL = (0.30, 0.17, 0.15)
CARUNCLE = (0.78, 0.50, 0.50)


# ------------------------------------------------------------------ small maths helpers
def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def _gauss2(x, y, cx, cy, sx, sy) -> np.ndarray:
    return np.exp(-0.5 * ((x - cx) / sx) ** 2 - 0.5 * ((y - cy) / sy) ** 2)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _curve(points) -> PchipInterpolator:
    xs, ys = zip(*sorted(points))
    return PchipInterpolator(np.array(xs), np.array(ys), extrapolate=True)


def _segment_distance(px, py, a, b) -> np.ndarray:
    """Distance from points (px, py) to the segment a-b (2-tuples)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    h = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(px - ax - h * dx, py - ay - h * dy)


# ------------------------------------------------------------------ layout
class _Layout:
    """Grid parameters and frontal positions of every vertex (arrays are (N,), N = rows * cols)."""

    def __init__(self, resolution: int):
        rows = resolution
        cols = resolution if resolution % 2 else resolution + 1
        self.rows, self.cols = rows, cols
        s_cols = np.linspace(-1.0, 1.0, cols)
        t_rows = self._row_parameters(rows)
        s, t = np.meshgrid(s_cols, t_rows)
        self.s, self.t = s.reshape(-1), t.reshape(-1)
        self.row = np.repeat(np.arange(rows), cols)
        self.col = np.tile(np.arange(cols), rows)
        self.y = self._row_height(self.s, self.t)
        # Narrowing the sweep towards the top and bottom rows rounds the outline's corners.
        sweep = 1 - 0.2 * _smoothstep(0.6, 1.0, self.t) ** 2 - 0.08 * _smoothstep(0.3, 0.0, self.t)
        self.theta = THETA_MAX * sweep * (COLUMN_WARP * self.s + (1 - COLUMN_WARP) * self.s ** 3)
        half_width = _curve(HALF_WIDTH)(self.y)
        self.x = half_width * np.sin(self.theta)
        self.x[self.col == cols // 2] = 0.0
        cos_profile = np.abs(np.cos(self.theta)) ** (2.0 / SUPERELLIPSE_EXPONENT)
        self.base_z = _curve(FRONT_DEPTH)(self.y) * cos_profile
        self.front = 1.0 - _smoothstep(0.86, 1.0, np.abs(self.s))
        self.mirror = self.row * cols + (cols - 1 - self.col)
        # The mouth opening lies between grid rows mouth_row (upper inner lip edge) and mouth_row - 1
        # (lower inner lip edge), the pair straddling MOUTH_Y on the midline.
        t_mouth = (MOUTH_Y - Y_CHIN) / (Y_FOREHEAD - Y_CHIN)
        self.mouth_row = int(np.searchsorted(t_rows, t_mouth))
        self.t_rows = t_rows
        upper = self._row_height(self.s, np.full_like(self.s, t_rows[self.mouth_row]))
        lower = self._row_height(self.s, np.full_like(self.s, t_rows[self.mouth_row - 1]))
        self.mouth_y = 0.5 * (upper + lower)          # centre of the closed mouth opening
        self.mouth_half_gap = 0.5 * (upper - lower)   # rows m and m-1 are the inner lip edges

    @property
    def n(self) -> int:
        return self.rows * self.cols

    @staticmethod
    def _row_height(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        # The jaw line's rise fades quickly with t so that the rows near the mouth stay nearly level.
        bottom = Y_CHIN + (Y_JAW_ANGLE - Y_CHIN) * np.abs(s) ** 2.4
        top = Y_FOREHEAD - (Y_FOREHEAD - Y_TEMPLE) * s ** 2
        return Y_CHIN + (top - Y_CHIN) * t + (bottom - Y_CHIN) * (1 - t) ** 2.5

    @staticmethod
    def _row_parameters(rows: int) -> np.ndarray:
        """Row parameters in [0, 1], denser near the eyes and the mouth (inverse-CDF sampling)."""
        span = Y_FOREHEAD - Y_CHIN
        t_eye, t_mouth = (EYE_Y - Y_CHIN) / span, (MOUTH_Y - Y_CHIN) / span
        fine = np.linspace(0.0, 1.0, 4001)
        density = 1 + 1.3 * _gauss(fine - t_eye, 0.05) + 1.3 * _gauss(fine - t_mouth, 0.04)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
        return np.interp(np.linspace(0.0, 1.0, rows), cdf / cdf[-1], fine)


def _triangles(rows: int, cols: int) -> np.ndarray:
    """(F, 3) counter-clockwise seen from +z; diagonals mirror about the midline column."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    r, c = r.reshape(-1), c.reshape(-1)
    a = r * cols + c            # bottom-left (x grows with c, y grows with r)
    b = a + 1                   # bottom-right
    d = a + cols                # top-left
    e = d + 1                   # top-right
    right_half = c >= cols // 2
    first = np.where(right_half[:, None], np.stack([a, b, e], 1), np.stack([a, b, d], 1))
    second = np.where(right_half[:, None], np.stack([a, e, d], 1), np.stack([b, e, d], 1))
    return np.concatenate([first, second], 0).astype(np.int64)


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v0, v1, v2 = (vertices[triangles[:, k]] for k in range(3))
    face = np.cross(v1 - v0, v2 - v0)
    face /= np.linalg.norm(face, axis=1, keepdims=True) + 1e-12
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    return normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12)


# ------------------------------------------------------------------ facial features
class _Features:
    """Soft feature masks and +z displacement fields of the mean face, all (N,) arrays."""

    def __init__(self, layout: _Layout):
        x, y = layout.x, layout.y
        ax = np.abs(x)
        self.layout = layout
        # Eyes: almond opening between two lid curves; xi is outward along the eye, in [-1, 1].
        self.eye_xi = (ax - EYE_X) / EYE_HALF_WIDTH
        along = np.clip(1 - self.eye_xi ** 2, 0, None)
        self.lid_up = EYE_Y + EYE_TILT * self.eye_xi + LID_UP * along ** 0.75 * (1 - 0.12 * self.eye_xi)
        self.lid_low = EYE_Y + EYE_TILT * self.eye_xi - LID_LOW * along ** 0.9
        eye_window = _smoothstep(1.08, 0.92, np.abs(self.eye_xi))
        self.eye_window = eye_window
        self.eye_open = _sigmoid(np.minimum(self.lid_up - y, y - self.lid_low) / 0.005) * (along > 0)
        iris_r = np.hypot(ax - EYE_X, y - EYE_Y - 0.004)
        self.iris = _sigmoid((IRIS_RADIUS - iris_r) / 0.005) * self.eye_open
        self.pupil = _sigmoid((PUPIL_RADIUS - iris_r) / 0.003) * self.eye_open
        self.lash = _gauss(y - self.lid_up - 0.004, 0.009) * eye_window * (1 - 0.6 * self.eye_open)
        self.lower_lash = 0.4 * _gauss(y - self.lid_low + 0.003, 0.006) * eye_window * (1 - self.eye_open)
        self.caruncle = _gauss2(ax, y, EYE_X - EYE_HALF_WIDTH + 0.02, EYE_Y - EYE_TILT, 0.015, 0.012) \
            * self.eye_open

        # Brows: a band along an arch, thick medially and tapering laterally.
        self.brow_y = 0.40 + 0.06 * (1 - ((ax - 0.30) / 0.24) ** 2)
        half_thick = 0.034 - 0.017 * np.clip((ax - 0.10) / 0.44, 0, 1)
        brow_along = _smoothstep(0.07, 0.12, ax) * _smoothstep(0.58, 0.50, ax)
        self.brow = _sigmoid((half_thick - np.abs(y - self.brow_y)) / 0.007) * brow_along

        # Mouth: the dark closed opening spans grid rows mouth_row and mouth_row - 1 (so opening the
        # jaw stretches dark triangles); lips extend above and below it.
        self.mouth_d = y - layout.mouth_y
        gap = layout.mouth_half_gap
        xi_m = x / MOUTH_HALF_WIDTH
        inside_m = np.clip(1 - xi_m ** 2, 0, None)
        bow = 0.008 * _gauss(ax - 0.05, 0.028) - 0.006 * _gauss(x, 0.018)
        self.upper_lip_h = (UPPER_LIP_HEIGHT * inside_m ** 0.6 + bow * inside_m) + 1e-6
        self.lower_lip_h = LOWER_LIP_HEIGHT * inside_m ** 0.55 + 1e-6
        u_up = (self.mouth_d - gap) / self.upper_lip_h
        u_low = (-self.mouth_d - gap) / self.lower_lip_h
        # sin^2 bumps: zero slope at both edges, so the lips' outline does not alias into a zigzag.
        self.upper_lip_profile = np.sin(np.pi * np.clip(u_up, 0, 1)) ** 2
        self.lower_lip_profile = np.sin(np.pi * np.clip(u_low, 0, 1)) ** 2
        lip_edge = np.minimum(self.upper_lip_h + gap - self.mouth_d, self.mouth_d + gap + self.lower_lip_h)
        mouth_window = _smoothstep(1.02, 0.9, np.abs(xi_m))
        self.mouth_window = mouth_window
        self.lips = _sigmoid(lip_edge / 0.008) * (inside_m > 0)
        self.mouth_line = _sigmoid((gap + 0.003 - np.abs(self.mouth_d)) / 0.002) * mouth_window

        # Nose.
        self.nose_height = np.clip(_curve(NOSE_PROFILE)(np.clip(y, -0.34, 0.40)), 0, None)
        self.nose_width = _curve(NOSE_HALF_WIDTH)(np.clip(y, -0.34, 0.40))
        self.nostril = _gauss2(ax, y, 0.052, -0.232, 0.022, 0.014)

        # Regions used by the albedo and the losses (soft weights in [0, 1]).
        self.cheek = _gauss2(ax, y, 0.42, -0.12, 0.14, 0.17)
        self.beard_line = -0.26 - 0.12 * _smoothstep(0.12, 0.35, ax) + 0.36 * _smoothstep(0.45, 0.74, ax)

    def displacement_fields(self) -> dict[str, np.ndarray]:
        """Named (N,) +z displacement fields whose sum (times layout.front) is the mean face relief."""
        lay = self.layout
        x, y = lay.x, lay.y
        ax = np.abs(x)
        f: dict[str, np.ndarray] = {}
        f["socket"] = -0.085 * _gauss2(ax, y, EYE_X, EYE_Y + 0.02, 0.13, 0.095)
        f["eyeball"] = 0.055 * _gauss2(ax, y, EYE_X, EYE_Y, 0.08, 0.055) - 0.006 * self.eye_open
        f["lids"] = (0.006 * _gauss(y - self.lid_up, 0.008) - 0.010 * _gauss(y - self.lid_up - 0.035, 0.01)) \
            * self.eye_window + 0.004 * _gauss(y - self.lid_low, 0.008) * self.eye_window
        f["tear_trough"] = -0.015 * _gauss2(ax, y, 0.27, 0.12, 0.10, 0.03)
        f["brow_ridge"] = 0.055 * _gauss2(ax, y, 0.28, 0.41, 0.17, 0.055) \
            + 0.03 * _gauss2(x, y, 0, 0.37, 0.08, 0.06)
        f["forehead"] = 0.02 * _gauss2(ax, y, 0.24, 0.72, 0.15, 0.12)
        f["temples"] = -0.04 * _gauss2(ax, y, 0.63, 0.45, 0.08, 0.14)
        ridge = self.nose_height * np.exp(-0.5 * (x / self.nose_width) ** 2)
        alae = 0.10 * _gauss2(ax, y, 0.108, -0.19, 0.045, 0.042) - 0.02 * _gauss2(ax, y, 0.16, -0.19, 0.015, 0.05)
        f["nose"] = np.maximum(ridge, alae) + 0.03 * _gauss2(x, y, 0, -0.12, 0.14, 0.12) - 0.04 * self.nostril
        f["cheekbones"] = 0.06 * _gauss2(ax, y, 0.50, 0.06, 0.13, 0.10)
        f["cheeks"] = 0.03 * _gauss2(ax, y, 0.40, -0.25, 0.13, 0.15)
        d_fold = _segment_distance(ax, y, (0.16, -0.18), (0.31, -0.56))
        f["nasolabial"] = -0.012 * _gauss(d_fold, 0.018)
        f["muzzle"] = 0.10 * _gauss2(x, y, 0, -0.50, 0.26, 0.2)
        f["lips"] = 0.04 * self.upper_lip_profile + 0.05 * self.lower_lip_profile \
            - 0.010 * self.mouth_line - 0.012 * _gauss2(ax, self.mouth_d, MOUTH_HALF_WIDTH + 0.01, 0, 0.025, 0.02)
        f["philtrum"] = -0.008 * _gauss(x, 0.018) * _gauss(y - (MOUTH_Y + 0.14), 0.04)
        f["chin"] = 0.075 * _gauss2(x, y, 0, -0.84, 0.15, 0.09) - 0.022 * _gauss2(x, y, 0, -0.68, 0.14, 0.03)
        return f


# ------------------------------------------------------------------ albedo and masks
def _mean_albedo(feat: _Features) -> np.ndarray:
    """(N, 3) in [0, 1]."""
    lay = feat.layout
    ax, y = np.abs(lay.x), lay.y
    n = lay.n
    albedo = np.tile(np.array(SKIN), (n, 1))
    blush = feat.cheek * (1 - feat.lips)
    albedo += blush[:, None] * np.array([0.03, -0.015, -0.01])
    albedo += _gauss2(lay.x, y, 0, -0.14, 0.06, 0.05)[:, None] * np.array([0.03, -0.01, -0.01])
    beard = _sigmoid((feat.beard_line - y) / 0.03) * (1 - feat.lips)
    albedo += (0.5 * beard)[:, None] * np.array([-0.02, -0.015, -0.005])
    albedo += (_gauss2(ax, y, 0.30, 0.14, 0.09, 0.025))[:, None] * np.array([-0.03, -0.04, -0.02])

    def blend(weight: np.ndarray, colour) -> None:
        albedo[:] = albedo * (1 - weight[:, None]) + weight[:, None] * np.array(colour)

    blend(feat.lips, LIPS)
    blend(0.85 * feat.mouth_line, MOUTH_LINE)
    blend(0.85 * feat.brow, BROWS)
    blend(feat.eye_open, SCLERA)
    blend(feat.caruncle, CARUNCLE)
    blend(feat.iris, IRIS)
    blend(feat.pupil, PUPIL)
    blend(np.clip(feat.lash + feat.lower_lash, 0, 1), LASHES)
    blend(0.9 * feat.nostril / feat.nostril.max(), NOSTRIL)
    return np.clip(albedo, 0, 1)


def _regions(feat: _Features) -> dict[str, np.ndarray]:
    lay = feat.layout
    x, y, ax = lay.x, lay.y, np.abs(lay.x)
    border = (np.abs(lay.s) > 0.9) | (lay.t < 0.03) | (lay.t > 0.95)
    eyes = feat.eye_open > 0.5
    eye_surround = (feat.eye_open + feat.lash + feat.lower_lash) > 0.3
    brows = feat.brow > 0.5
    lips = (feat.lips > 0.5) | (feat.mouth_line > 0.5)
    nose = ((feat.nose_height * np.exp(-0.5 * (x / feat.nose_width) ** 2)) > 0.03) \
        | (_gauss2(ax, y, 0.108, -0.19, 0.045, 0.042) > 0.3)
    nostrils = feat.nostril > 0.3
    cheeks = (feat.cheek > 0.35) & ~nose & ~lips & ~eye_surround
    forehead = (y > feat.brow_y + 0.06) & ~border & (ax < 0.62)
    chin = (feat.mouth_d < -feat.lower_lip_h - 0.05) & (ax < 0.28) & ~border
    beard = (y < feat.beard_line) & ~lips & ~border & (lay.front > 0.5)
    upper_lids = (y > feat.lid_up + 0.006) & (y < feat.brow_y - 0.03) & (feat.eye_window > 0.3) & ~brows
    under_eyes = (_gauss2(ax, y, EYE_X, EYE_Y - 0.07, 0.1, 0.03) > 0.5) & ~eye_surround
    face = ~border
    skin = face & ~eye_surround & ~brows & ~nostrils & ~(feat.mouth_line > 0.5)
    return {
        "face": face, "skin": skin, "border": border, "eyes": eyes, "iris": feat.iris > 0.5,
        "eye_surround": eye_surround, "brows": brows, "lips": lips, "mouth_line": feat.mouth_line > 0.5,
        "nose": nose, "nostrils": nostrils, "cheeks": cheeks, "forehead": forehead, "chin": chin,
        "beard_area": beard, "upper_lids": upper_lids, "under_eyes": under_eyes,
    }


# ------------------------------------------------------------------ landmarks
def _landmarks68(lay: _Layout, feat: _Features) -> np.ndarray:
    x, y = lay.x, lay.y

    def nearest(tx: float, ty: float, candidates: np.ndarray | None = None) -> int:
        d = (x - tx) ** 2 + (y - ty) ** 2
        if candidates is not None:
            d = np.where(candidates, d, np.inf)
        return int(np.argmin(d))

    out = np.zeros(68, dtype=np.int64)
    out[0:17] = _jaw_contour(lay)
    brow_x = [-0.52, -0.42, -0.32, -0.22, -0.12, 0.12, 0.22, 0.32, 0.42, 0.52]
    for k, bx in enumerate(brow_x):
        out[17 + k] = nearest(bx, 0.40 + 0.06 * (1 - ((abs(bx) - 0.30) / 0.24) ** 2))
    for k, ny in enumerate([0.24, 0.12, 0.0]):
        out[27 + k] = nearest(0.0, ny)
    midline = lay.col == lay.cols // 2
    tip_zone = midline & (y > -0.2) & (y < -0.05)
    out[30] = int(np.flatnonzero(tip_zone)[np.argmax(feat.nose_height[tip_zone])])
    nostril_line = [(-0.10, -0.225), (-0.05, -0.245), (0.0, -0.255), (0.05, -0.245), (0.10, -0.225)]
    for k, (nx, ny) in enumerate(nostril_line):
        out[31 + k] = nearest(nx, ny)

    def eye_point(side: float, xi: float, upper: bool | None) -> int:
        xi_c = np.clip(xi, -0.97, 0.97)
        along = max(1 - xi_c ** 2, 0.0)
        ty = EYE_Y + EYE_TILT * xi_c
        if upper is True:
            ty += LID_UP * along ** 0.75 * (1 - 0.12 * xi_c)
        elif upper is False:
            ty -= LID_LOW * along ** 0.9
        return nearest(side * (EYE_X + xi_c * EYE_HALF_WIDTH), ty)

    eye_spec = [(1, None), (0.35, True), (-0.35, True), (-1, None), (-0.35, False), (0.35, False)]
    for k, (xi, upper) in enumerate(eye_spec):
        out[36 + k] = eye_point(-1.0, xi, upper)
    right_spec = [(-1, None), (-0.35, True), (0.35, True), (1, None), (0.35, False), (-0.35, False)]
    for k, (xi, upper) in enumerate(right_spec):
        out[42 + k] = eye_point(1.0, xi, upper)

    upper_row = lay.row == lay.mouth_row        # inner edge of the upper lip
    lower_row = lay.row == lay.mouth_row - 1    # inner edge of the lower lip

    def row_curve(row_mask: np.ndarray):
        order = np.argsort(x[row_mask])
        xs, ys = x[row_mask][order], y[row_mask][order]
        return lambda px: float(np.interp(px, xs, ys))

    upper_y, lower_y = row_curve(upper_row), row_curve(lower_row)

    def lip_height(px: float, upper: bool) -> float:
        inside = max(1 - (px / MOUTH_HALF_WIDTH) ** 2, 0.0)
        if upper:
            bow = 0.008 * np.exp(-0.5 * ((abs(px) - 0.05) / 0.028) ** 2) - 0.006 * np.exp(-0.5 * (px / 0.018) ** 2)
            return UPPER_LIP_HEIGHT * inside ** 0.6 + bow * inside
        return LOWER_LIP_HEIGHT * inside ** 0.55

    mw = MOUTH_HALF_WIDTH
    out[48] = nearest(-mw, upper_y(-mw), upper_row)
    for k, px in enumerate([-0.16, -0.06, 0.0, 0.06, 0.16]):
        out[49 + k] = nearest(px, upper_y(px) + 0.8 * lip_height(px, True))
    out[54] = nearest(mw, upper_y(mw), upper_row)
    for k, px in enumerate([0.16, 0.06, 0.0, -0.06, -0.16]):
        out[55 + k] = nearest(px, lower_y(px) - 0.85 * lip_height(px, False))
    out[60] = nearest(-(mw - 0.035), upper_y(-mw), upper_row)
    for k, px in enumerate([-0.08, 0.0, 0.08]):
        out[61 + k] = nearest(px, upper_y(px), upper_row)
    out[64] = nearest(mw - 0.035, upper_y(mw), upper_row)
    for k, px in enumerate([0.08, 0.0, -0.08]):
        out[65 + k] = nearest(px, lower_y(px), lower_row)
    return out


def _jaw_contour(lay: _Layout) -> np.ndarray:
    """17 vertices evenly spaced (in the frontal layout) along a ring a few cells inside the boundary,
    from the image-left side at cheek level, round the chin, to the image-right side."""
    inset = max(2, round(0.03 * lay.rows))
    rows, cols = lay.rows, lay.cols
    grid = np.arange(lay.n).reshape(rows, cols)
    y_grid = lay.y.reshape(rows, cols)
    left_col, right_col = inset, cols - 1 - inset
    start_row = int(np.argmin(np.abs(y_grid[:, left_col] - 0.14)))
    path = list(grid[start_row:inset:-1, left_col]) + list(grid[inset, left_col:right_col + 1]) \
        + list(grid[inset + 1:start_row + 1, right_col])
    path = np.array(path)
    pts = np.stack([lay.x[path], lay.y[path]], 1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    picks = np.searchsorted(arc, np.linspace(0, arc[-1], 17))
    return path[np.clip(picks, 0, len(path) - 1)]


# ------------------------------------------------------------------ bases
class _CosineBasis:
    """Products cos(pi a (u + 1) / 2) cos(pi b (v + 1) / 2) for a, b <= MAX_FREQ, once per layout.

    Matrix products run in torch: numpy's BLAS threads stall next to torch's on a busy CPU.
    """

    MAX_FREQ = 8

    def __init__(self, u: np.ndarray, v: np.ndarray):
        k = np.arange(self.MAX_FREQ + 1)
        cu = np.cos(np.pi * k[None] * (u[:, None] + 1) / 2)
        cv = np.cos(np.pi * k[None] * (v[:, None] + 1) / 2)
        self.products = torch.from_numpy((cu[:, :, None] * cv[:, None, :]).reshape(len(u), -1))

    def random_field(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        """Random smooth scalar field (N,) with unit RMS and no constant term.

        Frequency (a, b) has weight ~ N(0, 1) / (1 + (a^2 + b^2) / scale^2)^2: a larger `scale` gives
        finer fields, but every field has some energy at every frequency (so fields stay independent).
        """
        m = self.MAX_FREQ + 1
        a, b = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        weights = rng.standard_normal((m, m)) / (1.0 + (a ** 2 + b ** 2) / scale ** 2) ** 2
        weights[0, 0] = 0.0
        field = (self.products @ torch.from_numpy(weights.reshape(-1))).numpy()
        return field / (np.sqrt(np.mean(field ** 2)) + 1e-12)


def _symmetrize(disp: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(N, 3) -> left-right symmetric part (x odd, y and z even under the mirror)."""
    mirrored = disp[mirror] * np.array([-1.0, 1.0, 1.0])
    return 0.5 * (disp + mirrored)


def _orthogonal_basis(modes: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, list[str]]:
    """K modes (N, C), each the change for one unit of its coefficient -> (N*C, K) basis and names.

    Gram-Schmidt in the given order keeps, of each mode, the part orthogonal to the modes before it,
    at its own size (never scaled up, so a mode mostly explained by earlier ones becomes a small mode
    instead of an amplified remainder). Columns are then sorted by decreasing RMS.
    """
    m = torch.from_numpy(np.stack([mode.reshape(-1) for mode in modes], 1))
    # Cholesky QR twice (M = Q R with R's diagonal positive, so each column keeps its sign); in torch
    # for the reason given in _CosineBasis.
    q, r_diag = m, torch.ones(m.shape[1], dtype=m.dtype)
    for _ in range(2):
        chol = torch.linalg.cholesky(q.T @ q)
        q = torch.linalg.solve_triangular(chol, q.T, upper=False).T
        r_diag = r_diag * torch.diagonal(chol)
    basis = (q * r_diag[None]).numpy()
    order = np.argsort(-np.linalg.norm(basis, axis=0), kind="stable")
    return basis[:, order], [names[i] for i in order]


def _scaled_to(mode: np.ndarray, rms: float) -> np.ndarray:
    return mode * (rms / (_rms(mode) + 1e-12))


def _rms(disp: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(disp ** 2, axis=-1))))


IDENTITY_SCALE = 1.4  # one unit of a named identity mode is this many times the displacement below


def _identity_modes(lay: _Layout, feat: _Features, fields: dict, positions: np.ndarray,
                    normals: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """positions: (N, 3) mean shape in layout coordinates (before centring); normals: (N, 3)."""
    x, y, z = positions[:, 0], positions[:, 1], positions[:, 2]
    ax, sx = np.abs(x), np.tanh(x / 0.03)   # a smooth sign keeps the midline from folding
    zero = np.zeros_like(x)
    front = lay.front

    def vec(dx=zero, dy=zero, dz=zero) -> np.ndarray:
        return np.stack([dx + zero, dy + zero, dz + zero], 1)

    centred = positions - positions.mean(0)
    low = _smoothstep(-0.1, -0.75, y)
    nose = fields["nose"]
    chin_bump = _gauss2(x, y, 0, -0.86, 0.2, 0.12)
    named = {
        "masculinity": 0.025 * centred + vec(dz=front * (0.6 * fields["brow_ridge"] + 0.25 * nose
                                                         - 0.3 * fields["cheeks"] - 0.2 * fields["lips"]
                                                         + 0.02 * chin_bump))
        + vec(dx=0.05 * x * low, dy=-0.02 * chin_bump),
        "face_width": vec(dx=0.045 * x),
        "face_length": vec(dy=0.04 * y),
        "face_depth": vec(dz=0.08 * (z - z.mean())),
        "jaw_width": vec(dx=0.07 * x * low),
        "upper_face_width": vec(dx=0.05 * x * _smoothstep(-0.2, 0.6, y)),
        "lower_face_length": vec(dy=-0.03 * _sigmoid((-0.3 - y) / 0.06)),
        "nose_size": vec(dz=0.22 * nose * front, dy=-0.02 * _gauss2(x, y, 0, -0.15, 0.12, 0.08)),
        "chin": vec(dz=0.03 * chin_bump, dy=-0.02 * chin_bump),
        "cheek_fullness": 0.03 * _gauss2(ax, y, 0.42, -0.2, 0.15, 0.18)[:, None] * normals,
        "nose_width": vec(dx=0.25 * x * _gauss2(x, y, 0, -0.12, 0.12, 0.12)),
        "eye_spacing": vec(dx=0.02 * sx * _gauss2(ax, y, EYE_X, EYE_Y, 0.14, 0.1)),
        "mouth_width": vec(dx=0.12 * x * _gauss2(x, y, 0, MOUTH_Y, 0.3, 0.12)),
        "lip_fullness": vec(dz=0.4 * fields["lips"] * front,   # moves the outer lip borders, not the inner edges
                            dy=0.012 * np.sign(feat.mouth_d) * _gauss2(x, feat.mouth_d, 0, 0, 0.2, 0.05)
                            * _smoothstep(0.0, 0.03, np.abs(feat.mouth_d) - lay.mouth_half_gap)),
        "eye_depth": vec(dz=0.35 * fields["socket"]),
        "brow_ridge": vec(dz=0.5 * fields["brow_ridge"]),
        "cheekbones": vec(dz=0.5 * fields["cheekbones"], dx=0.015 * sx * _gauss2(ax, y, 0.5, 0.06, 0.13, 0.1)),
        "forehead_slope": vec(dz=-0.05 * _smoothstep(0.35, 1.0, y)),
        "nose_bridge": vec(dz=0.3 * nose * _smoothstep(-0.1, 0.15, y) * front),
        "nose_tip_lift": vec(dy=0.02 * _gauss2(x, y, 0, -0.18, 0.1, 0.07)),
        "eye_height_asymmetry": vec(dy=0.012 * sx * _gauss2(ax, y, EYE_X, EYE_Y, 0.15, 0.12)),
        "temple_hollowness": vec(dz=0.5 * fields["temples"]),
        "eye_size": vec(dy=0.012 * np.tanh((y - EYE_Y) / 0.03) * _gauss2(ax, y, EYE_X, EYE_Y, 0.12, 0.08)),
        "mouth_asymmetry": vec(dy=0.01 * sx * _gauss2(ax, y, 0.22, MOUTH_Y, 0.1, 0.08)),
    }
    names = list(named)
    modes = [named[k] - named[k].mean(0) for k in names]
    modes = [IDENTITY_SCALE * m for m in modes]
    order = np.argsort([-_rms(m) for m in modes], kind="stable")
    modes, names = [modes[i] for i in order], [names[i] for i in order]
    tail_start = _rms(modes[-1])

    cosines = _CosineBasis(x / 0.8, y)
    # Random fields peak at the grid's corners; fading them at the mesh rim keeps corners in place.
    rim = np.minimum.reduce([1 - np.abs(lay.s), lay.t, 1 - lay.t])
    rim_fade = 0.3 + 0.7 * _smoothstep(0.0, 0.2, rim)
    k = 0
    while len(modes) < N_ID:
        scale = 1.5 + k / 8
        fn, fx, fy = (cosines.random_field(rng, scale) for _ in range(3))
        disp = (fn[:, None] * normals + 0.35 * vec(dx=fx, dy=fy)) * rim_fade[:, None]
        if k % 4 != 3:
            disp = _symmetrize(disp, lay.mirror)
        modes.append(_scaled_to(disp - disp.mean(0), tail_start * 0.975 ** (k + 1)))
        names.append(f"smooth_{k:02d}")
        k += 1
    return _orthogonal_basis(modes, names)


EXP_ONE_SIDED = ("jaw_open", "eyes_close", "eye_close_left", "eye_close_right", "lips_part", "upper_lip_raise",
                 "lower_lip_depress")
# The named expression fields below are written for a strong expression; this factor makes a full
# N(0, 1) draw of all 64 coefficients a plausible, moderate expression.
EXPRESSION_SCALE = 0.55
LOCAL_MODE_SIZE = 0.01   # peak displacement of one unit of a random localised mode (model units)
LIP_TUCK = 0.6


def _expression_modes(lay: _Layout, feat: _Features, positions: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """positions: (N, 3) mean shape in layout coordinates (before centring)."""
    x, y, z = positions[:, 0], positions[:, 1], positions[:, 2]
    ax, sx = np.abs(x), np.tanh(x / 0.03)   # a smooth sign keeps the midline from folding
    zero = np.zeros_like(x)
    d = feat.mouth_d
    mw = MOUTH_HALF_WIDTH

    def vec(dx=zero, dy=zero, dz=zero) -> np.ndarray:
        return np.stack([dx + zero, dy + zero, dz + zero], 1)

    # Jaw: vertices below the mouth line follow a rotation about a hinge axis near the ears; the
    # transition is one row wide between the lips and widens over the cheeks.
    tau = 0.001 + 0.14 * _smoothstep(mw - 0.04, mw + 0.3, ax)
    jaw = _sigmoid(-d / tau) * _smoothstep(0.3, -0.1, y)
    hinge_y, hinge_z = 0.12, -0.2   # the jaw hinge axis, near the ears
    # The step between the inner lip edges stays inside the mouth (else it creases the cheeks).
    upper_lip = _sigmoid(d / 0.001) * _gauss2(x, d, 0, 0.03, 0.2, 0.04) * feat.mouth_window
    lower_lip = _sigmoid(-d / 0.001) * _gauss2(x, d, 0, -0.04, 0.2, 0.05) * feat.mouth_window
    lips = (upper_lip + lower_lip)
    corner = _gauss2(ax, d, mw, 0.0, 0.08, 0.06)
    cheek = _gauss2(ax, y, 0.36, -0.2, 0.12, 0.12)
    puff = _gauss2(ax, y, 0.38, -0.34, 0.13, 0.14)
    chin = _gauss2(x, y, 0, -0.82, 0.18, 0.14)

    # Eyelids: a vertex in the opening moves down by lid_move, a fraction of the opening that grows
    # from the lower lid (0) to the upper lid margin; the lid skin above follows with a decay. One
    # unit of 'eyes_close' (with EXPRESSION_SCALE) shuts about 28% of the eye; 3.6 units shut it.
    opening = np.maximum(feat.lid_up - feat.lid_low, 0)
    frac = np.clip((y - feat.lid_low) / np.maximum(opening, 1e-6), 0, 1)
    above = np.exp(-np.clip(y - feat.lid_up, 0, None) / 0.03)
    lid = np.where(y > feat.lid_low, frac * above, 0.0) * feat.eye_window * _smoothstep(0.55, 0.45, y)
    lid_move = 0.5 * lid * np.maximum(opening, 0.0)
    lower_lid = np.where(y < feat.lid_low + 0.5 * opening, 1.0, 0.0) \
        * np.exp(-np.clip(feat.lid_low - y, 0, None) / 0.025) * feat.eye_window

    brow_band = _smoothstep(EYE_Y + 0.11, 0.46, y) * _smoothstep(0.85, 0.45, y) * _smoothstep(0.68, 0.5, ax) \
        * (0.4 + 0.6 * _smoothstep(0.0, 0.12, ax))
    inner_brow = _gauss2(ax, y, 0.14, 0.42, 0.1, 0.08)

    def eye_side(sign: float) -> np.ndarray:
        return (np.sign(x) == sign).astype(float)

    def side(sign: float) -> np.ndarray:
        return _sigmoid(sign * x / 0.02)

    # Inner lip edges (rows mouth_row and mouth_row - 1 and a little of the lip beyond). A mode that
    # moves one lip towards the other also moves it back by LIP_TUCK times as much, so a negative
    # 'jaw_open' tucks the lower lip behind the upper one instead of folding it over in front.
    gap = lay.mouth_half_gap
    upper_edge = _sigmoid(d / 0.001) * np.exp(-np.clip(d - gap, 0, None) / 0.03) * feat.mouth_window
    lower_edge = _sigmoid(-d / 0.001) * np.exp(-np.clip(-d - gap, 0, None) / 0.03) * feat.mouth_window

    def tucked(disp: np.ndarray) -> np.ndarray:
        out = disp.copy()
        out[:, 2] += LIP_TUCK * disp[:, 1] * (upper_edge - lower_edge)
        return out

    outer_lips = _smoothstep(0.0, 0.03, np.abs(d) - gap) * lips   # lip bodies, inner edges fixed
    nose_sides = _gauss2(ax, y, 0.1, 0.05, 0.08, 0.1)

    named = {
        "jaw_open": tucked(vec(dy=-0.08 * jaw * (z - hinge_z), dz=0.08 * jaw * (y - hinge_y))),
        "smile": vec(dx=0.025 * sx * corner, dy=0.035 * corner + 0.015 * cheek,
                     dz=-0.012 * corner + 0.02 * cheek),
        "lip_corners_down": vec(dy=-0.03 * corner, dz=-0.005 * corner),
        "lip_pucker": vec(dx=-0.12 * x * _gauss2(x, d, 0, 0, 0.22, 0.09),
                          dz=0.03 * _gauss2(x, d, 0, 0, 0.2, 0.08)),
        "brow_raise": vec(dy=0.035 * brow_band),
        "brow_frown": vec(dx=-0.015 * sx * inner_brow, dy=-0.022 * inner_brow, dz=0.008 * inner_brow),
        "eyes_close": vec(dy=-lid_move, dz=0.012 * lid),
        "cheek_puff": vec(dx=0.02 * sx * puff, dz=0.05 * puff),
        "lip_stretch": vec(dx=0.03 * sx * corner, dz=-0.008 * lips),
        "upper_lip_raise": tucked(vec(dy=0.02 * upper_lip + 0.008 * _gauss2(ax, y, 0.1, -0.12, 0.08, 0.08))),
        "lower_lip_depress": tucked(vec(dy=-0.025 * lower_lip, dz=0.005 * lower_lip)),
        "lip_press": vec(dy=-0.008 * outer_lips * np.sign(d), dz=-0.012 * lips),
        "lips_part": tucked(vec(dy=0.012 * upper_lip - 0.016 * lower_lip)),
        "jaw_sideways": vec(dx=0.04 * jaw),
        "jaw_forward": vec(dz=0.035 * jaw),
        "mouth_sideways": vec(dx=0.03 * _gauss2(x, d, 0, 0, 0.32, 0.12)),
        "chin_raise": vec(dy=0.02 * chin + 0.01 * outer_lips * (d < 0), dz=0.01 * chin + 0.01 * lower_lip),
        "nose_wrinkle": vec(dy=0.015 * nose_sides, dz=0.005 * nose_sides),
        "squint": vec(dy=0.4 * LID_LOW * lower_lid + 0.01 * _gauss2(ax, y, 0.32, 0.1, 0.1, 0.05)),
        # One-eyed closing is half as strong, so that three lid modes at N(0, 1) keep eyes plausible.
        "eye_close_left": vec(dy=-lid_move * eye_side(1.0), dz=0.012 * lid * eye_side(1.0)) * 0.5,
        "eye_close_right": vec(dy=-lid_move * eye_side(-1.0), dz=0.012 * lid * eye_side(-1.0)) * 0.5,
        "smile_left": vec(dx=0.025 * corner, dy=0.035 * corner, dz=-0.012 * corner) * side(1.0)[:, None],
        "smile_right": vec(dx=-0.025 * corner, dy=0.035 * corner, dz=-0.012 * corner) * side(-1.0)[:, None],
        "brow_raise_inner": vec(dy=0.03 * brow_band * _smoothstep(0.4, 0.1, ax)),
        "brow_raise_outer": vec(dy=0.03 * brow_band * _smoothstep(0.15, 0.45, ax)),
        "brow_raise_left": vec(dy=0.035 * brow_band * side(1.0)),
        "brow_raise_right": vec(dy=0.035 * brow_band * side(-1.0)),
        "cheek_puff_left": vec(dx=0.02 * puff, dz=0.05 * puff) * side(1.0)[:, None],
        "cheek_puff_right": vec(dx=-0.02 * puff, dz=0.05 * puff) * side(-1.0)[:, None],
        "dimpler": vec(dz=-0.015 * _gauss2(ax, d, mw + 0.04, 0.0, 0.04, 0.04), dx=0.01 * sx * corner),
        "lip_funnel": tucked(vec(dx=-0.05 * x * lips, dy=0.012 * upper_lip - 0.012 * lower_lip, dz=0.02 * lips)),
        "nostril_flare": vec(dx=0.015 * sx * _gauss2(ax, y, 0.12, -0.19, 0.05, 0.05)),
    }
    names = list(named)
    modes = [EXPRESSION_SCALE * named[k] for k in names]

    # Localised random modes: a smooth random displacement under a Gaussian window at a face anchor.
    # No anchor sits on the eyelids: small random moves there read as deformed eyes.
    anchors = [(mw, MOUTH_Y), (0.0, MOUTH_Y + 0.04), (0.0, MOUTH_Y - 0.05), (0.38, -0.25), (0.3, 0.45),
               (0.45, 0.05), (EYE_X, EYE_Y - 0.1), (0.0, -0.8), (0.12, -0.15), (0.0, 0.7),
               (0.5, -0.5), (0.15, 0.42)]
    cosines = _CosineBasis(x / 0.8, y)
    k = 0
    while len(modes) < N_EXP:
        cx, cy = anchors[k % len(anchors)]
        cx = cx + 0.03 * rng.standard_normal()
        cy = cy + 0.03 * rng.standard_normal()
        sigma = 0.06 + 0.05 * rng.random()
        window = _gauss2(ax if k % 2 == 0 else x, y, cx if k % 2 == 0 else cx * rng.choice([-1, 1]), cy,
                         sigma, sigma * 0.8)
        field = np.stack([cosines.random_field(rng, 2.5) for _ in range(3)], 1) * np.array([1.0, 1.0, 0.8])
        disp = window[:, None] * field
        disp *= LOCAL_MODE_SIZE / (np.abs(disp).max() + 1e-12)
        if k % 2 == 0:
            disp = _symmetrize(disp, lay.mirror)
        modes.append(disp)
        names.append(f"local_{k:02d}")
        k += 1
    front = lay.front[:, None]
    return np.stack([(m * front).reshape(-1) for m in modes], 1), names


def _albedo_modes(lay: _Layout, feat: _Features, mean_albedo: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    x, y = lay.x, lay.y
    ax = np.abs(x)
    skin_w = np.clip(1 - feat.eye_open - 0.7 * feat.brow - feat.mouth_line, 0, 1)
    lips, brows, iris = feat.lips, feat.brow, feat.iris
    beard = _sigmoid((feat.beard_line - y) / 0.03) * (1 - lips)
    grey = mean_albedo.mean(1, keepdims=True)

    def col(weight: np.ndarray, rgb) -> np.ndarray:
        return weight[:, None] * np.array(rgb)[None]

    named = {
        "skin_tone": -0.16 * mean_albedo * (1 - 0.8 * feat.eye_open)[:, None],
        "warm_cool": col(skin_w, (0.028, 0.0, -0.028)),
        "olive": col(skin_w, (-0.01, 0.02, -0.02)),
        "saturation": 0.18 * (mean_albedo - grey) * skin_w[:, None],
        "lip_colour": col(lips, (0.06, -0.03, -0.005)),
        "lip_darkness": -0.08 * mean_albedo * lips[:, None],
        "brow_darkness": col(brows, (-0.08, -0.07, -0.06)),
        "cheek_redness": col(feat.cheek * (1 - lips), (0.04, -0.015, -0.01)),
        "iris_colour": col(iris * (1 - feat.pupil), (-0.09, 0.01, 0.08)),
        "under_eye_darkness": col(_gauss2(ax, y, 0.30, 0.14, 0.09, 0.03), (-0.035, -0.04, -0.02)),
        "beard_shadow": col(beard * skin_w, (-0.03, -0.03, -0.02)),
        "nose_redness": col(_gauss2(x, y, 0, -0.12, 0.1, 0.1), (0.04, -0.01, -0.01)),
        "forehead_tone": col(_smoothstep(0.45, 0.8, y) * skin_w, (0.025, 0.02, 0.015)),
        "lash_darkness": col(np.clip(feat.lash, 0, 1), (-0.05, -0.04, -0.04)),
    }
    names = list(named)
    modes = list(named.values())
    order = np.argsort([-_rms(m) for m in modes], kind="stable")
    modes, names = [modes[i] for i in order], [names[i] for i in order]
    tail_start = _rms(modes[-1])
    cosines = _CosineBasis(x / 0.8, y)
    k = 0
    while len(modes) < N_TEX:
        field = cosines.random_field(rng, 1.5 + k / 8)
        # Skin varies along brightness, redness and yellowness; keep other hues small.
        a, b, c = rng.standard_normal(3)
        colour = a * np.array(SKIN) + 0.5 * b * np.array([1.0, -0.3, -0.6]) \
            + 0.4 * c * np.array([0.2, 0.3, -0.5]) + 0.08 * rng.standard_normal(3)
        colour /= np.linalg.norm(colour)
        mode = (field * skin_w)[:, None] * colour[None]
        if k % 3 != 2:
            mode = 0.5 * (mode + mode[lay.mirror])
        modes.append(_scaled_to(mode, tail_start * 0.975 ** (k + 1)))
        names.append(f"smooth_{k:02d}")
        k += 1
    return _orthogonal_basis(modes, names)


# ------------------------------------------------------------------ assembly
@functools.lru_cache(maxsize=8)
def _synthface_arrays(seed: int, resolution: int) -> dict:
    rng = np.random.default_rng(np.random.PCG64(seed))
    lay = _Layout(resolution)
    feat = _Features(lay)
    fields = feat.displacement_fields()
    relief = sum(fields.values()) * lay.front
    # Modes are built in layout coordinates (where the feature constants live), then the mean shape
    # is centred; displacements do not change with the centring.
    layout_positions = np.stack([lay.x, lay.y, lay.base_z + relief], 1)
    positions = layout_positions - layout_positions.mean(0)
    positions[:, 0] = 0.5 * (positions[:, 0] - positions[lay.mirror, 0])  # exact mirror symmetry
    triangles = _triangles(lay.rows, lay.cols)
    normals = _vertex_normals(positions, triangles)
    mean_albedo = _mean_albedo(feat)
    regions = _regions(feat)
    id_rng, exp_rng, tex_rng = (np.random.default_rng(s) for s in rng.integers(0, 2 ** 63 - 1, 3))
    id_base, id_names = _identity_modes(lay, feat, fields, layout_positions, normals, id_rng)
    exp_base, exp_names = _expression_modes(lay, feat, layout_positions, exp_rng)
    tex_base, tex_names = _albedo_modes(lay, feat, mean_albedo, tex_rng)
    arrays = {
        "mean_shape": positions.astype(np.float32),
        "id_base": id_base.astype(np.float32),
        "exp_base": exp_base.astype(np.float32),
        "mean_albedo": mean_albedo.astype(np.float32),
        "albedo_base": tex_base.astype(np.float32),
        "triangles": triangles,
        "point_buf": build_point_buf(torch.from_numpy(triangles), lay.n).numpy(),
        "landmarks68": _landmarks68(lay, feat),
        "skin_mask": regions["skin"],
        "uv": np.stack([(lay.s + 1) / 2, lay.t], 1).astype(np.float32),
        "mirror_index": lay.mirror.astype(np.int64),
        "regions": regions,
        "names": (id_names, exp_names, tex_names),
        "grid": (lay.rows, lay.cols, lay.mouth_row),
    }
    for value in list(arrays.values()) + list(regions.values()):
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return arrays


def build_synthface(seed: int = 0, resolution: int = DEFAULT_RESOLUTION) -> MorphableModel:
    """The SynthFace morphable model (see the module docstring), bit-identical for a given seed.

    resolution: grid rows (columns are the next odd number); the default gives 9,025 vertices.
    Returns fresh tensors on the CPU (float32 / int64 / bool) on every call.
    """
    if not isinstance(resolution, (int, np.integer)) or resolution < MIN_RESOLUTION:
        raise ValueError(
            f"coarse/synthface.py: resolution must be an integer >= {MIN_RESOLUTION}, got {resolution!r}")
    arrays = _synthface_arrays(int(seed), int(resolution))
    rows, cols, mouth_row = arrays["grid"]
    id_names, exp_names, tex_names = arrays["names"]
    triangles = torch.tensor(arrays["triangles"])
    mean_shape = torch.tensor(arrays["mean_shape"])
    return MorphableModel(
        mean_shape=mean_shape,
        id_base=torch.tensor(arrays["id_base"]),
        exp_base=torch.tensor(arrays["exp_base"]),
        mean_albedo=torch.tensor(arrays["mean_albedo"]),
        albedo_base=torch.tensor(arrays["albedo_base"]),
        triangles=triangles,
        point_buf=torch.tensor(arrays["point_buf"]),
        landmarks68=torch.tensor(arrays["landmarks68"]),
        skin_mask=torch.tensor(arrays["skin_mask"]),
        uv=torch.tensor(arrays["uv"]),
        name=f"synthface(seed={seed})",
        extras={
            "regions": {k: torch.tensor(v) for k, v in arrays["regions"].items()},
            "mirror_index": torch.tensor(arrays["mirror_index"]),
            "grid_shape": (rows, cols),
            "mouth_row": mouth_row,
            "id_names": list(id_names),
            "exp_names": list(exp_names),
            "tex_names": list(tex_names),
            "exp_one_sided": [name in EXP_ONE_SIDED for name in exp_names],
        },
    )
