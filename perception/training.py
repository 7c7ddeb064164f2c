"""Pieces the attribute and parsing networks' training share: checkpoint I/O, devices, loaders, schedules."""
from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


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
