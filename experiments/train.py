"""The main training job: warm start (embedded default) -> coarse, self-supervised -> fine + self-augmentation.

    python -m experiments.train [--config experiments/configs/default.yaml] [--fresh] [--only STAGE]
    torchrun --nproc_per_node 2 -m experiments.train ...        # make train NPROC=2 (gloo on CPU, nccl on GPU)

0. the attribute and parsing nets are trained first when their checkpoints are missing;
1. warm start (`coarse.warm_start`, SynthFaces only): the regressor learns from SynthFaces' ground truth, in
   place of the ImageNet initialisation that cannot be downloaded here;
2. coarse (`coarse`): Deep3D's self-supervised recipe with the paper's L_id and L_att;
3. fine (`fine`, `augment`): the GCN refiners and self-augmentation, end to end with the regressor (eq. 5).
Each stage resumes from checkpoints/<name>/<stage>.pt; `last.pt` is always the latest. Ctrl-C saves and
stops; the same command resumes. A held-out table (mean face / coarse / fine) ends the run and goes to
<log_dir>/summary.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import Dataset

from coarse.bfm import BFMFormatError
from coarse.load_model import load_morphable_model
from coarse.regressor import CheckpointError as RegressorCheckpointError
from coarse.regressor import CoarseRegressor, load_deep3d_checkpoint, resolve_precision
from fileio import write_json_atomically
from data.synthfaces import SynthFaces, SynthFacesConfig
from experiments.config import Config, ConfigError, load_config
from experiments.loop import (Distributed, NonFiniteLossError, read_stage_checkpoint, run_stage, stage_checkpoint,
                              step_batches)
from experiments.objectives.coarse import CoarseObjective
from experiments.objectives.fine import FineObjective, step_generator
from experiments.objectives.warm_start import WarmStartObjective
from experiments.perception_nets import RenderedOnce, ensure_perception_nets
from experiments.pipeline import FacePipeline, build_fine_parts, file_sha1, fine_stage_inputs, reading_options, skin_reader
from perception.attributes import load_attribute_net
from perception.facenet import MissingWeightsError
from perception.identity import build_identity_net
from perception.parsing import load_parsing_net
from perception.training import CheckpointError, resolve_device, save_checkpoint_atomic

POOL_KEYS = ("image", "coeffs", "landmarks68", "landmarks5")


def build_dataset(cfg: Config, split: str, size: int, model, image_size: int | None = None) -> Dataset:
    """The configured data set's `split` (SynthFaces renders `size` samples at `image_size`)."""
    if cfg.data.dataset == "synthfaces":
        config = SynthFacesConfig(image_size=image_size or cfg.data.image_size, occlusion_prob=cfg.data.occlusion_prob)
        return SynthFaces(split, size=size, seed=cfg.data.synth_seed, config=config, model=model)
    if not cfg.data.root:
        raise ConfigError(f"data.root: set it to the {cfg.data.dataset} folder (see README)")
    if cfg.data.dataset == "celeba":
        from data.celeba import CelebAFaces

        return CelebAFaces(cfg.data.root, split)
    if cfg.data.dataset == "folder":
        from data.image_folder import ImageFolderFaces

        return ImageFolderFaces(cfg.data.root)
    raise ConfigError(f"data.dataset: '{cfg.data.dataset}' cannot train (use synthfaces, celeba or folder)")


def training_pool(cfg: Config, model) -> Dataset:
    """SynthFaces' training samples rendered once (uint8) and cached on disk, so every stage, epoch and resumed
    run reuses them instead of re-rendering; other data sets are read as they are."""
    if cfg.data.dataset != "synthfaces" or not cfg.coarse.pool_size:
        return build_dataset(cfg, "train", cfg.data.train_size, model)
    size = min(cfg.coarse.pool_size, cfg.data.train_size)
    key = hashlib.sha1(json.dumps([asdict(cfg.model), cfg.data.synth_seed, cfg.data.image_size, cfg.data.occlusion_prob,
                                   size, POOL_KEYS]).encode()).hexdigest()[:12]
    path = Path(cfg.data.cache_dir) / "synthfaces_pool" / f"{key}.pt"
    if path.is_file():
        try:
            return RenderedOnce.from_items(torch.load(path, weights_only=True)["items"])
        except Exception:  # damaged cache: render again
            path.unlink()
    pool = RenderedOnce(build_dataset(cfg, "train", size, model), POOL_KEYS, f"render {size} training faces",
                        cfg.data.num_workers)
    save_checkpoint_atomic({"items": pool.items}, path)
    return pool


