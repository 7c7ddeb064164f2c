"""Face-attribute classifier: a ResNet-18 with a multi-label head (the paper's "FA" network).

The network maps an image in [0, 1] to one logit per binary attribute (SynthFaces attributes or
CelebA's 40). Its 512-d penultimate features are the attribute half of the FAID vector. Nothing is
downloaded: the backbone starts from random weights, or from torchvision's ImageNet ResNet-18
file when it already sits in the local torch hub cache.

The training pieces it shares with the parsing network live in `perception.training`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import Dataset

from perception.training import (  # noqa: F401  (CheckpointError and save_checkpoint_atomic are re-exported for callers)
    CheckpointError, EpochMetrics, NetTrainConfig, check_epochs, fit, make_loader, network_checkpoint,
    normalize_imagenet, read_checkpoint, resize_images, restore_weights, save_checkpoint_atomic,
)

FEATURE_DIM = 512
CHECKPOINT_FORMAT = "faid-attribute-net"
CHECKPOINT_VERSION = 1


def local_imagenet_resnet18() -> Path | None:
    """torchvision's ImageNet ResNet-18 file in the local torch hub cache, if present (never downloads)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    matches = sorted(folder.glob("resnet18-*.pth")) if folder.is_dir() else []
    return matches[0] if matches else None


# --------------------------------------------------------------------------------------------
# The network


