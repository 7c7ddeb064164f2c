"""Face-parsing network: a U-Net that labels each pixel background, face skin or occluder.

Its skin probability is the photometric loss mask M: the loss compares input and render only
where the input shows skin, not hair, glasses, hands or background. The U-Net comes from
segmentation-models-pytorch with a ResNet-18/34 encoder and no pretrained weights (nothing is
downloaded); the project trains it on SynthFaces masks, or the user on CelebAMask-HQ.

Class ids live in `perception.parsing_classes` (BACKGROUND = 0, SKIN = 1, OCCLUDER = 2; IGNORE_INDEX = -1
marks unlabelled pixels); SynthFaces labels come from `parsing_labels_from_masks`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from perception.training import (
    CheckpointError,
    EpochMetrics,
    NetTrainConfig,
    check_epochs,
    fit,
    make_loader,
    network_checkpoint,
    normalize_imagenet,
    read_checkpoint,
    resize_images,
    restore_weights,
    save_checkpoint_atomic,
)
from perception.parsing_classes import BACKGROUND, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, OCCLUDER, SKIN  # noqa: F401

ENCODERS: tuple[str, ...] = ("resnet18", "resnet34")
ENCODER_STRIDE = 32  # the U-Net needs sides divisible by this; forward pads to it
CHECKPOINT_FORMAT = "faid-parsing-net"
CHECKPOINT_VERSION = 1


def parsing_labels_from_masks(face_mask: torch.Tensor, occluder_mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-pixel class ids from soft masks.

    face_mask: (..., H, W) face-skin coverage in [0, 1] (the rendered face region);
    occluder_mask: (..., H, W) occluder alpha in [0, 1] (anything in front, on or off the face).
    Returns (..., H, W) int64: OCCLUDER where occluder_mask >= threshold, else SKIN where
    face_mask >= threshold, else BACKGROUND.
    """
    labels = torch.full(face_mask.shape, BACKGROUND, dtype=torch.long, device=face_mask.device)
    labels[face_mask >= threshold] = SKIN
    labels[occluder_mask >= threshold] = OCCLUDER
    return labels


