"""The one training loop every stage runs in (PyTorch Lightning's split: a stage says what one step
computes; this loop owns the optimiser schedule, checkpoints, resume, the NaN guard, progress bars,
TensorBoard, previews, Ctrl-C and multi-process gradient averaging).

A stage is any object with:
    name: str                                    "warm_start", "coarse" or "fine"
    modules() -> dict[str, nn.Module]            trainable modules, saved under these keys
    param_groups() -> list[dict]                 Adam parameter groups (with optional "lr_scale")
    step(batch: dict, step: int) -> (loss, terms, visuals)   step: 1-based index of this step in the stage;
                                                 loss: scalar tensor; terms: dict[str, float]
    preview(batch, visuals) -> (images, columns, tag)   a contact sheet of (3, H, W) tensors
    on_end()  (optional)                         called after the last step, before the final checkpoint

With `ema` set in the stage's config, the loop keeps a moving average of the trained parameters and the stage
ends on it (before on_end). Checkpoints before the end hold the average beside the raw weights, so a resumed run
averages exactly as an uninterrupted one; a finished stage that is run on (more steps) starts from the average.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from data.samples import collate_face_samples
from experiments.config import Config, StageConfig
from experiments.pipeline import CHECKPOINT_FORMAT
from fileio import link_atomically
from perception.training import open_summary_writer, read_checkpoint, save_checkpoint_atomic
from render.image_io import contact_sheet, save_png


class Stage(Protocol):
    name: str

    def modules(self) -> dict[str, nn.Module]: ...

    def param_groups(self) -> list[dict]: ...

    def step(self, batch: dict, step: int) -> tuple[torch.Tensor, dict, dict]: ...

    def preview(self, batch: dict, visuals: dict) -> tuple[list[torch.Tensor], int, str]: ...


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row (message: one line saying what to do)."""


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> "Distributed":
        """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """All-reduce and average the gradients, as DistributedDataParallel does, in one flat buffer."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


class StepSampler(Sampler[int]):
    """Indices for steps [start, total): step k draws `batch` indices from a generator seeded by (seed, k),
    so a resumed run sees exactly the batches an uninterrupted one would have. With several processes,
    rank r takes every world_size-th index of each step's batch."""

    def __init__(self, length: int, batch: int, seed: int, start: int, total: int, rank: int = 0, world_size: int = 1):
        self.length, self.batch, self.seed, self.start, self.total = length, batch, seed, start, total
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for step in range(self.start, self.total):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            yield from torch.randint(self.length, (self.batch,), generator=g).tolist()[self.rank::self.world_size]

    def __len__(self) -> int:
        return max(self.total - self.start, 0) * len(range(self.rank, self.batch, self.world_size))


def step_batches(dataset: Dataset, stage_cfg: StageConfig, seed: int, start: int, num_workers: int,
                 ddp: Distributed = Distributed()) -> Iterable[dict]:
    """The batches of steps [start, stage_cfg.steps), reproducible per step."""
    per_rank = len(range(ddp.rank, stage_cfg.batch_size, ddp.world_size))
    sampler = StepSampler(len(dataset), stage_cfg.batch_size, seed, start, stage_cfg.steps, ddp.rank, ddp.world_size)
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, collate_fn=collate_face_samples,
                      num_workers=num_workers)


