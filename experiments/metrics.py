"""Every evaluation metric in one place: image fidelity, identity, albedo, landmarks, pose, NME.

Image fidelity uses scikit-image (``skimage.metrics``), with the settings in the constants below,
which the report prints:
    PSNR  ``peak_signal_noise_ratio(data_range=1)`` over the chosen pixels (all three channels), in dB,
          capped at PSNR_MAX_DB so identical images (infinite PSNR) keep means finite.
    SSIM  ``structural_similarity(data_range=1, channel_axis=-1, win_size=7, gaussian_weights=False,
          full=True)``: a 7 x 7 uniform window with sample covariance (skimage's default). Over the whole
          crop it is skimage's mean SSIM (which leaves out the (7-1)/2-pixel border); over a region it
          is the mean of the per-pixel, per-channel SSIM map inside the mask.
Images are (B, 3, H, W) tensors in [0, 1]; masks (B, 1, H, W) in [0, 1], a pixel counts where the
mask is >= MASK_THRESHOLD. Per-sample functions return (B,) float64 numpy arrays; NaN marks a sample a
metric does not apply to (an empty region), and `summarise` counts only finite values.

Geometry metrics follow the data's pixel-index units (the centre of image[i, j] is x=j, y=i).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from coarse import coefficients as C
from coarse.face_model import facing_camera
from render.rasterizer import rasterize
from render.texture_sampling import DEPTH_TOLERANCE, visible_vertices as seen_vertices

DATA_RANGE = 1.0
SSIM_WINDOW = 7
SSIM_GAUSSIAN_WEIGHTS = False
PSNR_MAX_DB = 100.0            # = an MSE of 1e-10; identical images score this instead of inf
MASK_THRESHOLD = 0.5
# Landmark errors are reported in pixels of a 224 crop (the reference size), whatever the eval size.
LANDMARK_REFERENCE_SIZE = C.REFERENCE_IMAGE_SIZE
# AFLW2000 yaw bins of the 3DDFA protocol, degrees of |yaw|; the last bin includes 90.
YAW_BINS: tuple[tuple[int, int], ...] = ((0, 30), (30, 60), (60, 90))
# A vertex is visible when the rendered surface at its pixel is no nearer than this (model units;
# the face is ~1.5 units wide and ~1.3 deep, one 224-px pixel is ~0.01 units at the face).
VISIBILITY_DEPTH_TOLERANCE = DEPTH_TOLERANCE

SETTINGS = {
    "psnr": f"skimage.metrics.peak_signal_noise_ratio, data_range={DATA_RANGE}, capped at {PSNR_MAX_DB} dB",
    "ssim": (f"skimage.metrics.structural_similarity, data_range={DATA_RANGE}, channel_axis=-1, "
             f"win_size={SSIM_WINDOW}, gaussian_weights={SSIM_GAUSSIAN_WEIGHTS} (uniform window, sample "
             "covariance); region SSIM = mean of the full SSIM map inside the mask"),
    "mask_threshold": MASK_THRESHOLD,
    "landmark_units": f"pixels of a {LANDMARK_REFERENCE_SIZE}-px crop",
    "visible_vertex": ("in the model's skin mask, facing the camera (posed normal . (camera - vertex) > 0) and "
                       f"not hidden: its depth is within {VISIBILITY_DEPTH_TOLERANCE} model units of the "
                       "true render's z-buffer at its pixel (occluders do not hide vertices)"),
    "nme": "mean 68-point distance / sqrt(w * h) of the ground-truth points' bounding box (3DDFA protocol)",
}


def _hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) tensor -> (B, H, W, 3) float64 array."""
    return images.detach().float().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)


def _region(mask: torch.Tensor | None, shape: tuple[int, ...]) -> np.ndarray:
    """(B, 1, H, W) mask -> (B, H, W) bool; None means every pixel."""
    if mask is None:
        return np.ones(shape[:3], dtype=bool)
    return (mask.detach().float().cpu()[:, 0] >= MASK_THRESHOLD).numpy()


