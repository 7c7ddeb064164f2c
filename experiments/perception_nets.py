"""Train the project's own perception networks: the attribute net (FA features) and the parsing net (mask M).

    python -m experiments.perception_nets attributes [--config YAML]   # make attr-net
    python -m experiments.perception_nets parsing [--config YAML]      # make parsing-net

Data come from the config: SynthFaces by default (attribute labels and skin/occluder masks are ground
truth), CelebA's 40 attributes with `data.dataset: celeba`, CelebAMask-HQ's masks with
`data.dataset: celebamask_hq` (and `data.root`). SynthFaces samples are
rendered once, at the training size, and kept in memory as uint8.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments.config import Config, ConfigError, PerceptionTrainConfig, load_config
from perception.attributes import AttributeTrainConfig, train_attribute_net
from perception.parsing import ParsingTrainConfig, parsing_labels_from_masks, train_parsing_net
from perception.training import NetTrainConfig

NetConfigT = TypeVar("NetConfigT", bound=NetTrainConfig)


class RenderedOnce(Dataset):
    """Materialise chosen keys of a data set once (images as uint8) so every epoch reuses them."""

    def __init__(self, source: Dataset, keys: tuple[str, ...], description: str, num_workers: int = 2):
        self.keys = keys
        # Worker processes render in parallel, one torch thread each (many small ops thrash when threads
        # outnumber cores).
        loader = DataLoader(source, batch_size=None, num_workers=num_workers,
                            collate_fn=lambda sample: {k: self._pack(sample[k]) for k in keys if k in sample})
        # Clone out of the workers' shared memory: kept as they arrive, every tensor would hold a file
        # descriptor open and thousands of samples exceed the process's limit.
        self.items = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}
                      for item in tqdm(loader, total=len(source), desc=description, unit="img", leave=False)]
        self.attribute_names = getattr(source, "attribute_names", None)

    @classmethod
    def from_items(cls, items: list[dict]) -> "RenderedOnce":
        """Samples rendered earlier (e.g. loaded from a cache file), in the packed form `items` holds."""
        dataset = cls.__new__(cls)
        dataset.keys, dataset.items, dataset.attribute_names = None, items, None
        return dataset

    @staticmethod
    def _pack(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 3:
            return (value.clamp(0, 1) * 255).round().to(torch.uint8)
        return value

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {k: v.float() / 255 if isinstance(v, torch.Tensor) and v.dtype == torch.uint8 else v for k, v in item.items()}


class WithParsingLabels(Dataset):
    """Adds "parsing" (H, W) class ids from SynthFaces' face and occluder masks."""

    def __init__(self, source: Dataset):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        s = self.source[index]
        return {"image": s["image"], "parsing": parsing_labels_from_masks(s["face_mask"][0], s["occluder_mask"][0])}


def _synthfaces(cfg: Config, train: PerceptionTrainConfig, split: str, size: int) -> SynthFaces:
    config = SynthFacesConfig(image_size=train.image_size, occlusion_prob=cfg.data.occlusion_prob)
    return SynthFaces(split, size=size, seed=cfg.data.synth_seed, config=config)


def attribute_datasets(cfg: Config) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    train = cfg.perception.attributes_train
    if cfg.data.dataset == "synthfaces":
        sets = [RenderedOnce(_synthfaces(cfg, train, split, n), ("image", "attributes"), f"render {split}",
                             cfg.data.num_workers)
                for split, n in (("train", train.train_size), ("val", train.val_size))]
        return sets[0], sets[1], SYNTHFACES_ATTRIBUTES
    if cfg.data.dataset == "celeba":
        from data.celeba import CELEBA_ATTRIBUTES, CelebAFaces

        if not cfg.data.root:
            raise ConfigError("data.root: set it to the CelebA folder to train attributes on CelebA")
        return CelebAFaces(cfg.data.root, "train"), CelebAFaces(cfg.data.root, "val"), CELEBA_ATTRIBUTES
    raise ConfigError(f"data.dataset: the attribute net trains on synthfaces or celeba, not '{cfg.data.dataset}'")


