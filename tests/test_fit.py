import pytest
import skimage.data
import torch

from coarse.synthface import build_synthface
from data.align import align_photo, alignment_transform, apply_transform, warp_to_crop
from experiments.fit import FitWeights, fit_to_photo, mesh_edges
from experiments.pipeline import FacePipeline
from perception.detect import FaceDetector
from perception.identity import build_identity_net

SIZE = 64


@pytest.fixture(scope="module")
def astronaut_case():
    """The astronaut's aligned 64 px crop, its 5 detected points in crop pixels, a mean-face pipeline."""
    image = skimage.data.astronaut()
    record = align_photo(image, FaceDetector())
    transform = alignment_transform(record.landmarks5, SIZE)
    crop = warp_to_crop(image, transform, SIZE)
    points5 = torch.tensor(apply_transform(transform, record.landmarks5), dtype=torch.float32)
    torch.manual_seed(0)
    pipeline = FacePipeline.mean_face(build_synthface(resolution=41), input_size=SIZE)
    return crop, points5, pipeline, build_identity_net("dlib").eval()


def test_fitting_the_astronaut_raises_face_psnr_and_identity_cosine(astronaut_case):
    crop, points5, pipeline, identity_net = astronaut_case
    coeffs, albedo, report = fit_to_photo(pipeline, crop, points5, steps=15, identity_net=identity_net)
    assert coeffs.shape == (1, 257) and albedo.shape == (1, pipeline.model.num_vertices, 3)
    assert float(albedo.min()) >= 0 and float(albedo.max()) <= 1
    assert report.psnr_after_db > report.psnr_before_db + 1.0
    assert report.id_cosine_after > report.id_cosine_before
    assert report.landmark_px_after < report.landmark_px_before
    assert report.landmarks == "5" and report.mask == "render" and report.best_step > 0


def test_zero_steps_return_the_network_prediction_unchanged(astronaut_case):
    crop, points5, pipeline, identity_net = astronaut_case
    with torch.no_grad():
        prediction = pipeline.predict(crop[None])
    coeffs, albedo, report = fit_to_photo(pipeline, crop, points5, steps=0, identity_net=identity_net,
                                          initial=prediction)
    assert torch.equal(coeffs, prediction.coeffs)
    assert torch.allclose(albedo, prediction.coarse_albedo.clamp(0, 1))
    assert report.psnr_after_db == pytest.approx(report.psnr_before_db)


def test_the_albedo_offset_regulariser_keeps_the_offset_small_and_smooth(astronaut_case):
    crop, points5, pipeline, identity_net = astronaut_case
    base = pipeline.predict(crop[None]).coarse_albedo.detach().clamp(0, 1)
    loose = fit_to_photo(pipeline, crop, points5, steps=8, identity_net=identity_net,
                         weights=FitWeights(offset_size=0.0, offset_smooth=0.0))[1]
    tight = fit_to_photo(pipeline, crop, points5, steps=8, identity_net=identity_net,
                         weights=FitWeights(offset_size=1e3, offset_smooth=1e4))[1]
    edges = mesh_edges(pipeline.model.triangles)

    def roughness(albedo):
        return float((albedo[0, edges[:, 0]] - albedo[0, edges[:, 1]]).pow(2).sum(-1).mean())

    assert float((tight - base).abs().mean()) < float((loose - base).abs().mean())
    assert roughness(tight) < roughness(loose)


def test_mesh_edges_are_unique_and_undirected():
    edges = mesh_edges(torch.tensor([[0, 1, 2], [2, 1, 3]]))
    assert sorted(map(tuple, edges.tolist())) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]


def test_landmark_counts_other_than_68_or_5_are_refused(astronaut_case):
    crop, _, pipeline, identity_net = astronaut_case
    with pytest.raises(ValueError, match="68 or 5"):
        fit_to_photo(pipeline, crop, torch.zeros(7, 2), steps=1, identity_net=identity_net)
