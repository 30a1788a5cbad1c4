"""The one trainer every study, recipe and benchmark goes through.

It knows a config, a data set, a device and its hooks; nothing of databases or schedulers.
The data set sits on the training device as uint8 and whole batches are augmented there,
so no loader workers stand between the GPU and its next batch.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ablate.augment import augment, normalize
from ablate.config import RunConfig
from ablate.data import Dataset, subset
from ablate.models import create_model
from ablate.optim import build_optimizer, build_schedule

EVAL_BATCH = 1024


@dataclass
class Hooks:
    """How a run talks to whoever runs it. Every hook is optional."""

    epoch: Callable[[int, dict[str, float]], None] | None = None  # after each epoch (1-based)
    probe: Callable[[int, dict[str, float]], None] | None = None  # probe scalars at a global step (1-based)
    artifact: Callable[[str, np.ndarray], None] | None = None  # an array kept after the run ends
    checkpoint: Callable[[dict[str, Any]], None] | None = None  # state to resume from, after each epoch
    should_stop: Callable[[], bool] | None = None  # polled after every step


@dataclass
class RunResult:
    status: str  # complete | diverged | stopped
    epochs_done: int
    metrics: dict[str, float] = field(default_factory=dict)  # those of the last finished epoch
    wall_s: float = 0.0


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA unless told otherwise; fp32 on CPU keeps runs reproducible."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Run:
    """A run's mutable state: what a checkpoint holds and a resume restores."""

    def __init__(self, cfg: RunConfig, data: Dataset, device: torch.device):
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model.name, num_classes=len(data.classes), **cfg.model.args).to(device)
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.batch = min(cfg.batch_size, len(data.train_y))
        self.steps = len(data.train_y) // self.batch  # a ragged last batch would give BN a tiny, noisy one
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.schedule = build_schedule(cfg.schedule, self.optimizer, cfg.epochs, self.steps)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(cfg.seed)
        self.epoch = 0
        self.wall_s = 0.0  # training time of earlier attempts, carried across resumes

    def state(self, metrics: dict[str, float], wall_s: float) -> dict[str, Any]:
        """A snapshot (copies, not views of live tensors), safe to keep while training goes on."""
        return copy.deepcopy({
            "epoch": self.epoch,
            "metrics": metrics,
            "wall_s": wall_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.gen.get_state(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        })

    def restore(self, state: dict[str, Any]) -> dict[str, float]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.wall_s = state["epoch"], state["wall_s"]
        return dict(state["metrics"])


def train(
    cfg: RunConfig,
    data: Dataset,
    device: str | torch.device,
    hooks: Hooks | None = None,
    resume: dict[str, Any] | None = None,
) -> RunResult:
    """Train ``cfg`` on ``data``, evaluating after every epoch.

    ``resume`` is a state a ``checkpoint`` hook was given: the run goes on from the end of
    that epoch and, on the CPU, ends with the numbers of a run that never stopped.
    A non-finite training loss ends the run as ``diverged`` at that epoch.
    """
    hooks = hooks or Hooks()
    device = torch.device(device)
    start = time.perf_counter()
    data = subset(data, cfg.train_subset).to(device)
    run = _Run(cfg, data, device)
    metrics = run.restore(resume) if resume else {}
    amp = autocast_dtype(cfg.precision, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    model, optimizer, schedule, gen, batch = run.model, run.optimizer, run.schedule, run.gen, run.batch
    n = len(data.train_y)

    def elapsed() -> float:
        return run.wall_s + time.perf_counter() - start

    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        perm = torch.randperm(n, device=device, generator=gen)
        for i in range(run.steps):
            idx = perm[i * batch : (i + 1) * batch]
            x = normalize(augment(data.train_x[idx], cfg.data.aug, gen)).contiguous(memory_format=run.memory_format)
            y = data.train_y[idx]
            with _autocast(device, amp):
                out = model(x)
                loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            # Accumulate on the device: a .item() per step would stall the GPU queue.
            loss_sum += loss.detach().float() * len(idx)
            correct += (out.argmax(1) == y).sum()
            if hooks.should_stop is not None and hooks.should_stop():
                return RunResult("stopped", epoch - 1, metrics, elapsed())
        seen = run.steps * batch
        train_loss = loss_sum.item() / seen  # one sync per epoch
        train_time = time.perf_counter() - t0
        metrics = {
            "train_loss": train_loss,
            "train_acc": correct.item() / seen,
            "lr": lr,
            "epoch_time": train_time,
            "images_per_s": seen / train_time,
        }
        if not torch.isfinite(torch.tensor(train_loss)):
            if hooks.epoch:
                hooks.epoch(epoch, metrics)
            return RunResult("diverged", epoch, metrics, elapsed())
        test_loss, test_acc = evaluate(model, data.test_x, data.test_y, amp, run.memory_format)
        metrics.update(test_loss=test_loss, test_acc=test_acc)
        run.epoch = epoch
        # Checkpoint before reporting the epoch: an epoch on record always has a state to resume.
        if hooks.checkpoint and epoch < cfg.epochs:
            hooks.checkpoint(run.state(metrics, elapsed()))
        if hooks.epoch:
            hooks.epoch(epoch, metrics)
    return RunResult("complete", cfg.epochs, metrics, elapsed())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp=None, memory_format=torch.contiguous_format):
    """Mean cross-entropy and accuracy over (x uint8, y), without augmentation."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), EVAL_BATCH):
        xb = normalize(x[i : i + EVAL_BATCH]).contiguous(memory_format=memory_format)
        yb = y[i : i + EVAL_BATCH]
        with _autocast(x.device, amp):
            out = model(xb)
        loss_sum += nn.functional.cross_entropy(out.float(), yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return loss_sum.item() / len(y), correct.item() / len(y)
