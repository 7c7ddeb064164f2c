"""Stage 2 (fine GCNs + self-augmentation): gradients, overfitting, resume and multi-process training."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from coarse.regressor import CoarseRegressor
from coarse.synthface import build_synthface
from data.samples import collate_face_samples
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments.loop import Distributed, StepSampler
from experiments.objectives.coarse import CoarseObjective
from experiments.objectives.fine import FineObjective, step_generator
from experiments.pipeline import CheckpointError, FacePipeline, build_fine_parts, skin_reader
from experiments.train import train
from perception.attributes import AttributeNet, save_attribute_net
from perception.identity import build_identity_net
from perception.parsing import ParsingNet, save_parsing_net
from tests.tiny_runs import SIZE, save_trained_looking_perception_nets, tiny_config

RESOLUTION = 41  # a 1,681-vertex SynthFace: the smallest whose hierarchy has the GCNs' 5 levels


def _config(tmp_path, **overrides):
    return tiny_config(tmp_path, {"model": {"synthface_resolution": RESOLUTION},
                                  "coarse": {"steps": 1, "batch_size": 2, "pool_size": 16,
                                             "warm_start": {"steps": 1, "batch_size": 2}},
                                  "fine": {"steps": 2, "batch_size": 2}}, **overrides)


@pytest.fixture()
def run_dir(tmp_path):
    save_trained_looking_perception_nets(_config(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def small_model():
    return build_synthface(resolution=RESOLUTION)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return (build_identity_net("dlib").eval(),
            AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=SIZE).eval().requires_grad_(False),
            ParsingNet(image_size=SIZE).eval().requires_grad_(False))


def _samples(model, count, split="train", occlusion=0.5):
    data = SynthFaces(split, size=count, config=SynthFacesConfig(image_size=SIZE, occlusion_prob=occlusion), model=model)
    return collate_face_samples([data[i] for i in range(count)])


def _fine_pipeline(cfg, model, nets):
    torch.manual_seed(1)
    pipeline = FacePipeline(model, CoarseRegressor(imagenet_weights=False), SIZE)
    pipeline.fine, pipeline.identity_net, pipeline.attribute_net = build_fine_parts(cfg, model, nets=nets[:2])
    pipeline.parsing_net = skin_reader(cfg, net=nets[2])
    return pipeline


def test_both_branches_take_their_widths_from_fine_channels(tmp_path, small_model, nets):
    for channels in ((4, 8, 8, 8), (6, 12)):
        fine, _, _ = build_fine_parts(_config(tmp_path, fine={"channels": list(channels)}), small_model, nets=nets[:2])
        assert fine.mesh_refiner.channels == fine.faid_decoder.channels == channels
        assert fine.mesh_refiner.encoder[0].out_channels == fine.faid_decoder.decoder[0].out_channels == channels[0]
        assert fine.mesh_refiner.output.in_features == channels[0]


def test_every_stage_two_loss_term_reaches_the_regressor_and_both_gcns(tmp_path, small_model, nets):
    cfg = _config(tmp_path)
    pipeline = _fine_pipeline(cfg, small_model, nets)
    # Nudge the zero-initialised GCN outputs so gradients reach past them within one backward pass.
    with torch.no_grad():
        for layer in (pipeline.fine.mesh_refiner.output, pipeline.fine.faid_decoder.output,
                      *pipeline.regressor.final_layers):
            layer.weight.normal_(0, 1e-3)
    objective = FineObjective(pipeline, cfg.losses, cfg.augment, cfg.fine.correction_weight, *nets, SIZE)
    batch = _samples(small_model, 2)
    terms, _, _ = objective.terms(batch, step_generator(0, 1))
    assert {"photo", "id", "att", "landmark", "reg", "correction", "rob", "sa_photo", "coarse_photo",
            "reflectance", "albedo_gain", "albedo_symmetry"} <= set(terms)
    groups = {"regressor": pipeline.regressor, "mesh refiner": pipeline.fine.mesh_refiner,
              "FAID decoder": pipeline.fine.faid_decoder}
    # The geometric auxiliaries (landmarks, coefficient prior) and stage 1's terms on the coarse render
    # cannot depend on the albedo GCNs.
    geometric = {"landmark", "reg", "coarse_photo", "reflectance", "albedo_gain"}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, [p for g in groups.values() for p in g.parameters()],
                                    retain_graph=True, allow_unused=True)
        offset = 0
        for group, module in groups.items():
            count = len(list(module.parameters()))
            reached = any(g is not None and g.abs().sum() > 0 for g in grads[offset:offset + count])
            offset += count
            if name in geometric and group != "regressor":
                assert not reached, f"geometric term {name} should not depend on the {group}"
            else:
                assert reached, f"loss term {name} sends no gradient to the {group}"


def test_sharing_the_inputs_perception_features_leaves_every_stage_two_term_unchanged(tmp_path, small_model, nets,
                                                                                    monkeypatch):
    """The step computes the input's identity and attribute features once and hands them to the FAID vector, L_id,
    L_att and L_rob; each of those recomputing them itself must give the same terms and gradients."""
    import experiments.objectives.fine as fine_objective
    from losses import FeatureTargets

    cfg = _config(tmp_path)
    pipeline = _fine_pipeline(cfg, small_model, nets)
    with torch.no_grad():
        for layer in (pipeline.fine.mesh_refiner.output, pipeline.fine.faid_decoder.output):
            layer.weight.normal_(0, 1e-2)
    objective = FineObjective(pipeline, cfg.losses, cfg.augment, cfg.fine.correction_weight, *nets, SIZE)
    batch = _samples(small_model, 2)
    calls = []
    for net, method in zip(nets[:2], ("forward", "features")):
        original = getattr(net, method)
        monkeypatch.setattr(net, method, lambda x, f=original: calls.append(x.shape[0]) or f(x))

    def run():
        calls.clear()
        pipeline.zero_grad()
        terms, weights, _ = objective.terms(batch, step_generator(0, 1))
        sum(weights[k] * v for k, v in terms.items()).backward()
        grads = torch.cat([p.grad.flatten() for p in pipeline.fine.faid_decoder.parameters() if p.grad is not None])
        return {k: float(v.detach()) for k, v in terms.items()}, grads, len(calls)

    shared, shared_grads, shared_calls = run()
    monkeypatch.setattr(fine_objective, "feature_targets", lambda *args: FeatureTargets(None, None))
    separate, separate_grads, separate_calls = run()
    assert shared.keys() == separate.keys()
    for name in shared:
        assert shared[name] == pytest.approx(separate[name], rel=1e-5, abs=1e-7), name
    assert torch.allclose(shared_grads, separate_grads, rtol=1e-4, atol=1e-8)
    assert shared_calls < separate_calls  # and the nets really ran fewer times


def test_one_hundred_stage_two_steps_lower_the_albedo_error_on_eight_samples(tmp_path, small_model, nets):
    # Self-augmentation and the perceptual terms have their own tests; photo + correction keep this one fast.
    cfg = _config(tmp_path, augment={"pose": False, "occlusion": False}, losses={"id": 0.0, "att": 0.0})
    pipeline = _fine_pipeline(cfg, small_model, nets)
    objective = FineObjective(pipeline, cfg.losses, cfg.augment, cfg.fine.correction_weight, *nets, SIZE)
    batch = _samples(small_model, 8, occlusion=0.0)
    # Start from the true geometry and light so the test isolates what the GCNs learn about the albedo.
    with torch.no_grad():
        pipeline.regressor.final_layers[-1].bias.zero_()
    regressor_output = batch["coeffs"].clone()

    class TrueCoefficients(torch.nn.Module):
        def forward(self, images):
            return regressor_output[: images.shape[0]]

    pipeline.regressor = TrueCoefficients()
    regressor_output[:, 144:224] = 0  # the mean albedo: all detail is left for the fine stage
    skin = small_model.skin_mask

    def albedo_error():
        with torch.no_grad():
            fine = pipeline.predict(batch["image"]).fine_albedo
        return float((fine[:, skin] - batch["albedo"][:, skin]).abs().mean())

    before = albedo_error()
    optimiser = torch.optim.Adam(pipeline.fine.parameters(), lr=3e-3)
    for _ in range(100):
        loss, _, _ = objective(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = albedo_error()
    assert after < 0.8 * before, (before, after)


def test_resuming_stage_two_gives_the_same_next_losses(run_dir):
    uninterrupted = train(_config(run_dir, fine={"steps": 3}, train={"checkpoint_dir": str(run_dir / "a")}))
    train(_config(run_dir, fine={"steps": 2}, train={"checkpoint_dir": str(run_dir / "b")}))
    resumed = train(_config(run_dir, fine={"steps": 3}, train={"checkpoint_dir": str(run_dir / "b")}))
    a = uninterrupted["stages"]["fine"]["last_losses"]
    b = resumed["stages"]["fine"]["last_losses"]
    assert set(a) == set(b)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), key
    pipeline = FacePipeline.from_checkpoint(run_dir / "b" / "last.pt")
    assert pipeline.stages == ("coarse", "fine")
    # Retraining a perception net afterwards would feed the fine stage inputs it never saw: refused, per file.
    epochs = {"epochs": _config(run_dir).perception.attributes_train.epochs}
    torch.manual_seed(1)
    for file, save in (("attr.pt", lambda: save_attribute_net(AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=SIZE),
                                                              run_dir / "attr.pt", epochs)),
                       ("parsing.pt", lambda: save_parsing_net(ParsingNet(image_size=SIZE), run_dir / "parsing.pt", epochs))):
        original = (run_dir / file).read_bytes()
        save()
        with pytest.raises(CheckpointError, match=f"trained with a different .*{file}"):
            FacePipeline.from_checkpoint(run_dir / "b" / "last.pt")
        (run_dir / file).write_bytes(original)
    FacePipeline.from_checkpoint(run_dir / "b" / "last.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_gradient(rank: int, world: int, port: int, path: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    payload = torch.load(path, weights_only=False)
    ddp = Distributed.from_environment(torch.device("cpu"))
    gradient = _objective_gradient(payload, ddp)
    torch.save(gradient, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def _objective_gradient(payload: dict, ddp: Distributed) -> torch.Tensor:
    """The regressor heads' gradient of the coarse objective on this rank's shard of one step's batch."""
    model, batch_all, cfg = payload["model"], payload["batch"], payload["cfg"]
    torch.manual_seed(0)
    pipeline = FacePipeline(model, CoarseRegressor(imagenet_weights=False), SIZE).eval()  # BN: no batch statistics
    with torch.no_grad():
        for layer in pipeline.regressor.final_layers:
            layer.weight.normal_(0, 1e-3)
    nets = (build_identity_net("dlib").eval(), payload["attr"], payload["parsing"])
    indices = list(StepSampler(len(batch_all["image"]), 4, seed=0, start=0, total=1, rank=ddp.rank, world_size=ddp.world_size))
    batch = {k: v[indices] for k, v in batch_all.items() if isinstance(v, torch.Tensor)}
    loss, _, _ = CoarseObjective(pipeline, cfg.losses, *nets)(batch)
    loss.backward()
    parameters = [p for layer in pipeline.regressor.final_layers for p in layer.parameters()]
    ddp.average_gradients(parameters)
    return torch.cat([p.grad.reshape(-1) for p in parameters])