def warm_start_enabled(cfg: Config) -> bool:
    mode = cfg.coarse.warm_start.enabled
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"coarse.warm_start.enabled: expected auto, on or off, got '{mode}'")
    if mode == "auto":
        return cfg.data.dataset == "synthfaces" and not cfg.coarse.imagenet_weights and not cfg.coarse.deep3d_checkpoint
    if mode == "on" and cfg.data.dataset != "synthfaces":
        raise ConfigError("coarse.warm_start.enabled: the warm start needs SynthFaces' ground truth (data.dataset: synthfaces)")
    return mode == "on"


def _rows(*rows: torch.Tensor, count: int = 4) -> tuple[list[torch.Tensor], int]:
    """Contact-sheet tiles: one column per row tensor, one line per sample (first `count`)."""
    n = min(count, rows[0].shape[0])
    tiles = [row[i].expand(3, -1, -1) for i in range(n) for row in rows]
    return tiles, len(rows)


@torch.no_grad()
def recalibrate_batchnorm(network: torch.nn.Module, dataset: Dataset, batches: int, batch_size: int,
                          device: torch.device, seed: int = 0) -> None:
    """Replace BatchNorm running statistics by their exact average over `batches` training batches.

    A regressor trained from random weights changes fast, and the exponential running averages lag behind
    it, so eval-mode predictions can be far worse than train-mode ones; a pass like this fixes that.
    """
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = network.training
    network.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        indices = torch.randint(len(dataset), (batch_size,), generator=g).tolist()
        images = torch.stack([dataset[i]["image"] for i in indices]).to(device)
        network(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    network.train(was_training)


def freeze_batchnorm(network: torch.nn.Module) -> None:
    """Put `network`'s BatchNorm layers in eval mode: they normalise with their running statistics and stop
    updating them; their affine weights still train."""
    for m in network.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def freeze_regressor_batchnorm(stage, step: int) -> None:
    """freeze_batchnorm for a stage's regressor when the stage's batchnorm mode is "frozen", or from step
    `stage.frozen_from` on (called every step: the loop puts its modules in train mode when the stage starts)."""
    if stage.batchnorm == "frozen" or 0 < stage.frozen_from <= step:
        freeze_batchnorm(stage.pipeline.regressor)


def recalibrate_regressor(stage) -> None:
    """recalibrate_batchnorm for a stage's regressor on its pool (512 clean training images) when the stage's
    batchnorm mode is "recalibrate"; no pool, no-op."""
    if stage.batchnorm == "recalibrate" and stage.pool is not None:
        recalibrate_batchnorm(stage.pipeline.regressor, stage.pool, batches=max(1, 512 // stage.batch_size),
                              batch_size=stage.batch_size, device=stage.device)


class RegressorStage:
    """Warm start or coarse stage: only the regressor trains. `batchnorm` (StageConfig.batchnorm) says which
    BatchNorm statistics it trains with and keeps: "recalibrate" recomputes them on `pool` at the end,
    "running" keeps the running averages, "frozen" trains with the statistics it starts from; `frozen_from`
    (StageConfig.batchnorm_frozen_from) switches "running" to "frozen" at that step."""

    def __init__(self, objective, pipeline: FacePipeline, pool: Dataset | None = None, batch_size: int = 16,
                 device: torch.device = torch.device("cpu"), batchnorm: str = "recalibrate", frozen_from: int = 0):
        self.objective, self.pipeline, self.name = objective, pipeline, objective.name
        self.pool, self.batch_size, self.device, self.batchnorm = pool, batch_size, device, batchnorm
        self.frozen_from = frozen_from

    def on_end(self) -> None:
        recalibrate_regressor(self)

    def modules(self) -> dict:
        return {"regressor": self.pipeline.regressor}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.pipeline.regressor.parameters())}]

    def step(self, batch: dict, step: int):
        freeze_regressor_batchnorm(self, step)
        return self.objective(batch, step)

    def preview(self, batch: dict, visuals: dict):
        image = batch["image"]
        if "composite" in visuals:
            tiles, columns = _rows(image, visuals["composite"], visuals["mask"])
            return tiles, columns, "input|render|mask"
        with torch.no_grad():
            coeffs = visuals["coeffs"][:4].detach()
            predicted = self.pipeline.render(coeffs, None, image.shape[-1], image[:4])
            truth = self.pipeline.render(batch["coeffs"][:4], None, image.shape[-1], image[:4])
        tiles, columns = _rows(image, predicted.image, truth.image)
        return tiles, columns, "input|predicted|true coefficients"


