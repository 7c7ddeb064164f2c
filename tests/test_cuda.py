"""The CUDA path: the rasterizer and a whole stage-2 step compute on a GPU what they compute on the CPU, and
`make train` runs every stage on a GPU, resumes there, and its checkpoint loads on a machine without one.

Skipped where no CUDA GPU is present (CI has none). BENCHMARKS.md says when these last ran on a lent GPU.
TF32 is turned off here, so both devices do fp32 arithmetic and only the order of float sums differs.
"""
import pytest
import torch

from benchmarks.bench_render import bfm_sized_face_surface
from benchmarks.bench_train_cuda import tf32
from coarse.face_model import camera_for
from coarse.synthface import build_synthface
from data.synthfaces import SYNTHFACES_ATTRIBUTES
from experiments.objectives.fine import FineObjective, step_generator
from experiments.pipeline import FacePipeline
from experiments.train import train
from perception.attributes import AttributeNet
from perception.identity import build_identity_net
from perception.parsing import SKIN, ParsingNet
from render.rasterizer import render_mesh
from tests.test_fine_training import RESOLUTION, _config, _fine_pipeline, _samples
from tests.tiny_runs import SIZE, save_trained_looking_perception_nets

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    with tf32(False):
        yield


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _rasterized(device: str) -> list[torch.Tensor]:
    """[image, mask, screen gradient, colour gradient] of two views of a 2,500-vertex face surface rendered on
    `device`, returned on the CPU."""
    verts, tris = bfm_sized_face_surface(2_500)
    size = 64
    screen = camera_for(size).project(verts).unsqueeze(0).repeat(2, 1, 1).detach()
    screen[1, :, :2] += 1.5  # a second, shifted view
    colours = torch.rand(2, verts.shape[0], 3, generator=torch.Generator().manual_seed(0))
    weights = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    s, c = screen.to(device).requires_grad_(), colours.to(device).requires_grad_()
    out = render_mesh(s, tris.to(device), c, size)
    (out.image * weights.to(device)).sum().backward()
    return [t.detach().cpu() for t in (out.image, out.mask, s.grad, c.grad)]


def test_rasterizer_on_cuda_gives_the_cpu_image_and_gradients():
    cpu, cuda = _rasterized("cpu"), _rasterized("cuda")
    assert cpu[1].sum() > 0.3 * cpu[1].numel()  # the face covers the image
    # A GPU may fuse a multiply-add that the CPU rounds twice: a pixel on a triangle's edge may fall the other way.
    same = cpu[1] == cuda[1]
    assert same.float().mean() > 0.999
    assert (cuda[0] - cpu[0]).abs().mul(same).max() < 1e-4
    for name, index in (("screen gradient", 2), ("colour gradient", 3)):
        assert _relative(cuda[index], cpu[index]) < 1e-3, name


def _nets(device):
    """The perception nets, untrained, except that the parsing net calls every pixel skin with certainty: an
    untrained one puts probabilities near the light solve's 0.5 threshold, where the devices' last digits decide."""
    torch.manual_seed(0)
    parsing = ParsingNet(image_size=SIZE)
    head = parsing.unet.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()[SKIN] = 8.0
    return (build_identity_net("dlib", device=device).eval(),
            AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=SIZE).to(device).eval().requires_grad_(False),
            parsing.to(device).eval().requires_grad_(False))


def _stage_two_step(cfg, device: str) -> tuple[dict, dict]:
    """The loss terms of one stage-2 step on two SynthFaces and the gradients (on the CPU) it sends to the
    regressor and to both GCNs, computed on `device`."""
    model = build_synthface(resolution=RESOLUTION)
    batch = _samples(model, 2)
    nets = _nets(device)
    pipeline = _fine_pipeline(cfg, model.to(device), nets).to(device)
    with torch.no_grad():  # the same nudge on both devices: gradients then reach past the zero-initialised outputs
        for layer in (pipeline.fine.mesh_refiner.output, pipeline.fine.faid_decoder.output):
            layer.weight.copy_(1e-2 * torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(2)))
    objective = FineObjective(pipeline, cfg.losses, cfg.augment, cfg.fine.correction_weight, *nets, SIZE)
    terms, weights, _ = objective.terms({k: v.to(device) if isinstance(v, torch.Tensor) else v
                                         for k, v in batch.items()}, step_generator(0, 1))
    sum(weights[k] * v for k, v in terms.items()).backward()
    grads = {name: torch.cat([p.grad.flatten().cpu() for p in module.parameters() if p.grad is not None])
             for name, module in (("regressor", pipeline.regressor), ("mesh refiner", pipeline.fine.mesh_refiner),
                                  ("FAID decoder", pipeline.fine.faid_decoder))}
    return {k: float(v.detach()) for k, v in terms.items()}, grads


@pytest.fixture()
def two_cpu_threads():
    """The CPU reference runs on 2 threads, as CI does. On the lent H200 machine (16 cores, its own torch 2.11),
    16 threads made the channels-last attribute net's CPU features 88 % off for the same input, while 2 threads
    there agreed with CUDA to 1e-6, as the pinned torch 2.14.1 does with 16 threads on a 2-core CPU (2026-11-27)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_a_stage_two_step_on_cuda_gives_the_cpu_losses_and_gradients(tmp_path, two_cpu_threads):
    cfg = _config(tmp_path)
    (cpu_terms, cpu_grads), (cuda_terms, cuda_grads) = _stage_two_step(cfg, "cpu"), _stage_two_step(cfg, "cuda")
    assert cpu_terms.keys() == cuda_terms.keys() and {"photo", "id", "att", "rob", "sa_photo"} <= set(cpu_terms)
    for name in cpu_terms:
        assert cuda_terms[name] == pytest.approx(cpu_terms[name], rel=5e-3, abs=1e-6), name
    for name in cpu_grads:
        assert cpu_grads[name].abs().sum() > 0, name
        assert _relative(cuda_grads[name], cpu_grads[name]) < 1e-2, name


def test_make_train_on_cuda_runs_every_stage_resumes_and_loads_without_a_gpu(tmp_path, capsys):
    cfg = _config(tmp_path, train={"device": "cuda", "eval_size": 4})
    save_trained_looking_perception_nets(cfg)
    summary = train(cfg)
    assert set(summary["stages"]) == {"warm_start", "coarse", "fine"}
    assert summary["val"]["clean"]["fine"]["psnr_db"] == summary["val"]["clean"]["fine"]["psnr_db"]  # not NaN
    capsys.readouterr()
    summary = train(_config(tmp_path, fine={"steps": 3}, train={"device": "cuda", "eval_size": 0}))
    assert "[fine] resuming" in capsys.readouterr().out and summary["stages"]["fine"]["step"] == 3
    pipeline = FacePipeline.from_checkpoint(tmp_path / "ck" / "last.pt", torch.device("cpu"))
    assert pipeline.stages == ("coarse", "fine")
    assert all(t.device.type == "cpu" for t in pipeline.state_dict().values())
    with torch.no_grad():
        prediction = pipeline.predict(_samples(build_synthface(resolution=RESOLUTION), 1)["image"])
    assert torch.isfinite(prediction.fine_albedo).all()
