import numpy as np
import pytest
import scipy.io
import torch

from coarse.bfm import BFMFormatError, load_bfm


def _tiny_bfm(n_side=6):
    """A tiny grid mesh in Deep3D's BFM_model_front.mat layout (1-based indices)."""
    rng = np.random.default_rng(0)
    ys, xs = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    verts = np.stack([xs, ys, np.zeros_like(xs)], -1).reshape(-1, 3).astype(np.float64) + 5.0
    n = verts.shape[0]
    idx = np.arange(n).reshape(n_side, n_side)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tri = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]) + 1
    point_buf = np.zeros((n, 8), dtype=np.int64)
    for v in range(n):
        faces = np.nonzero((tri - 1 == v).any(1))[0] + 1
        point_buf[v, : len(faces)] = faces
    return {
        "meanshape": verts.reshape(1, -1),
        "idBase": rng.normal(size=(3 * n, 80)),
        "exBase": rng.normal(size=(3 * n, 64)),
        "meantex": np.full((1, 3 * n), 127.5),
        "texBase": rng.normal(size=(3 * n, 80)),
        "tri": tri.astype(np.float64),
        "point_buf": point_buf.astype(np.float64),
        "keypoints": (np.arange(68) % n + 1).reshape(1, 68).astype(np.float64),
    }


def test_tiny_bfm_file_loads_with_zero_based_indices(tmp_path):
    data = _tiny_bfm()
    path = tmp_path / "BFM_model_front.mat"
    scipy.io.savemat(path, data)
    model = load_bfm(path)
    model.validate()
    assert model.triangles.min() == 0 and model.triangles.max() == model.num_vertices - 1
    assert torch.equal(model.triangles, torch.from_numpy(data["tri"].astype(np.int64) - 1))
    assert torch.equal(model.landmarks68, torch.from_numpy(data["keypoints"].reshape(-1).astype(np.int64) - 1))
    assert torch.allclose(model.mean_albedo, torch.tensor(0.5))
    assert torch.allclose(model.mean_shape.mean(0), torch.zeros(3), atol=1e-5)
    # Padding slots point one past the last face.
    assert int(model.point_buf.max()) == model.num_faces


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.pop("idBase"), "missing key(s) idBase"),
        (lambda d: d.update(exBase=d["exBase"][:, :10]), "exBase has shape"),
        (lambda d: d.update(tri=d["tri"] - 1), "1-based"),
        (lambda d: d.update(keypoints=d["keypoints"][:, :5]), "keypoints"),
        (lambda d: d.update(meanshape=d["meanshape"][:, :-1]), "multiple of 3"),
    ],
)
def test_corrupted_bfm_gives_one_clear_line(tmp_path, corrupt, message):
    data = _tiny_bfm()
    corrupt(data)
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, data)
    with pytest.raises(BFMFormatError) as err:
        load_bfm(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_and_non_mat_files_give_clear_errors(tmp_path):
    with pytest.raises(BFMFormatError, match="file not found"):
        load_bfm(tmp_path / "nope.mat")
    junk = tmp_path / "junk.mat"
    junk.write_text("this is not a mat file")
    with pytest.raises(BFMFormatError, match="not a readable .mat file"):
        load_bfm(junk)