class FineStage:
    """Stage 2: the regressor (at regressor_lr_scale) and the fine GCNs train together.

    Two thirds of what passes through the regressor in stage 2 are self-augmentation renders (random poses up to
    90 degrees, random backgrounds, occluders), which drag BatchNorm's running averages away from photos. With
    batchnorm "recalibrate" they are recomputed on clean training images at the end (measured on 64 held-out
    SynthFaces: landmark error 8.3 -> 6.5 px, pose 5.3 -> 4.1 degrees with the same weights); "frozen" (the
    default config) never lets them move.
    """

    name = "fine"

    def __init__(self, objective: FineObjective, pipeline: FacePipeline, regressor_lr_scale: float, seed: int,
                 pool: Dataset | None = None, batch_size: int = 16, device: torch.device = torch.device("cpu"),
                 batchnorm: str = "recalibrate", frozen_from: int = 0):
        self.objective, self.pipeline, self.lr_scale, self.seed = objective, pipeline, regressor_lr_scale, seed
        self.pool, self.batch_size, self.device, self.batchnorm = pool, batch_size, device, batchnorm
        self.frozen_from = frozen_from

    def on_end(self) -> None:
        recalibrate_regressor(self)

    def modules(self) -> dict:
        return {"regressor": self.pipeline.regressor, "fine": self.pipeline.fine}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.pipeline.fine.parameters())},
                {"params": list(self.pipeline.regressor.parameters()), "lr_scale": self.lr_scale}]

    def step(self, batch: dict, step: int):
        freeze_regressor_batchnorm(self, step)
        return self.objective(batch, step_generator(self.seed, step))

    def preview(self, batch: dict, visuals: dict):
        image, prediction = batch["image"], visuals["prediction"]
        with torch.no_grad():
            coarse = self.pipeline.render(prediction.coeffs[:4].detach(), None, image.shape[-1], image[:4]).image
        rows = [image, coarse, visuals["composite"]]
        augmented = visuals["augmented"]
        if augmented is not None:
            for view in augmented.branches().values():
                rows += [view.image, view.recon_image if view.fed_back else torch.zeros_like(view.image)]
        tiles, columns = _rows(*[r[:4].detach() for r in rows])
        return tiles, columns, "input|coarse|fine|I_rot|recon|I_occ|recon"


def training_precision(cfg: Config, device: torch.device) -> str:
    """train.precision resolved for `device`: "fp32" or "bf16"."""
    try:
        return resolve_precision(cfg.train.precision, device.type)
    except ValueError as exc:
        raise ConfigError(f"train.{exc}") from None


def perception_nets(cfg: Config, device: torch.device):
    """The frozen identity, attribute and parsing nets, all three at the training precision (train.precision):
    in bfloat16 the identity and attribute nets' features keep a cosine of 0.9999 with float32's and their input
    gradients, which train the regressor, 0.95 on average (64-px renders); a stage-2 step takes 0.85 x the time."""
    identity_net = build_identity_net(cfg.perception.identity_net, cfg.perception.facenet_weights, device=device).eval()
    attribute_net = load_attribute_net(cfg.perception.attributes_checkpoint, device).eval().requires_grad_(False)
    parsing_net = load_parsing_net(cfg.perception.parsing_checkpoint, device).eval().requires_grad_(False)
    for net in (identity_net, attribute_net, parsing_net):
        net.precision = training_precision(cfg, device)
    return identity_net, attribute_net, parsing_net