def psnr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of two same-shape float arrays in [0, 1] (any shape), capped at PSNR_MAX_DB."""
    if reference.size == 0:
        return math.nan
    with np.errstate(divide="ignore"):
        value = peak_signal_noise_ratio(reference, estimate, data_range=DATA_RANGE)
    return float(min(value, PSNR_MAX_DB))


def ssim_map(reference: np.ndarray, estimate: np.ndarray) -> tuple[float, np.ndarray]:
    """(H, W, 3) arrays in [0, 1] -> (skimage's mean SSIM over the crop, (H, W, 3) SSIM map)."""
    mean, full = structural_similarity(reference, estimate, data_range=DATA_RANGE, channel_axis=-1,
                                       win_size=SSIM_WINDOW, gaussian_weights=SSIM_GAUSSIAN_WEIGHTS, full=True)
    return float(mean), full


def image_metrics(reference: torch.Tensor, estimate: torch.Tensor, face_mask: torch.Tensor | None) -> dict[str, np.ndarray]:
    """PSNR and SSIM of estimate against reference over the face region and over the whole crop.

    reference, estimate: (B, 3, H, W) in [0, 1]; face_mask: (B, 1, H, W) or None (= whole crop).
    Returns psnr_face_db, psnr_crop_db, ssim_face, ssim_crop, each (B,); NaN where the region is empty.
    """
    ref, est = _hwc(reference), _hwc(estimate.clamp(0, 1))
    region = _region(face_mask, ref.shape)
    out = {k: np.full(ref.shape[0], math.nan) for k in ("psnr_face_db", "psnr_crop_db", "ssim_face", "ssim_crop")}
    for i in range(ref.shape[0]):
        inside = region[i]
        out["psnr_crop_db"][i] = psnr_db(ref[i], est[i])
        out["psnr_face_db"][i] = psnr_db(ref[i][inside], est[i][inside])
        out["ssim_crop"][i], full = ssim_map(ref[i], est[i])
        if inside.any():
            out["ssim_face"][i] = float(full[inside].mean())
    return out


@torch.no_grad()
def identity_cosine(identity_net, images: torch.Tensor, others: torch.Tensor) -> np.ndarray:
    """(B,) cosine of the identity embeddings of two (B, 3, S, S) batches of aligned crops."""
    return (identity_net(images) * identity_net(others)).sum(-1).double().cpu().numpy()


def embedding_cosine(embeddings: torch.Tensor, others: torch.Tensor) -> np.ndarray:
    """(B,) cosine of two (B, D) batches of unit embeddings."""
    return (embeddings * others).sum(-1).double().cpu().numpy()


@torch.no_grad()
def visible_vertices(vertices: torch.Tensor, normals: torch.Tensor, screen: torch.Tensor, triangles: torch.Tensor,
                     skin_mask: torch.Tensor, image_size: int, camera_distance: float = C.CAMERA_DISTANCE) -> torch.Tensor:
    """Skin vertices a camera sees (see SETTINGS["visible_vertex"]) -> (B, N) bool.

    vertices, normals: (B, N, 3) posed, world frame; screen: (B, N, 3) u, v px and depth (FaceGeometry's);
    triangles: (F, 3); skin_mask: (N,) bool; image_size: S of the render the visibility refers to.
    """
    zbuf = rasterize(screen, triangles, image_size).zbuf  # (B, S, S), 0 where empty
    seen = seen_vertices(screen, zbuf, facing_camera(vertices, normals, camera_distance), VISIBILITY_DEPTH_TOLERANCE)
    return seen & skin_mask.to(vertices.device).bool()[None]


def albedo_error(predicted: torch.Tensor, true: torch.Tensor, visible: torch.Tensor) -> np.ndarray:
    """Mean absolute albedo error over visible vertices and channels.

    predicted, true: (B, N, 3) albedo in [0, 1] (predicted is clamped to it); visible: (B, N) bool.
    Returns (B,), NaN where no vertex is visible.
    """
    error = (predicted.clamp(0, 1) - true).abs().mean(-1)
    count = visible.sum(-1)
    total = (error * visible).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.nan).double().cpu().numpy()