class AttributeNet(nn.Module):
    """ResNet-18 backbone + linear multi-label head.

    Args:
        attribute_names: the A attribute names, in logit order.
        image_size: the input size the network is trained at (pixels, square); stored in
            checkpoints. The network itself accepts any size.
        imagenet_init: start the backbone from the local ImageNet ResNet-18 file when one is in
            the torch hub cache (random init otherwise).
    """

    def __init__(self, attribute_names: Sequence[str], image_size: int = 224, imagenet_init: bool = False):
        super().__init__()
        if len(attribute_names) == 0:
            raise ValueError("AttributeNet needs at least one attribute name")
        self.attribute_names = tuple(attribute_names)
        self.image_size = int(image_size)
        self.backbone = torchvision.models.resnet18(weights=None)
        self.imagenet_initialised = False
        if imagenet_init and (weights_file := local_imagenet_resnet18()) is not None:
            self.backbone.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
            self.imagenet_initialised = True
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(FEATURE_DIM, len(self.attribute_names))
        # NHWC convolutions: as a frozen loss net (forward + input gradient, 112 px, batch 32) 1.3x faster than NCHW
        # on a 2-core CPU; its training steps take the same time either way.
        self.backbone.to(memory_format=torch.channels_last)
        self.precision = "fp32"  # "bf16": features() under bfloat16 autocast, as IdentityNet.precision

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> (B, 512) pooled penultimate features."""
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            features = self.backbone(normalize_imagenet(images))
        return features.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> (B, A) logits."""
        return self.head(self.features(images))

    def predict_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> (B, A) probabilities in [0, 1]."""
        return torch.sigmoid(self(images))


def save_attribute_net(model: AttributeNet, path: str | os.PathLike, metrics: dict | None = None) -> Path:
    """Write the weights, attribute names, input size and optional metrics atomically."""
    description = {"attribute_names": list(model.attribute_names), "image_size": model.image_size}
    return save_checkpoint_atomic(network_checkpoint(model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, description, metrics), path)


def load_attribute_net(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AttributeNet:
    """Rebuild an AttributeNet from a checkpoint written by save_attribute_net (in eval mode)."""
    payload = read_checkpoint(path, CHECKPOINT_FORMAT, map_location)
    return restore_weights(AttributeNet(payload["attribute_names"], image_size=payload["image_size"]), payload, path, map_location)


# --------------------------------------------------------------------------------------------
# Training and evaluation


@dataclass
class AttributeTrainConfig(NetTrainConfig):
    """Training settings (NetTrainConfig's); imagenet_init starts from torchvision's ResNet-18 when its file is
    in the local torch hub cache."""

    batch_size: int = 64
    imagenet_init: bool = True


@dataclass
class AttributeMetrics(EpochMetrics):
    """Held-out results. Accuracies are fractions in [0, 1] over the labelled (non-NaN) entries;
    the majority baseline predicts, per attribute, the training set's more frequent value."""

    attribute_names: list[str]
    accuracy: list[float]
    majority_accuracy: list[float]
    mean_accuracy: float
    mean_majority_accuracy: float


def masked_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over labelled entries; NaN targets are ignored.

    logits, targets: (B, A); targets in {0, 1} or NaN. Returns a scalar (0 if nothing is labelled).
    """
    labelled = ~torch.isnan(targets)
    losses = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
    return (losses * labelled).sum() / labelled.sum().clamp_min(1)


def _batch_attributes(batch: dict, image_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = resize_images(batch["image"].to(device, torch.float32), image_size)
    targets = batch["attributes"].to(device, torch.float32)
    return images, targets


@torch.no_grad()
def evaluate_attribute_net(
    model: AttributeNet,
    dataset: Dataset,
    positive_rate: torch.Tensor | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
) -> AttributeMetrics:
    """Per-attribute accuracy (threshold 0.5) on a dataset of {"image", "attributes"} samples.

    positive_rate: (A,) fraction of positive training labels, defining the majority baseline;
        None uses the evaluated set's own majority (an optimistic baseline).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, ("image", "attributes"), batch_size, shuffle=False, num_workers=num_workers)
    correct = torch.zeros(model.num_attributes, dtype=torch.float64)
    positives = torch.zeros(model.num_attributes, dtype=torch.float64)
    labelled = torch.zeros(model.num_attributes, dtype=torch.float64)
    loss_sum, loss_batches = 0.0, 0
    for batch in loader:
        images, targets = _batch_attributes(batch, model.image_size, device)
        logits = model(images)
        loss_sum += float(masked_bce_loss(logits, targets))
        loss_batches += 1
        known = ~torch.isnan(targets)
        predicted = (logits > 0).float()
        correct += ((predicted == targets) & known).sum(0).double().cpu()
        positives += ((targets == 1) & known).sum(0).double().cpu()
        labelled += known.sum(0).double().cpu()
    model.train(was_training)

    count = labelled.clamp_min(1)
    accuracy = correct / count
    if positive_rate is None:
        positive_rate = positives / count
    majority_is_positive = positive_rate.double().cpu() >= 0.5
    majority_accuracy = torch.where(majority_is_positive, positives, labelled - positives) / count
    has_labels = labelled > 0
    return AttributeMetrics(
        attribute_names=list(model.attribute_names),
        accuracy=accuracy.tolist(),
        majority_accuracy=majority_accuracy.tolist(),
        mean_accuracy=float(accuracy[has_labels].mean()) if has_labels.any() else float("nan"),
        mean_majority_accuracy=float(majority_accuracy[has_labels].mean()) if has_labels.any() else float("nan"),
        val_loss=loss_sum / max(loss_batches, 1),
    )


def train_attribute_net(
    train_dataset: Dataset,
    val_dataset: Dataset,
    config: AttributeTrainConfig | None = None,
    log_dir: str | os.PathLike | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    attribute_names: Sequence[str] | None = None,
) -> AttributeMetrics:
    """Train an AttributeNet with masked binary cross-entropy and report held-out accuracy.

    Datasets yield dicts with "image": (3, H, W) in [0, 1] and "attributes": (A,) floats in
    {0, 1}, NaN where unknown. attribute_names defaults to `train_dataset.attribute_names` when
    present, else attr_0..attr_{A-1}. Logs to TensorBoard under log_dir and writes the checkpoint
    after every epoch when the paths are given. Returns the last epoch's held-out metrics, with
    the majority baseline taken from the training labels.
    """
    config = config if config is not None else AttributeTrainConfig()
    check_epochs(config)
    num_attributes = int(train_dataset[0]["attributes"].numel())
    if attribute_names is None:
        attribute_names = getattr(train_dataset, "attribute_names", None) or [f"attr_{i}" for i in range(num_attributes)]
    if len(attribute_names) != num_attributes:
        raise ValueError(f"{len(attribute_names)} attribute names for {num_attributes} labels per sample")

    # Training-label statistics behind the majority baseline, gathered during the first epoch.
    positives = torch.zeros(num_attributes, dtype=torch.float64)
    labelled = torch.zeros(num_attributes, dtype=torch.float64)

    def prepare_batch(batch: dict, device: torch.device, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = _batch_attributes(batch, config.image_size, device)
        if epoch == 0:
            known = ~torch.isnan(targets)
            positives.add_(((targets == 1) & known).sum(0).double().cpu())
            labelled.add_(known.sum(0).double().cpu())
        return images, targets

    def evaluate(model: AttributeNet) -> AttributeMetrics:
        return evaluate_attribute_net(model, val_dataset, positives / labelled.clamp_min(1), config.batch_size, config.num_workers)

    def validation_scalars(metrics: AttributeMetrics) -> dict[str, float]:
        return {"mean_accuracy": metrics.mean_accuracy, "mean_majority_accuracy": metrics.mean_majority_accuracy,
                **{f"accuracy/{name}": value for name, value in zip(metrics.attribute_names, metrics.accuracy)}}

    def save_checkpoint(model: AttributeNet, metrics: AttributeMetrics) -> None:
        save_attribute_net(model, checkpoint_path, metrics.to_dict())

    return fit(
        config,
        lambda: AttributeNet(attribute_names, config.image_size, imagenet_init=config.imagenet_init),
        train_dataset, ("image", "attributes"), prepare_batch, masked_bce_loss, evaluate,
        description="attributes", headline="mean_accuracy", validation_scalars=validation_scalars,
        log_dir=log_dir, save_checkpoint=save_checkpoint if checkpoint_path is not None else None,
    )
