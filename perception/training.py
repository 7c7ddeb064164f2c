"""Pieces the attribute and parsing networks' training share: checkpoint I/O, devices, loaders,
schedules, and the training loop itself (`fit`)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fileio import torch_save_atomically

# ImageNet statistics, applied inside the networks so callers always pass images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or of the wrong kind (message: one line)."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_checkpoint_atomic(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save to `path` through a temporary file and os.replace, so a crash never leaves a
    half-written checkpoint. Creates the parent folder. Returns the path."""
    return torch_save_atomically(payload, path)


def read_checkpoint(path: str | os.PathLike, expected_format: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by save_checkpoint_atomic and check its format tag.

    Raises CheckpointError with a one-line message for a missing, unreadable or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; train one first or fix the path")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(error).__name__}); re-train or re-copy it") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected a '{expected_format}' checkpoint, found '{found}'")
    return payload


def network_checkpoint(model: nn.Module, checkpoint_format: str, version: int, description: dict[str, Any],
                       metrics: dict | None) -> dict[str, Any]:
    """The payload save_checkpoint_atomic writes for a network: format tag, version, the
    `description` needed to rebuild it (names, sizes), CPU weights and optional metrics."""
    return {
        "format": checkpoint_format,
        "version": version,
        **description,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "metrics": metrics or {},
    }


NetworkT = TypeVar("NetworkT", bound=nn.Module)


def restore_weights(model: NetworkT, payload: dict[str, Any], path: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> NetworkT:
    """Load payload["state_dict"] into a freshly built `model`; returns it on map_location in eval mode.

    Raises CheckpointError (one line, naming `path`) when the weights do not fit the network.
    """
    kind = type(model).__name__
    article = "an" if kind[:1].upper() in "AEIOU" else "a"
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not match {article} {kind}; the file is damaged or from another version") from None
    return model.to(map_location).eval()


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ImageNet-standardised."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), bilinear with antialiasing; a no-op at that size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _stack_keys(samples: list[dict], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([torch.as_tensor(sample[key]) for sample in samples]) for key in keys}


def make_loader(dataset: Dataset, keys: Sequence[str], batch_size: int, shuffle: bool, num_workers: int,
                seed: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader that batches only `keys` of each sample dict (other entries, which may not
    stack, are dropped). Shuffling is seeded."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        drop_last=shuffle and len(dataset) > batch_size, pin_memory=pin_memory,
        collate_fn=partial(_stack_keys, keys=tuple(keys)),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def open_summary_writer(log_dir: str | os.PathLike | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imported lazily: tensorboard is slow to import

    return SummaryWriter(log_dir=str(log_dir))


# --------------------------------------------------------------------------------------------
# The training loop


@dataclass
class NetTrainConfig:
    """The settings `fit` reads, shared by AttributeTrainConfig and ParsingTrainConfig (which set their own
    defaults and add their network's options). lr is AdamW's peak learning rate (warm-up then cosine decay)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05  # of all steps, linear warm-up before the cosine decay
    image_size: int = 224
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0
    progress: bool = True


@dataclass(kw_only=True)
class EpochMetrics:
    """What every network's held-out metrics hold (AttributeMetrics and ParsingMetrics add their scores): the
    evaluation fills val_loss, and `fit` fills the rest after each epoch."""

    val_loss: float
    train_loss: float = float("nan")
    epochs: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


MetricsT = TypeVar("MetricsT", bound=EpochMetrics)


def check_epochs(config: NetTrainConfig) -> None:
    """Raise ValueError unless the config asks for at least one epoch."""
    if config.epochs < 1:
        raise ValueError(f"{type(config).__name__}.epochs must be at least 1")


def fit(
    config: NetTrainConfig,
    build_model: Callable[[], NetworkT],
    train_dataset: Dataset,
    batch_keys: Sequence[str],
    prepare_batch: Callable[[dict, torch.device, int], tuple[torch.Tensor, torch.Tensor] | None],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    evaluate: Callable[[NetworkT], MetricsT],
    *,
    description: str,
    headline: str,
    validation_scalars: Callable[[MetricsT], dict[str, float]],
    log_dir: str | os.PathLike | None = None,
    save_checkpoint: Callable[[NetworkT, MetricsT], Any] | None = None,
) -> MetricsT:
    """Train a network with AdamW under a warm-up + cosine schedule; evaluate after every epoch.

    Args:
        config: epochs, batch size, optimiser, schedule, loader, device, seed and progress settings.
        build_model: makes the network; called once under torch.manual_seed(config.seed) without
            touching the global random state, then moved to the config's device.
        train_dataset, batch_keys: the training samples and the keys of each sample dict to batch
            (shuffled with config.seed).
        prepare_batch: (batch, device, epoch index) -> (inputs, targets) on the device, or None to
            skip the batch (no labels). It may gather label statistics during epoch 0.
        loss_fn: (model(inputs), targets) -> scalar loss.
        evaluate: model -> held-out metrics; `fit` fills in train_loss, epochs, history, seconds.
        description: tqdm's label ("<description> <epoch>/<epochs>").
        headline: the metrics attribute kept in each history entry next to the losses.
        validation_scalars: metrics -> {tag: value} logged under "val/" after "val/loss".
        log_dir: TensorBoard folder (train/loss and train/lr every step); None logs nothing.
        save_checkpoint: called with (model, metrics) after every epoch; None saves nothing.

    Returns the last epoch's metrics, with the history of all epochs. The checkpoint left is the last epoch's
    too, not the best one: the held-out set is the one the nets' accuracy is reported on, so choosing an
    epoch by it would flatter the report (the cosine schedule ends at a learning rate of 0 anyway).
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model().to(device)
    loader = make_loader(train_dataset, batch_keys, config.batch_size, shuffle=True,
                         num_workers=config.num_workers, seed=config.seed, pin_memory=device.type == "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * len(loader)
    warmup_steps = max(1, int(config.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
    writer = open_summary_writer(log_dir)

    history, step, metrics = [], 0, None
    try:
        for epoch in range(config.epochs):
            model.train()
            loss_sum, batches = 0.0, 0
            progress = tqdm(loader, desc=f"{description} {epoch + 1}/{config.epochs}", disable=not config.progress, leave=False)
            for batch in progress:
                prepared = prepare_batch(batch, device, epoch)
                if prepared is None:
                    continue
                inputs, targets = prepared
                loss = loss_fn(model(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_value = loss.item()
                loss_sum, batches, step = loss_sum + loss_value, batches + 1, step + 1
                progress.set_postfix(loss=f"{loss_value:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)

            metrics = evaluate(model)
            metrics.train_loss = loss_sum / max(batches, 1)
            metrics.epochs = epoch + 1
            history.append({"epoch": epoch + 1, "train_loss": metrics.train_loss, "val_loss": metrics.val_loss,
                            headline: getattr(metrics, headline)})
            metrics.history = list(history)
            metrics.seconds = time.perf_counter() - started
            if writer is not None:
                writer.add_scalar("val/loss", metrics.val_loss, step)
                for tag, value in validation_scalars(metrics).items():
                    writer.add_scalar(f"val/{tag}", value, step)
                writer.flush()
            if save_checkpoint is not None:
                save_checkpoint(model, metrics)
    finally:
        if writer is not None:
            writer.close()
    return metrics