def landmark_error_px(predicted: torch.Tensor, true: torch.Tensor, image_size: int) -> np.ndarray:
    """Mean point distance, in pixels of a LANDMARK_REFERENCE_SIZE crop.

    predicted, true: (B, K, 2) pixels of an image_size crop. Returns (B,).
    """
    distance = (predicted - true).norm(dim=-1).mean(-1)
    return (distance * (LANDMARK_REFERENCE_SIZE / image_size)).double().cpu().numpy()


def pose_errors_deg(predicted: torch.Tensor, true: torch.Tensor) -> dict[str, np.ndarray]:
    """Absolute head-pose errors in degrees.

    predicted, true: (B, 3) angle coefficients in radians (x = pitch, y = yaw, z = roll; coefficients'
    ANGLE slice). Differences are wrapped to [-180, 180). Returns pitch/yaw/roll_error_deg and their
    mean pose_error_deg, each (B,).
    """
    difference = torch.rad2deg(predicted.double() - true.double()).cpu().numpy()
    absolute = np.abs((difference + 180.0) % 360.0 - 180.0)
    return {"pitch_error_deg": absolute[:, 0], "yaw_error_deg": absolute[:, 1], "roll_error_deg": absolute[:, 2],
            "pose_error_deg": absolute.mean(-1)}


def nme_bbox(predicted: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    """Normalised mean error: mean point distance / sqrt(w * h) of the true points' bounding box.

    predicted, true: (B, 68, 2) pixels (any common scale). Returns (B,), unitless (x100 gives %).
    """
    true = true.double()
    size = (true.amax(1) - true.amin(1)).prod(-1).clamp(min=1e-12).sqrt()
    return ((predicted.double() - true).norm(dim=-1).mean(-1) / size).cpu().numpy()


def yaw_bin_name(low: int, high: int) -> str:
    """The metrics.json suffix of a yaw bin, e.g. 'yaw_0_30'."""
    return f"yaw_{low}_{high}"


def yaw_bins(yaw_deg: np.ndarray) -> dict[str, np.ndarray]:
    """{yaw_bin_name: (B,) bool} by |yaw| in degrees: [0, 30), [30, 60), [60, 90] (above 90 in none)."""
    magnitude = np.abs(np.asarray(yaw_deg, dtype=np.float64))
    out = {}
    for k, (low, high) in enumerate(YAW_BINS):
        last = k == len(YAW_BINS) - 1
        out[yaw_bin_name(low, high)] = (magnitude >= low) & ((magnitude <= high) if last else (magnitude < high))
    return out


def id_consistency(embeddings: torch.Tensor, identities: Sequence[int]) -> dict[str, np.ndarray]:
    """How alike one identity's views look to an identity net, against other identities.

    embeddings: (M, D) unit embeddings of M images; identities: (M,) identity labels.
    Returns, one value per identity that has >= 2 views (same) / that has other identities to compare
    with (different): ``same`` the mean pairwise cosine between its views, ``different`` the mean cosine
    of its views to every view of every other identity. Arrays are in the order of sorted labels
    (NaN where undefined).
    """
    labels = np.asarray(list(identities))
    cosine = (embeddings @ embeddings.T).double().cpu().numpy()
    unique = np.unique(labels)
    same, different = np.full(len(unique), math.nan), np.full(len(unique), math.nan)
    for k, label in enumerate(unique):
        members = labels == label
        n = int(members.sum())
        if n >= 2:
            block = cosine[np.ix_(members, members)]
            same[k] = (block.sum() - np.trace(block)) / (n * (n - 1))
        if (~members).any():
            different[k] = cosine[np.ix_(members, ~members)].mean()
    return {"same": same, "different": different}


def summarise(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """{"mean", "std" (population), "count"} over the finite values; mean and std are None when none are."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return {"mean": None, "std": None, "count": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "count": int(finite.size)}