def new_regressor(cfg: Config, device: torch.device = torch.device("cpu")) -> CoarseRegressor:
    regressor = CoarseRegressor(imagenet_weights=cfg.coarse.imagenet_weights or False,
                                precision=training_precision(cfg, device))
    if cfg.coarse.deep3d_checkpoint:
        load_deep3d_checkpoint(regressor, cfg.coarse.deep3d_checkpoint)
    return regressor


def train(cfg: Config, fresh: bool = False, only: str | None = None) -> dict:
    """Run every enabled stage (resuming), then the held-out evaluation. Returns the summary dict."""
    device = resolve_device(cfg.train.device)
    ddp = Distributed.from_environment(device)
    if fresh and ddp.is_main:
        for stage in ("warm_start", "coarse", "fine", "last"):
            stage_checkpoint(cfg, stage).unlink(missing_ok=True)
    if ddp.is_main:
        ensure_perception_nets(cfg)
    ddp.barrier()
    model = load_morphable_model(cfg.model.bfm, cfg.model.synthface_seed, cfg.model.synthface_resolution)
    pool = training_pool(cfg, model)
    model = model.to(device)
    torch.manual_seed(cfg.train.seed)  # weights must not depend on whether the pool came from the cache
    pipeline = FacePipeline(model, new_regressor(cfg, device), cfg.data.image_size, **reading_options(cfg)).to(device)
    identity_net, attribute_net, parsing_net = perception_nets(cfg, device)
    workers = 0 if isinstance(pool, RenderedOnce) else cfg.data.num_workers  # in memory: nothing to overlap

    def batches(stage_cfg):
        return lambda start: step_batches(pool, stage_cfg, cfg.train.seed, start, workers, ddp)

    plan = []
    if warm_start_enabled(cfg):
        plan.append(("warm_start", cfg.coarse.warm_start,
                     lambda: RegressorStage(WarmStartObjective(
                         pipeline, cfg.coarse.warm_start.landmark, appearance=cfg.coarse.warm_start.appearance,
                         appearance_after=cfg.coarse.warm_start.appearance_after,
                         identity_weighting=cfg.coarse.warm_start.identity_weighting), pipeline,
                         pool, cfg.coarse.warm_start.batch_size, device, cfg.coarse.warm_start.batchnorm,
                         cfg.coarse.warm_start.batchnorm_frozen_from)))
    plan.append(("coarse", cfg.coarse, lambda: RegressorStage(
        CoarseObjective(pipeline, cfg.losses, identity_net, attribute_net, parsing_net), pipeline,
        pool, cfg.coarse.batch_size, device, cfg.coarse.batchnorm, cfg.coarse.batchnorm_frozen_from)))
    if cfg.fine.enabled:
        def fine_stage():
            torch.manual_seed(cfg.train.seed + 1)
            pipeline.fine, pipeline.identity_net, pipeline.attribute_net = build_fine_parts(
                cfg, model, device, (identity_net, attribute_net))
            pipeline.use_attributes = cfg.fine.use_attributes
            pipeline.parsing_net = skin_reader(cfg, device, parsing_net)
            objective = FineObjective(pipeline, cfg.losses, cfg.augment, cfg.fine.correction_weight, identity_net,
                                      attribute_net, parsing_net, cfg.data.image_size)
            return FineStage(objective, pipeline, cfg.fine.regressor_lr_scale, cfg.train.seed, pool,
                             cfg.coarse.batch_size, device, cfg.fine.batchnorm, cfg.fine.batchnorm_frozen_from)
        plan.append(("fine", cfg.fine, fine_stage))

    summary: dict = {"stages": {}}
    started = time.time()
    names = [name for name, _, _ in plan]
    if only and only not in names:
        raise ConfigError(f"--only {only}: that stage is off in this config (its stages: {', '.join(names)})")
    for name, stage_cfg, make in plan[:names.index(only) + 1] if only else plan:
        if only and name != only and not stage_finished(cfg, name, stage_cfg):
            raise ConfigError(f"--only {only} starts from the {name} stage, which has not finished "
                              f"({stage_checkpoint(cfg, name)}); run `python -m experiments.train` without --only")
        stage = make()
        extra = {key: file_sha1(file) for key, file in fine_stage_inputs(cfg).items()} if name == "fine" else None
        result = run_stage(stage, batches(stage_cfg), stage_cfg, cfg, device, ddp, extra_state=extra)
        summary["stages"][name] = result
        if result.get("stopped"):
            return summary
    summary["train_seconds"] = round(time.time() - started, 1)
    if ddp.is_main and cfg.train.eval_size:
        summary["val"] = held_out_table(cfg, device)
        write_json_atomically(Path(cfg.train.log_dir) / "summary.json", summary)
        print(f"summary: {Path(cfg.train.log_dir) / 'summary.json'}")
    return summary