class ParsingNet(nn.Module):
    """smp U-Net over ImageNet-standardised input, NUM_CLASSES output channels.

    Args:
        encoder: one of ENCODERS.
        image_size: the input size the network is trained at (pixels, square), kept in
            checkpoints; any size works (inputs are padded to a multiple of 32 and cropped back).
    """

    def __init__(self, encoder: str = "resnet18", image_size: int = 224):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown parsing encoder '{encoder}'; use one of {', '.join(ENCODERS)}")
        self.encoder_name = encoder
        self.image_size = int(image_size)
        self.unet = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=NUM_CLASSES)
        # NHWC convolutions: 1.3-1.5x faster forward and 1.2-1.45x faster training steps than NCHW on a 2-core CPU
        # (112 px, batch 24 / 32), the same outputs to 1e-5. Loading weights or .to(device) keeps the layout.
        self.unet.to(memory_format=torch.channels_last)
        self.precision = "fp32"  # "bf16": predict_mask runs the U-Net in bfloat16 (a training-time speed-up)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> (B, NUM_CLASSES, H, W) logits."""
        height, width = images.shape[-2:]
        pad_bottom = (-height) % ENCODER_STRIDE
        pad_right = (-width) % ENCODER_STRIDE
        x = normalize_imagenet(images)
        if pad_bottom or pad_right:
            x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
        return self.unet(x)[..., :height, :width]

    @torch.no_grad()
    def predict_mask(self, images: torch.Tensor, hard: bool = False) -> torch.Tensor:
        """The photometric loss mask M: (B, 3, H, W) in [0, 1] -> (B, 1, H, W).

        Soft: the probability of SKIN. Hard: 1 where SKIN is the most likely class, else 0.
        No gradients flow (M is a constant weight in the loss). Call .eval() first so batch norm
        uses its running statistics.
        """
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self(images).float()
        if hard:
            return (logits.argmax(dim=1, keepdim=True) == SKIN).to(images.dtype)
        return torch.softmax(logits, dim=1)[:, SKIN:SKIN + 1]

    @torch.no_grad()
    def predict_labels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) int64 class ids."""
        return self(images).argmax(dim=1)


def save_parsing_net(model: ParsingNet, path: str | os.PathLike, metrics: dict | None = None) -> Path:
    """Write the weights, encoder, class names, input size and optional metrics atomically."""
    description = {"encoder": model.encoder_name, "class_names": list(CLASS_NAMES), "image_size": model.image_size}
    return save_checkpoint_atomic(network_checkpoint(model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, description, metrics), path)


def load_parsing_net(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ParsingNet:
    """Rebuild a ParsingNet from a checkpoint written by save_parsing_net (in eval mode)."""
    payload = read_checkpoint(path, CHECKPOINT_FORMAT, map_location)
    if tuple(payload.get("class_names", ())) != CLASS_NAMES:
        raise CheckpointError(f"{path}: classes {payload.get('class_names')} differ from {list(CLASS_NAMES)}; re-train it")
    return restore_weights(ParsingNet(payload["encoder"], image_size=payload["image_size"]), payload, path, map_location)


# --------------------------------------------------------------------------------------------
# Training and evaluation


@dataclass
class ParsingTrainConfig(NetTrainConfig):
    """Training settings (NetTrainConfig's) and the U-Net's encoder."""

    epochs: int = 20
    encoder: str = "resnet18"


@dataclass
class ParsingMetrics(EpochMetrics):
    """Held-out results over all labelled pixels. IoU per class (indexed by class id; NaN for a
    class absent from both prediction and labels), mean IoU over classes present. Baselines:
    predicting the training set's most frequent class everywhere, and all-background."""

    class_names: list[str]
    iou: list[float]
    mean_iou: float
    pixel_accuracy: float
    majority_class: int
    majority_mean_iou: float
    majority_pixel_accuracy: float
    background_mean_iou: float


def _batch_parsing(batch: dict, image_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = resize_images(batch["image"].to(device, torch.float32), image_size)
    labels = batch["parsing"].to(device, torch.long)
    if labels.shape[-2:] != (image_size, image_size):
        labels = F.interpolate(labels[:, None].float(), size=(image_size, image_size), mode="nearest")[:, 0].long()
    return images, labels


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(NUM_CLASSES, NUM_CLASSES) int64 counts [true class, predicted class] over labelled pixels."""
    labelled = labels != IGNORE_INDEX
    index = labels[labelled] * NUM_CLASSES + predicted[labelled]
    return torch.bincount(index, minlength=NUM_CLASSES * NUM_CLASSES).view(NUM_CLASSES, NUM_CLASSES).cpu()


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """(C, C) counts -> (C,) float64 IoU; NaN for a class in neither prediction nor labels."""
    confusion = confusion.double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, float("nan")))


def _constant_prediction_scores(confusion: torch.Tensor, predicted_class: int) -> tuple[float, float]:
    """(mean IoU, pixel accuracy) of predicting one class everywhere, from the true-class counts."""
    class_counts = confusion.sum(1).double()
    constant = torch.zeros_like(confusion)
    constant[:, predicted_class] = class_counts.long()
    iou = iou_from_confusion(constant)
    return float(iou.nanmean()), float(class_counts[predicted_class] / class_counts.sum().clamp_min(1))


@torch.no_grad()
def evaluate_parsing_net(
    model: ParsingNet,
    dataset: Dataset,
    majority_class: int | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> ParsingMetrics:
    """Mean IoU and pixel accuracy on a dataset of {"image", "parsing"} samples.

    majority_class: the training set's most frequent class for the baseline; None uses the
        evaluated set's own (an optimistic baseline).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    loss_sum, loss_batches = 0.0, 0
    for batch in make_loader(dataset, ("image", "parsing"), batch_size, shuffle=False, num_workers=num_workers):
        images, labels = _batch_parsing(batch, model.image_size, device)
        logits = model(images)
        if (labels != IGNORE_INDEX).any():
            loss_sum += float(F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX))
            loss_batches += 1
        confusion += confusion_matrix(logits.argmax(dim=1), labels)
    model.train(was_training)

    iou = iou_from_confusion(confusion)
    if majority_class is None:
        majority_class = int(confusion.sum(1).argmax())
    majority_mean_iou, majority_accuracy = _constant_prediction_scores(confusion, majority_class)
    background_mean_iou, _ = _constant_prediction_scores(confusion, BACKGROUND)
    return ParsingMetrics(
        class_names=list(CLASS_NAMES),
        iou=iou.tolist(),
        mean_iou=float(iou.nanmean()),
        pixel_accuracy=float(confusion.diag().sum() / confusion.sum().clamp_min(1)),
        majority_class=majority_class,
        majority_mean_iou=majority_mean_iou,
        majority_pixel_accuracy=majority_accuracy,
        background_mean_iou=background_mean_iou,
        val_loss=loss_sum / max(loss_batches, 1),
    )


def train_parsing_net(
    train_dataset: Dataset,
    val_dataset: Dataset,
    config: ParsingTrainConfig | None = None,
    log_dir: str | os.PathLike | None = None,
    checkpoint_path: str | os.PathLike | None = None,
) -> ParsingMetrics:
    """Train a ParsingNet with per-pixel cross-entropy and report held-out mean IoU.

    Datasets yield dicts with "image": (3, H, W) in [0, 1] and "parsing": (H, W) int64 class ids
    (IGNORE_INDEX where unknown). Logs to TensorBoard under log_dir and writes the checkpoint
    after every epoch when the paths are given. Returns the last epoch's held-out metrics, with
    the majority-class baseline taken from the training labels.
    """
    config = config if config is not None else ParsingTrainConfig()
    check_epochs(config)
    class_counts = torch.zeros(NUM_CLASSES, dtype=torch.long)  # training labels, behind the majority baseline

    def prepare_batch(batch: dict, device: torch.device, epoch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        images, labels = _batch_parsing(batch, config.image_size, device)
        if epoch == 0:
            class_counts.add_(torch.bincount(labels[labels != IGNORE_INDEX], minlength=NUM_CLASSES).cpu())
        if not (labels != IGNORE_INDEX).any():
            return None
        return images, labels

    def evaluate(model: ParsingNet) -> ParsingMetrics:
        return evaluate_parsing_net(model, val_dataset, int(class_counts.argmax()), config.batch_size, config.num_workers)

    def validation_scalars(metrics: ParsingMetrics) -> dict[str, float]:
        return {"mean_iou": metrics.mean_iou, "majority_mean_iou": metrics.majority_mean_iou,
                "pixel_accuracy": metrics.pixel_accuracy,
                **{f"iou/{name}": value for name, value in zip(metrics.class_names, metrics.iou)}}

    def save_checkpoint(model: ParsingNet, metrics: ParsingMetrics) -> None:
        save_parsing_net(model, checkpoint_path, metrics.to_dict())

    return fit(
        config, lambda: ParsingNet(config.encoder, config.image_size),
        train_dataset, ("image", "parsing"), prepare_batch, partial(F.cross_entropy, ignore_index=IGNORE_INDEX), evaluate,
        description="parsing", headline="mean_iou", validation_scalars=validation_scalars,
        log_dir=log_dir, save_checkpoint=save_checkpoint if checkpoint_path is not None else None,
    )
