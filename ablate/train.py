"""The one trainer every study, recipe and benchmark goes through.

It knows a config, a data set, a device and a callback; nothing of databases or schedulers.
The data set sits on the training device as uint8 and whole batches are augmented there,
so no loader workers stand between the GPU and its next batch.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ablate.augment import augment, normalize
from ablate.config import RunConfig
from ablate.data import Dataset, subset
from ablate.models import create_model
from ablate.optim import build_optimizer, build_schedule

EVAL_BATCH = 1024

EpochCallback = Callable[[int, dict[str, float]], None]


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


def train(
    cfg: RunConfig,
    data: Dataset,
    device: str | torch.device,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train ``cfg`` on ``data`` and evaluate after every epoch.

    ``on_epoch(epoch, metrics)`` is called after each finished epoch (1-based). ``should_stop``
    is polled after every step; when it answers True the run returns ``stopped``.
    A non-finite training loss ends the run as ``diverged`` at that epoch.
    """
    device = torch.device(device)
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = subset(data, cfg.train_subset).to(device)
    model = create_model(cfg.model.name, num_classes=len(data.classes), **cfg.model.args).to(device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    amp = autocast_dtype(cfg.precision, device)

    n = len(data.train_y)
    batch = min(cfg.batch_size, n)
    steps = n // batch  # a ragged last batch would give BN a tiny, noisy one
    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = build_schedule(cfg.schedule, optimizer, cfg.epochs, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    metrics: dict[str, float] = {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        perm = torch.randperm(n, device=device, generator=gen)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            x = normalize(augment(data.train_x[idx], cfg.data.aug, gen)).contiguous(memory_format=memory_format)
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
            if should_stop is not None and should_stop():
                return RunResult("stopped", epoch - 1, metrics, time.perf_counter() - start)
        seen = steps * batch
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
            if on_epoch:
                on_epoch(epoch, metrics)
            return RunResult("diverged", epoch, metrics, time.perf_counter() - start)
        test_loss, test_acc = evaluate(model, data.test_x, data.test_y, amp, memory_format)
        metrics.update(test_loss=test_loss, test_acc=test_acc)
        if on_epoch:
            on_epoch(epoch, metrics)
    return RunResult("complete", cfg.epochs, metrics, time.perf_counter() - start)


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
