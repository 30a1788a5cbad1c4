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

from ablate.augment import alternating_flips, augment, normalize
from ablate.averaging import WeightAverage
from ablate.config import RunConfig
from ablate.data import Dataset, subset
from ablate.loss import build_loss
from ablate.models import create_model
from ablate.optim import build_optimizer, build_schedule
from ablate.probes import first_kernels, loss_along_gradient, relative_grad_norms
from ablate.tta import tta_logits

EVAL_BATCH = 1024
DATA_INIT_IMAGES = 5000  # what a model that initialises from the data sees (airbench94's 5,000)


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

    def __init__(self, cfg: RunConfig, data: Dataset, device: torch.device, fresh: bool = True):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.model = create_model(cfg.model.name, num_classes=len(data.classes), **cfg.model.args).to(device)
        # A model may set weights from the training images (airbench's patch whitening). Only a
        # fresh run asks: a resumed one gets them back from its checkpoint.
        init = getattr(self.model, "init_from_data", None)
        if fresh and init is not None:
            init(normalize(data.train_x[:DATA_INIT_IMAGES]))
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.batch = min(cfg.batch_size, len(data.train_y))
        self.steps = len(data.train_y) // self.batch  # a ragged last batch would give BN a tiny, noisy one
        self.params = sum(p.numel() for p in self.model.parameters())
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(cfg.seed)
        self.epoch = 0
        self.phase = 0
        self.start_phase(1)
        averaging = cfg.averaging
        self.average = None if averaging.name == "none" else WeightAverage(averaging, self.model, cfg.epochs * self.steps)

    def start_phase(self, phase: int) -> None:
        """Phase 1 is the config's optimizer and schedule; phase 2 its ``switch``."""
        cfg, switch = self.cfg, self.cfg.switch
        if phase == 1:
            optim, sched, epochs = cfg.optimizer, cfg.schedule, switch.at_epoch or cfg.epochs
        else:
            optim, sched, epochs = switch.optimizer, switch.schedule, cfg.epochs - switch.at_epoch
        self.phase = phase
        self.optimizer = build_optimizer(optim, self.model, epochs * self.steps)
        self.schedule = build_schedule(sched, self.optimizer, epochs, self.steps)

    def phase_of(self, epoch: int) -> int:
        return 2 if self.cfg.switch.at_epoch and epoch > self.cfg.switch.at_epoch else 1

    def state(self, metrics: dict[str, float], wall_s: float) -> dict[str, Any]:
        """A snapshot (copies, not views of live tensors), safe to keep while training goes on."""
        return copy.deepcopy({
            "epoch": self.epoch,
            "phase": self.phase,
            "metrics": metrics,
            "wall_s": wall_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "average": self.average.state_dict() if self.average else None,
            "generator": self.gen.get_state(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        })

    def restore(self, state: dict[str, Any]) -> tuple[dict[str, float], float]:
        self.model.load_state_dict(state["model"])
        if state["phase"] != self.phase:
            self.start_phase(state["phase"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.average:
            self.average.load_state_dict(state["average"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = state["epoch"]
        return dict(state["metrics"]), state["wall_s"]


def _device_batches(data: Dataset, aug, run: _Run, epoch: int):
    """Shuffle on the device, augment whole batches there: no workers, no host copies."""
    flips = None
    if aug.flip and aug.flip_mode == "alternate":
        flips = alternating_flips(len(data.train_y), run.cfg.seed, epoch, data.train_y.device)
    perm = torch.randperm(len(data.train_y), device=data.train_y.device, generator=run.gen)
    for i in range(run.steps):
        idx = perm[i * run.batch : (i + 1) * run.batch]
        x = normalize(augment(data.train_x[idx], aug, run.gen, None if flips is None else flips[idx]))
        yield x.contiguous(memory_format=run.memory_format), data.train_y[idx]


def _pil_batches(loader, device: torch.device, run: _Run):
    for x, y in loader:
        yield x.to(device, non_blocking=True).contiguous(memory_format=run.memory_format), y.to(device)


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
    if device.type == "cuda":
        # Fixed shapes every step: let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    data = subset(data, cfg.train_subset).to(device)
    run = _Run(cfg, data, device, fresh=resume is None)
    metrics, earlier_s = run.restore(resume) if resume else ({}, 0.0)
    amp = autocast_dtype(cfg.precision, device)
    autocast = lambda: _autocast(device, amp)  # noqa: E731
    loss_fn = build_loss(cfg.loss, len(data.classes))
    probes = cfg.probes
    grad_every, land_every = (probes.grad_norm_every, probes.landscape_every) if hooks.probe else (0, 0)
    loader = None
    if cfg.data.pipeline == "pil":
        from ablate.pil_pipeline import pil_loader  # torchvision's transforms: only for this baseline

        loader = pil_loader(data.train_x, data.train_y, cfg.data.aug, run.batch, cfg.seed)
    model = run.model

    def elapsed() -> float:
        return earlier_s + time.perf_counter() - start

    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        if run.phase_of(epoch) != run.phase:
            run.start_phase(run.phase_of(epoch))
        optimizer, schedule = run.optimizer, run.schedule
        model.train()
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        batches = _device_batches(data, cfg.data.aug, run, epoch) if loader is None else _pil_batches(loader, device, run)
        for i, (x, y) in enumerate(batches):
            with autocast():
                out = model(x)
                loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step = (epoch - 1) * run.steps + i + 1
            if grad_every and step % grad_every == 0:
                hooks.probe(step, relative_grad_norms(model))
            if land_every and step % land_every == 0:
                step_lr = optimizer.param_groups[0]["lr"]
                hooks.probe(step, loss_along_gradient(model, loss_fn, x, y, step_lr, probes.landscape_steps, autocast))
            optimizer.step()
            schedule.step()
            if run.average:
                run.average.update(model, step)
            # Accumulate on the device: a .item() per step would stall the GPU queue.
            loss_sum += loss.detach().float() * len(y)
            correct += (out.argmax(1) == y).sum()
            if hooks.should_stop is not None and hooks.should_stop():
                return RunResult("stopped", epoch - 1, metrics, elapsed())
        seen = run.steps * run.batch
        train_loss = loss_sum.item() / seen  # one sync per epoch
        train_time = time.perf_counter() - t0
        metrics = {
            "params": run.params,
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
        if epoch % cfg.eval.every == 0 or epoch == cfg.epochs:
            with run.average.applied(model) if run.average else contextlib.nullcontext():
                test_loss, test_acc = evaluate(model, data.test_x, data.test_y, amp, run.memory_format, cfg.eval.tta)
            metrics.update(test_loss=test_loss, test_acc=test_acc)
        run.epoch = epoch
        # Checkpoint before reporting the epoch: an epoch on record always has a state to resume.
        if hooks.checkpoint and epoch < cfg.epochs:
            hooks.checkpoint(run.state(metrics, elapsed()))
        if hooks.epoch:
            hooks.epoch(epoch, metrics)
    if probes.kernels and hooks.artifact:
        hooks.artifact("kernels.conv1", first_kernels(model))
    return RunResult("complete", cfg.epochs, metrics, elapsed())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp=None, memory_format=torch.contiguous_format,
             tta: str = "none"):
    """Mean cross-entropy and accuracy over (x uint8, y), on the logits averaged over the
    test-time views ``tta`` (none: the images as they are)."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), EVAL_BATCH):
        xb = normalize(x[i : i + EVAL_BATCH])
        yb = y[i : i + EVAL_BATCH]
        with _autocast(x.device, amp):
            out = tta_logits(model, xb, tta, memory_format)
        loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return loss_sum.item() / len(y), correct.item() / len(y)


def steps_per_epoch(cfg: RunConfig, n_train: int) -> int:
    """The training steps ``train`` takes per epoch on a data set of ``n_train`` images (as
    ``_Run`` counts them: the subset, whole batches only), for progress shown within an epoch."""
    n = min(cfg.train_subset or n_train, n_train)
    return n // min(cfg.batch_size, n) if n else 0
