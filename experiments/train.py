"""The main training job: the coarse regressor trained with the paper's losses on the configured data.

    python -m experiments.train [--config experiments/configs/default.yaml] [--steps N] [--fresh]

Steps: (1) train the attribute and parsing nets if their checkpoints are missing; (2) train the
ResNet-50 regressor with L = photo + 0.2 id + 0.005 att (+ landmark and regularisers), self-supervised
(no 3D labels: only the images and their 5 detected/projected landmarks). Checkpoints are written
atomically every `train.checkpoint_every` steps and on Ctrl-C / SIGTERM; a rerun resumes from the last
one (`--fresh` starts over). TensorBoard logs go to `train.log_dir`.

The fine stage (GCN refiners) and the self-augmentation loop (L_rob) are not built yet; their loss
terms are left out and the run says so.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from coarse.bfm import BFMFormatError
from coarse.face_model import assemble_face
from coarse.load_model import load_morphable_model
from coarse.regressor import CoarseRegressor
from data.align import write_json_atomically
from data.samples import collate_face_samples
from data.synthfaces import SynthFaces, SynthFacesConfig
from experiments.config import Config, ConfigError, load_config
from experiments.perception_nets import ensure_perception_nets
from losses import (
    albedo_flatness, attribute_loss, coefficient_regulariser, identity_loss, landmark_loss, photometric_loss, skin_mask,
)
from perception.attributes import load_attribute_net
from perception.facenet import MissingWeightsError
from perception.identity import build_identity_net
from perception.parsing import load_parsing_net
from perception.training import CheckpointError, open_summary_writer, read_checkpoint, resolve_device, save_checkpoint_atomic
from render.image_io import contact_sheet, save_png
from render.rasterizer import render_mesh

CHECKPOINT_FORMAT = "faid-coarse-train"


class StepSampler(Sampler[int]):
    """Indices for steps [start, total): step k draws `batch` indices from a generator seeded by (seed, k),
    so a resumed run sees exactly the batches an uninterrupted one would have."""

    def __init__(self, length: int, batch: int, seed: int, start: int, total: int):
        self.length, self.batch, self.seed, self.start, self.total = length, batch, seed, start, total

    def __iter__(self):
        for step in range(self.start, self.total):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            yield from torch.randint(self.length, (self.batch,), generator=g).tolist()

    def __len__(self) -> int:
        return max(self.total - self.start, 0) * self.batch


def build_dataset(cfg: Config, split: str, size: int, model) -> Dataset:
    if cfg.data.dataset == "synthfaces":
        config = SynthFacesConfig(image_size=cfg.data.image_size, occlusion_prob=cfg.data.occlusion_prob)
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


class CoarseObjective:
    """Renders predicted coefficients and computes the weighted losses. Holds the frozen perception nets."""

    def __init__(self, cfg: Config, model, identity_net, attribute_net, parsing_net):
        self.cfg, self.model = cfg, model
        self.identity_net, self.attribute_net, self.parsing_net = identity_net, attribute_net, parsing_net

    def __call__(self, coeffs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict, dict]:
        w, image = self.cfg.losses, batch["image"]
        size = image.shape[-1]
        face = assemble_face(self.model, coeffs, size)
        out = render_mesh(face.screen, self.model.triangles, face.colors, size)
        rendered = out.image.clamp(0, 1)
        composite = rendered * out.mask + image * (1 - out.mask)
        with torch.no_grad():
            m = skin_mask(self.parsing_net, image)
        terms = {
            "photo": photometric_loss(image, rendered, out.mask * m),
            "id": identity_loss(self.identity_net, image, composite),
            "att": attribute_loss(self.attribute_net, image, composite),
            "reg": coefficient_regulariser(coeffs),
            "reflectance": albedo_flatness(face.albedo, self.model.skin_mask),
        }
        predicted = self.model.landmarks5_from_68(face.landmarks) - 0.5  # to data's pixel-index units
        if "landmarks5" in batch and isinstance(batch["landmarks5"], torch.Tensor):
            terms["landmark"] = landmark_loss(predicted, batch["landmarks5"], size)
        weights = {"photo": w.photo, "id": w.id, "att": w.att, "reg": w.reg, "reflectance": w.reflectance,
                   "landmark": w.landmark}
        total = sum(weights[k] * v for k, v in terms.items())
        visuals = {"rendered": rendered, "composite": composite, "mask": m, "render_mask": out.mask,
                   "landmarks5": predicted}
        return total, {k: float(v.detach()) for k, v in terms.items()}, visuals


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _preview(batch: dict, visuals: dict, count: int = 4) -> list[torch.Tensor]:
    n = min(count, batch["image"].shape[0])
    rows = [batch["image"][:n], visuals["composite"][:n], visuals["mask"][:n].expand(-1, 3, -1, -1)]
    return [im.detach().cpu() for row in rows for im in row]


class Stop:
    """Set by SIGINT/SIGTERM so the loop can checkpoint and leave cleanly."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.requested = True