class StopRequest:
    """Set by SIGINT/SIGTERM so the loop can checkpoint and leave cleanly; a second Ctrl-C aborts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def decayed_lr_factor(step: int, stage_cfg: StageConfig) -> float:
    """The paper's schedule: lr_decay ** (step // lr_decay_every)."""
    return stage_cfg.lr_decay ** (step // max(stage_cfg.lr_decay_every, 1))


def stage_checkpoint(cfg: Config, stage: str) -> Path:
    return Path(cfg.train.checkpoint_dir) / f"{stage}.pt"


def read_stage_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The payload at `path`, or None when there is none (a foreign or damaged file raises CheckpointError)."""
    return read_checkpoint(path, CHECKPOINT_FORMAT, device) if path.is_file() else None


def load_modules(stage: Stage, payload: dict) -> None:
    for key, module in stage.modules().items():
        if payload.get(key) is not None:
            module.load_state_dict(payload[key])


class WeightAverage:
    """An exponential moving average of a stage's trainable parameters (Polyak averaging).

    Off in the default config: the 600-step probes that favoured it (held-out 68-point error 5.47 -> 5.00 px,
    5.05 -> 4.21 px) compared recalibrated BatchNorm statistics, whose own noise turned out larger than that (see
    the README's BatchNorm paragraph). Buffers (BatchNorm statistics) are not averaged; a stage with batchnorm
    "recalibrate" fits them to the averaged weights at the end.
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.parameters = {key: dict(module.named_parameters()) for key, module in modules.items()}
        self.average = {key: {name: p.detach().clone() for name, p in named.items() if p.requires_grad}
                        for key, named in self.parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        for key, average in self.average.items():
            for name, value in average.items():
                value.lerp_(self.parameters[key][name].detach(), 1.0 - self.decay)

    @torch.no_grad()
    def apply(self) -> None:
        """Overwrite the modules' parameters with the average."""
        for key, average in self.average.items():
            for name, value in average.items():
                self.parameters[key][name].copy_(value)

    def state_dict(self) -> dict:
        return {key: {name: v.clone() for name, v in average.items()} for key, average in self.average.items()}

    def load_state_dict(self, state: dict) -> None:
        for key, average in self.average.items():
            for name, value in average.items():
                value.copy_(state[key][name])


def run_stage(stage: Stage, batches_from, stage_cfg: StageConfig, cfg: Config, device: torch.device,
              ddp: Distributed = Distributed(), extra_state: dict | None = None) -> dict:
    """Train `stage` for stage_cfg.steps steps, resuming from its checkpoint.

    batches_from(start_step) -> iterable of batches for steps [start_step, stage_cfg.steps).
    extra_state: module state dicts to save alongside (e.g. the regressor in the fine stage's checkpoint
    is one of its modules already; frozen parts need nothing). Returns a summary dict.
    Writes cfg.train.checkpoint_dir/<stage>.pt atomically and links last.pt to it (every checkpoint_every steps,
    at the end, on Ctrl-C / SIGTERM, and before giving up on non-finite losses).
    """
    t = cfg.train
    path = stage_checkpoint(cfg, stage.name)
    groups = stage.param_groups()
    for group in groups:
        group["base_lr"] = stage_cfg.lr * group.pop("lr_scale", 1.0)
        group["lr"] = group["base_lr"]
    optimiser = torch.optim.Adam(groups, lr=stage_cfg.lr, fused=True)  # one kernel per step: 9 % off a warm-start step
    parameters = [p for g in groups for p in g["params"]]
    start = 0
    payload = read_stage_checkpoint(path, device)
    averaging = None
    if payload is not None:
        load_modules(stage, payload)
        start = int(payload["step"])
        if start < stage_cfg.steps and payload.get("optimiser"):
            base_lrs = [group["base_lr"] for group in optimiser.param_groups]
            optimiser.load_state_dict(payload["optimiser"])
            for group, base_lr in zip(optimiser.param_groups, base_lrs):  # the schedule follows this run's config
                group["base_lr"] = base_lr
                group["fused"] = True  # a checkpoint written before the fused optimiser says None
    if start >= stage_cfg.steps:
        if ddp.is_main:
            print(f"[{stage.name}] done ({start} steps in {path}); skipping")
        return {"step": start, "skipped": True, "checkpoint": str(path)}
    if stage_cfg.ema:
        averaging = WeightAverage(stage.modules(), stage_cfg.ema)
        if payload is not None and payload.get("ema") is not None:
            averaging.load_state_dict(payload["ema"])

    def save(step: int) -> None:
        if not ddp.is_main:
            return
        state = {"format": CHECKPOINT_FORMAT, "stage": stage.name, "step": step, "steps": stage_cfg.steps,
                 "optimiser": optimiser.state_dict(), "config": asdict(cfg), **(extra_state or {})}
        state.update({k: m.state_dict() for k, m in stage.modules().items()})
        if averaging is not None and step < stage_cfg.steps:  # at the end the modules hold the average already
            state["ema"] = averaging.state_dict()
        save_checkpoint_atomic(state, path)
        link_atomically(path, path.with_name("last.pt"))  # the same file under a second name, not a second copy

    if start and ddp.is_main:
        print(f"[{stage.name}] resuming from {path} at step {start}")
    log_dir = Path(t.log_dir)
    writer = open_summary_writer(log_dir) if ddp.is_main else None
    stop, bad, step, last_terms = StopRequest(), 0, start, {}
    for module in stage.modules().values():
        module.train()
    progress = tqdm(total=stage_cfg.steps, initial=start, desc=stage.name, unit="step", dynamic_ncols=True,
                    disable=not ddp.is_main)
    started = time.time()
    try:
        for batch in batches_from(start):
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            factor = decayed_lr_factor(step, stage_cfg)
            for group in optimiser.param_groups:
                group["lr"] = group["base_lr"] * factor
            step += 1
            loss, terms, visuals = stage.step(batch, step)
            value = float(loss.detach())
            if not math.isfinite(value):
                bad += 1
                optimiser.zero_grad(set_to_none=True)
                print(f"\n[{stage.name}] step {step}: non-finite loss ({terms}); skipped ({bad}/{t.max_bad_steps} "
                      "in a row)", file=sys.stderr)
                if bad >= t.max_bad_steps:
                    save(step - bad)
                    raise NonFiniteLossError(
                        f"{t.max_bad_steps} non-finite losses in a row in stage {stage.name} at step {step}; the last "
                        f"good weights are in {path}; lower its lr in the config and rerun to resume")
                continue
            bad = 0
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            ddp.average_gradients(parameters)
            torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            optimiser.step()
            if averaging is not None:
                averaging.update()
            last_terms = terms
            progress.update(1)
            progress.set_postfix({"loss": f"{value:.4f}", **{k: f"{v:.3g}" for k, v in list(terms.items())[:3]}})
            if writer is not None and step % t.log_every == 0:
                writer.add_scalar(f"{stage.name}/loss", value, step)
                writer.add_scalar(f"{stage.name}/lr", optimiser.param_groups[0]["lr"], step)
                for k, v in terms.items():
                    writer.add_scalar(f"{stage.name}/{k}", v, step)
            if ddp.is_main and (step % t.image_every == 0 or step == stage_cfg.steps):
                images, columns, tag = stage.preview(batch, visuals)
                sheet = contact_sheet([im.detach().float().cpu() for im in images], columns=columns)
                save_png(sheet, log_dir / "previews" / f"{stage.name}_{step:06d}.png")
                if writer is not None:
                    writer.add_image(f"{stage.name}/{tag}", np.asarray(sheet), step, dataformats="HWC")
            if step == stage_cfg.steps and averaging is not None:  # the stage ends on the averaged weights
                averaging.apply()
            if step == stage_cfg.steps and hasattr(stage, "on_end"):
                stage.on_end()
            if step % t.checkpoint_every == 0 or step == stage_cfg.steps:
                save(step)
            if stop.requested:
                save(step)
                print(f"\n[{stage.name}] stopped at step {step}; checkpoint in {path}; rerun the same command to resume")
                break
    finally:
        progress.close()
        stop.restore()
        if writer is not None:
            writer.close()
    return {"step": step, "seconds": round(time.time() - started, 1), "last_losses": last_terms,
            "checkpoint": str(path), "stopped": stop.requested}
