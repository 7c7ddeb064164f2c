"""Loader for Deep3DFaceRecon's `BFM_model_front.mat` (full-scale Basel Face Model, user provided)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from coarse.coefficients import N_EXP, N_ID, N_TEX
from coarse.morphable_model import MorphableModel, build_point_buf

REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "point_buf", "keypoints")
HOW_TO_GET = (
    "build it with Deep3DFaceRecon_pytorch's util/load_mats.py from 01_MorphableModel.mat (BFM09) and "
    "Exp_Pca.bin, then pass --bfm PATH"
)


class BFMFormatError(ValueError):
    """The BFM file is missing, unreadable or does not have Deep3D's keys and shapes."""


def _fail(path: Path, what: str) -> BFMFormatError:
    return BFMFormatError(f"{path}: {what}; expected Deep3D's BFM_model_front.mat ({HOW_TO_GET})")


def load_bfm(path: str | Path, recenter: bool = True) -> MorphableModel:
    """Load `BFM_model_front.mat`.

    Indices in the file are 1-based and become 0-based; albedo is divided by 255 into [0, 1]; the mean
    shape is recentred at the origin as Deep3D does. Raises BFMFormatError with one line on any problem.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found")
    try:
        from scipy.io import loadmat

        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-mat input
        raise _fail(path, f"not a readable .mat file ({type(exc).__name__})") from None
    missing = [k for k in REQUIRED_KEYS if k not in mat]
    if missing:
        raise _fail(path, f"missing key(s) {', '.join(missing)}")

    mean_shape = np.asarray(mat["meanshape"], dtype=np.float32).reshape(-1)
    if mean_shape.size % 3:
        raise _fail(path, f"meanshape has {mean_shape.size} values, not a multiple of 3")
    n = mean_shape.size // 3

    def basis(key: str, k: int) -> torch.Tensor:
        value = np.asarray(mat[key], dtype=np.float32)
        if value.shape != (3 * n, k):
            raise _fail(path, f"{key} has shape {value.shape}, expected {(3 * n, k)}")
        return torch.from_numpy(value)

    id_base, exp_base, tex_base = basis("idBase", N_ID), basis("exBase", N_EXP), basis("texBase", N_TEX)
    mean_tex = np.asarray(mat["meantex"], dtype=np.float32).reshape(-1)
    if mean_tex.size != 3 * n:
        raise _fail(path, f"meantex has {mean_tex.size} values, expected {3 * n}")

    tri = np.asarray(mat["tri"]).astype(np.int64)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise _fail(path, f"tri has shape {tri.shape}, expected (F, 3)")
    if tri.min() < 1 or tri.max() > n:
        raise _fail(path, f"tri indices span [{tri.min()}, {tri.max()}], expected 1-based in [1, {n}]")
    keypoints = np.asarray(mat["keypoints"]).astype(np.int64).reshape(-1)
    if keypoints.shape != (68,) or keypoints.min() < 1 or keypoints.max() > n:
        raise _fail(path, "keypoints must be 68 1-based vertex indices")
    point_buf = np.asarray(mat["point_buf"]).astype(np.int64)
    if point_buf.ndim != 2 or point_buf.shape[0] != n:
        raise _fail(path, f"point_buf has shape {point_buf.shape}, expected ({n}, K)")

    f = tri.shape[0]
    triangles = torch.from_numpy(tri - 1)
    # 1-based with 0 as padding: padding becomes F (the zero-normal slot).
    buf = point_buf - 1
    buf[(buf < 0) | (buf >= f)] = f
    shape = torch.from_numpy(mean_shape.reshape(n, 3))
    if recenter:
        shape = shape - shape.mean(0, keepdim=True)
    skin = torch.ones(n, dtype=torch.bool)
    if "skinmask" in mat:
        skin_values = np.asarray(mat["skinmask"]).reshape(-1)
        if skin_values.size == n:
            skin = torch.from_numpy(skin_values > 0)
    model = MorphableModel(
        mean_shape=shape,
        id_base=id_base,
        exp_base=exp_base,
        mean_albedo=torch.from_numpy(mean_tex.reshape(n, 3) / 255.0),
        albedo_base=tex_base / 255.0,
        triangles=triangles,
        point_buf=torch.from_numpy(buf),
        landmarks68=torch.from_numpy(keypoints - 1),
        skin_mask=skin,
        name=path.stem,
    )
    if int(model.point_buf.max()) > f or model.point_buf.shape[1] == 0:
        model.point_buf = build_point_buf(triangles, n)
    return model