@torch.no_grad()
def evaluate(objective: CoarseObjective, predict, dataset: Dataset, count: int, batch_size: int,
             device: torch.device) -> dict:
    """Mean loss terms plus PSNR (dB, over rendered pixels the parsing mask calls skin), 5-point landmark
    error (pixels) and identity cosine, over the first `count` samples. predict: images -> (B, 257)."""
    sums: dict[str, float] = {}
    seen = 0
    for start in range(0, min(count, len(dataset)), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, count, len(dataset)))]
        batch = _to(collate_face_samples(items), device)
        coeffs = predict(batch["image"])
        _, terms, visuals = objective(coeffs, batch)
        weight = visuals["mask"] * visuals["render_mask"]
        mse = ((visuals["composite"] - batch["image"]) ** 2 * weight).flatten(1).sum(1) / (3 * weight.flatten(1).sum(1)).clamp(min=1)
        n = len(items)
        values = dict(terms, psnr_db=float((10 * torch.log10(1 / mse.clamp(min=1e-10))).mean()),
                      id_cosine=1 - terms["id"])
        if "landmark" in terms:
            values["landmark_px"] = float((visuals["landmarks5"] - batch["landmarks5"]).norm(dim=-1).mean())
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * n
        seen += n
    return {k: v / max(seen, 1) for k, v in sums.items()}