def test_two_process_gloo_run_averages_to_the_one_process_gradient(tmp_path, small_model, nets):
    cfg = _config(tmp_path)
    batch = _samples(small_model, 6)
    payload = {"model": small_model, "batch": {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)},
               "cfg": cfg, "attr": nets[1], "parsing": nets[2]}
    path = tmp_path / "payload.pt"
    torch.save(payload, path)
    single = _objective_gradient(payload, Distributed())
    mp.spawn(_rank_gradient, args=(2, _free_port(), str(path), str(tmp_path / "grad")), nprocs=2, join=True)
    for rank in (0, 1):
        shared = torch.load(tmp_path / f"grad.{rank}")
        # Float sums in another order (threads, shards) differ in the last digits; a wrong shard or a missing
        # average would be off by tens of percent.
        relative = float((shared - single).norm() / single.norm())
        assert relative < 1e-4, relative
    assert single.abs().sum() > 0


def test_full_run_writes_the_held_out_table_under_stable_names(run_dir):
    cfg = _config(run_dir, fine={"steps": 1, "read_skin_threshold": 0.8}, train={"eval_size": 4})
    summary = train(cfg)
    assert FacePipeline.from_checkpoint(run_dir / "ck" / "last.pt").skin_threshold == 0.8  # the checkpoint's, not 0.5
    import json

    saved = json.loads((run_dir / "runs" / "summary.json").read_text())
    for protocol in ("clean", "occluded"):
        rows = saved["val"][protocol]
        assert set(rows) == {"mean_face", "coarse", "fine"}
        for method, values in rows.items():
            for name in ("psnr_db", "ssim", "id_cosine", "landmark68_px", "pose_deg", "albedo_error"):
                assert isinstance(values[name], float) and values[name] == values[name], (protocol, method, name)
    assert summary["val"]["clean"]["fine"]["psnr_db"] == saved["val"]["clean"]["fine"]["psnr_db"]
    assert (run_dir / "runs" / "heldout_fine" / "grid.png").is_file()