# summary.json's stable names -> experiments.evaluate's metric names.
SUMMARY_METRICS = {"psnr_db": "psnr_face_db", "ssim": "ssim_face", "id_cosine": "id_cosine_dlib",
                   "landmark68_px": "landmark_error_px", "pose_deg": "pose_error_deg", "albedo_error": "albedo_error"}


def stage_finished(cfg: Config, name: str, stage_cfg) -> bool:
    """Whether <checkpoint_dir>/<name>.pt holds all of stage_cfg.steps (a later stage can start from it)."""
    payload = read_stage_checkpoint(stage_checkpoint(cfg, name), torch.device("cpu"))
    return payload is not None and int(payload["step"]) >= stage_cfg.steps


def held_out_table(cfg: Config, device: torch.device) -> dict:
    """Mean face vs. coarse (the stage-1 checkpoint) vs. fine (the stage-2 one) on cfg.train.eval_size held-out
    SynthFaces val samples at 224 px, clean and occluded (scored against the clean image). Also writes the
    evaluation's metrics.json, report and grid under <log_dir>/heldout_<stage>/."""
    from experiments.evaluate import evaluate_pipeline, load_identity_nets, synthfaces_test_set, write_evaluation

    if cfg.data.dataset != "synthfaces":
        print("held-out table: SynthFaces only here; run `make eval-celeba` for CelebA's test split")
        return {}
    identity_nets, _ = load_identity_nets(cfg, device)
    identity_nets = {"dlib": identity_nets["dlib"]}
    table: dict = {}
    for stage, methods in (("coarse", ("mean_face", "coarse")), ("fine", ("fine",))):
        path = stage_checkpoint(cfg, stage)
        if not path.is_file():
            continue
        pipeline = FacePipeline.from_checkpoint(path, device)
        dataset = synthfaces_test_set(pipeline.model.to("cpu"), size=cfg.train.eval_size, seed=cfg.data.synth_seed,
                                      split="val")
        pipeline.model = pipeline.model.to(device)
        out_dir = Path(cfg.train.log_dir) / f"heldout_{stage}"
        result = evaluate_pipeline(pipeline, dataset, identity_nets=identity_nets, out_dir=out_dir)
        write_evaluation(dict(result), out_dir)
        for protocol, rows in result["protocols"].items():
            for method in methods:
                if method in rows:
                    table.setdefault(protocol, {})[method] = {
                        name: rows[method][key]["mean"] for name, key in SUMMARY_METRICS.items() if key in rows[method]}
    table["samples"] = cfg.train.eval_size
    print(f"held-out ({cfg.train.eval_size} SynthFaces val samples, 224 px; occluded inputs scored against the clean image)")
    for protocol in ("clean", "occluded"):
        for method, values in table.get(protocol, {}).items():
            print(f"  {protocol:<9}{method:<10}" + "  ".join(
                f"{k}={v:.3f}" for k, v in values.items() if v is not None))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/configs/default.yaml")
    parser.add_argument("--fresh", action="store_true", help="delete this run's checkpoints and start over")
    parser.add_argument("--only", choices=("warm_start", "coarse", "fine"), help="run just this stage")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set coarse.steps=200 (YAML value syntax)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, overrides_from(args.set))
        train(cfg, fresh=args.fresh, only=args.only)
    except (ConfigError, BFMFormatError, CheckpointError, RegressorCheckpointError, MissingWeightsError,
            NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, NonFiniteLossError) else 2
    return 0


def overrides_from(pairs: list[str]) -> dict:
    """["coarse.steps=200", "fine.enabled=false"] -> nested dict (values parsed as YAML scalars)."""
    import yaml

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. coarse.steps=200")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