def train(cfg: Config, fresh: bool = False) -> dict:
    t = cfg.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    ensure_perception_nets(cfg)
    model = load_morphable_model(cfg.model.bfm, cfg.model.synthface_seed)
    train_set = build_dataset(cfg, "train", cfg.data.train_size, model)
    model = model.to(device)
    regressor = CoarseRegressor().to(device)
    optimiser = torch.optim.Adam(regressor.parameters(), lr=t.lr)
    identity_net = build_identity_net(cfg.perception.identity_net, cfg.perception.facenet_weights, device=device).eval()
    attribute_net = load_attribute_net(cfg.perception.attributes_checkpoint, device).eval()
    parsing_net = load_parsing_net(cfg.perception.parsing_checkpoint, device).eval()
    for net in (attribute_net, parsing_net):
        net.requires_grad_(False)
    objective = CoarseObjective(cfg, model, identity_net, attribute_net, parsing_net)

    checkpoint = Path(t.checkpoint_dir) / "last.pt"
    start = 0
    if checkpoint.is_file() and not fresh:
        state = read_checkpoint(checkpoint, CHECKPOINT_FORMAT, device)
        regressor.load_state_dict(state["regressor"])
        optimiser.load_state_dict(state["optimiser"])
        start = int(state["step"])
        print(f"resuming from {checkpoint} at step {start}")
    if start >= t.steps:
        print(f"{checkpoint} already reached {start} >= {t.steps} steps; pass --steps to train longer or --fresh")
        return {"step": start}

    def save(step: int) -> None:
        save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "regressor": regressor.state_dict(),
                                "optimiser": optimiser.state_dict(), "step": step, "config": asdict(cfg)}, checkpoint)

    loader = DataLoader(train_set, batch_size=t.batch_size, collate_fn=collate_face_samples,
                        sampler=StepSampler(len(train_set), t.batch_size, t.seed, start, t.steps),
                        num_workers=cfg.data.num_workers, persistent_workers=False)
    writer = open_summary_writer(t.log_dir)
    print(f"training the coarse regressor on {cfg.data.dataset} ({len(train_set)} samples) on {device} for "
          f"steps {start}..{t.steps}; fine stage and self-augmentation (L_rob) are not built yet, so "
          "their terms are left out")
    stop, bad, step, last_terms = Stop(), 0, start, {}
    regressor.train()
    progress = tqdm(loader, total=t.steps - start, initial=0, desc="train", unit="step", dynamic_ncols=True)
    started = time.time()
    for batch in progress:
        batch = _to(batch, device)
        coeffs = regressor(batch["image"])
        loss, terms, visuals = objective(coeffs, batch)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            bad += 1
            optimiser.zero_grad(set_to_none=True)
            print(f"step {step}: non-finite loss ({terms}); skipped ({bad}/{t.max_bad_steps} in a row)", file=sys.stderr)
            if bad >= t.max_bad_steps:
                save(step)
                raise RuntimeError(f"{t.max_bad_steps} non-finite losses in a row at step {step}; last good weights "
                                   f"are in {checkpoint}; lower train.lr and rerun to resume")
            step += 1
            continue
        bad = 0
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(regressor.parameters(), 10.0)
        optimiser.step()
        step += 1
        last_terms = terms
        progress.set_postfix(loss=f"{loss_value:.4f}", photo=f"{terms['photo']:.3f}")
        if writer is not None and step % t.log_every == 0:
            writer.add_scalar("loss/total", loss_value, step)
            for k, v in terms.items():
                writer.add_scalar(f"loss/{k}", v, step)
        if step % t.image_every == 0 or step == t.steps:
            sheet = contact_sheet(_preview(batch, visuals), columns=min(4, batch["image"].shape[0]))
            save_png(sheet, Path(t.log_dir) / "previews" / f"step_{step:06d}.png")
            if writer is not None:
                import numpy as np

                writer.add_image("input|render|mask", np.asarray(sheet), step, dataformats="HWC")
        if step % t.checkpoint_every == 0 or step == t.steps:
            save(step)
        if stop.requested:
            save(step)
            print(f"\nstopped at step {step}; checkpoint in {checkpoint}; rerun the same command to resume")
            break
    progress.close()
    if writer is not None:
        writer.close()
    summary = {"step": step, "seconds": round(time.time() - started, 1), "last_losses": last_terms,
               "checkpoint": str(checkpoint)}
    if cfg.data.val_size and not stop.requested:
        val_set = build_dataset(cfg, "val", cfg.data.val_size, model.to("cpu"))
        count = min(cfg.data.val_size, 64)
        regressor.eval()
        trained = evaluate(objective, regressor, val_set, count, t.batch_size, device)
        untrained = CoarseRegressor(imagenet_weights=False).to(device).eval()
        baseline = evaluate(objective, untrained, val_set, count, t.batch_size, device)
        summary["val"] = {"trained": trained, "mean_face_baseline": baseline, "samples": count}
        print(f"held-out ({count} {cfg.data.dataset} val samples): metric, trained vs. untrained (mean face)")
        for key in ("psnr_db", "landmark_px", "id_cosine", "photo"):
            if key in trained:
                print(f"  {key:<12} {trained[key]:8.4f}  vs. {baseline[key]:8.4f}")
        write_json_atomically(Path(t.log_dir) / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "val"}))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/configs/default.yaml")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, {"train": {"steps": args.steps}} if args.steps else None)
        train(cfg, fresh=args.fresh)
    except (ConfigError, BFMFormatError, CheckpointError, MissingWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "non-finite" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