def parsing_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    train = cfg.perception.parsing_train
    if cfg.data.dataset == "celebamask_hq":
        from data.celebamask_hq import CelebAMaskHQFaces

        if not cfg.data.root:
            raise ConfigError("data.root: set it to the CelebAMask-HQ folder to train the parsing net on it")
        return CelebAMaskHQFaces(cfg.data.root, "train"), CelebAMaskHQFaces(cfg.data.root, "val")
    if cfg.data.dataset != "synthfaces":
        raise ConfigError(f"data.dataset: the parsing net trains on synthfaces or celebamask_hq; "
                          f"'{cfg.data.dataset}' has no masks")
    return tuple(
        RenderedOnce(WithParsingLabels(_synthfaces(cfg, train, split, n)), ("image", "parsing"), f"render {split}",
                     cfg.data.num_workers)
        for split, n in (("train", train.train_size), ("val", train.val_size))
    )


def _net_config(kind: type[NetConfigT], settings: PerceptionTrainConfig) -> NetConfigT:
    """`kind` (AttributeTrainConfig, ParsingTrainConfig) with the fields a config's perception.*_train sets."""
    return kind(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                image_size=settings.image_size, device=settings.device)


def train_attributes(cfg: Config) -> dict:
    train_set, val_set, names = attribute_datasets(cfg)
    metrics = train_attribute_net(
        train_set, val_set,
        _net_config(AttributeTrainConfig, cfg.perception.attributes_train),
        log_dir=Path("runs") / cfg.name / "attributes", checkpoint_path=cfg.perception.attributes_checkpoint,
        attribute_names=names,
    )
    print(f"attribute net: held-out mean accuracy {metrics.mean_accuracy:.3f} "
          f"(majority baseline {metrics.mean_majority_accuracy:.3f}) -> {cfg.perception.attributes_checkpoint}")
    for name, acc, base in zip(metrics.attribute_names, metrics.accuracy, metrics.majority_accuracy):
        print(f"  {name:<12} {acc:.3f}  (baseline {base:.3f})")
    return metrics.to_dict()


def train_parsing(cfg: Config) -> dict:
    train_set, val_set = parsing_datasets(cfg)
    metrics = train_parsing_net(
        train_set, val_set,
        _net_config(ParsingTrainConfig, cfg.perception.parsing_train),
        log_dir=Path("runs") / cfg.name / "parsing", checkpoint_path=cfg.perception.parsing_checkpoint,
    )
    print(f"parsing net: held-out mean IoU {metrics.mean_iou:.3f} (majority baseline {metrics.majority_mean_iou:.3f}), "
          f"pixel accuracy {metrics.pixel_accuracy:.3f} (baseline {metrics.majority_pixel_accuracy:.3f}) "
          f"-> {cfg.perception.parsing_checkpoint}")
    return metrics.to_dict()


def checkpoint_state(path: str | Path) -> tuple[int, int | None]:
    """(epochs recorded, input size in pixels) of a perception-net checkpoint; (0, None) when it is missing or
    unreadable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return int(payload.get("metrics", {}).get("epochs", 0)), payload.get("image_size")
    except Exception:  # missing, truncated or foreign: train it again
        return 0, None


def ensure_perception_nets(cfg: Config) -> None:
    """Train whichever net has no finished checkpoint at the configured input size (called by `make train`).

    Checkpoints are written after every epoch, so a run killed part-way leaves one with fewer epochs than
    configured; that net is trained again from the start rather than used half-trained. A net trained at
    another input size than the config's (`perception.*_train.image_size`) is trained again too.
    """
    for name, path, train_cfg, run in (
        ("attribute", cfg.perception.attributes_checkpoint, cfg.perception.attributes_train, train_attributes),
        ("parsing", cfg.perception.parsing_checkpoint, cfg.perception.parsing_train, train_parsing),
    ):
        done, size = checkpoint_state(path)
        if done < train_cfg.epochs or size != train_cfg.image_size:
            state = ("no checkpoint" if done == 0 else f"only {done} of {train_cfg.epochs} epochs"
                     if done < train_cfg.epochs else f"trained at {size} px, the config asks for {train_cfg.image_size}")
            print(f"{name} net at {path}: {state}; training it first")
            run(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("net", choices=("attributes", "parsing"))
    parser.add_argument("--config", default="experiments/configs/default.yaml")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        (train_attributes if args.net == "attributes" else train_parsing)(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
