"""The one trainer every study, recipe and benchmark goes through.

It knows configs, a data set, a device and its hooks; nothing of databases or schedulers.
The data set sits on the training device as uint8 and whole batches are augmented there,
so no loader workers stand between the GPU and its next batch.

It trains a group of G runs (``train_group``); a lone run (``train``) is a group of one and
takes the path it always took: its own module, called directly. A group of more runs is
fused (``ablate.fusion``): every run keeps its own module, optimizer, schedule, generator and
hooks, and only the forward and backward pass are shared, one batched call for all. Each
member draws its data order and augmentation from its own generator, seeded as alone, so
those are bitwise the lone run's; its losses and accuracies equal the lone run's up to
rounding. A member ends on its own (diverged, stopped) and the others go on.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ablate import metrics as evaluated_metrics
from ablate.augment import augment, crops, flip_coins, index_only, normalize, prepare
from ablate.averaging import WeightAverage
from ablate.config import RunConfig
from ablate.data import Dataset, subset
from ablate.freezing import Freeze
from ablate.fusion import SHARED, Stack, compiled, member_losses, why_alone
from ablate.loss import build_loss
from ablate.models import create_model
from ablate.models.registry import takes_in_channels
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
    # ``checkpoint`` is called only in a run projected (time so far / epochs done x epochs) to
    # last at least this long: a shorter one would spend a large share of itself on snapshots.
    checkpoint_after_s: float = 0.0
    should_stop: Callable[[], bool] | None = None  # polled after every step
    end: Callable[[RunResult], None] | None = None  # the run has ended; in a group, before its mates


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


def _rng_states() -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


class _Run:
    """A run's mutable state: what a checkpoint holds and a resume restores."""

    def __init__(
        self,
        cfg: RunConfig,
        data: Dataset,
        device: torch.device,
        fresh: bool = True,
        hooks: Hooks | None = None,
        own_rng: bool = False,
    ):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.hooks = hooks or Hooks()
        self.model = create_model(
            cfg.model.name, num_classes=len(data.classes), in_channels=data.channels, **cfg.model.args
        ).to(device)
        # A model may set weights from the training images (airbench's patch whitening). Only a
        # fresh run asks: a resumed one gets them back from its checkpoint.
        init = getattr(self.model, "init_from_data", None)
        if fresh and init is not None:
            init(normalize(data.train_x[:DATA_INIT_IMAGES], stats=data.stats))
        # A lone run's global RNG is the process's. A fused member's forward draws nothing
        # (fusion refuses models that do), so its global RNG stays where its init left it:
        # kept here, it is what the same run alone would checkpoint.
        self.rng = _rng_states() if own_rng else None
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.freeze = Freeze(self.model)
        self.batch = min(cfg.batch_size, len(data.train_y))
        self.steps = steps_per_epoch(cfg, len(data.train_y))
        self.params = sum(p.numel() for p in self.model.parameters())
        self.loss_fn = build_loss(cfg.loss, len(data.classes))
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(cfg.seed)
        aug = cfg.data.aug
        # Alternating flip's coins, drawn once per run and kept on the device.
        self.coins = (
            flip_coins(len(data.train_y), cfg.seed, device) if aug.flip and aug.flip_mode == "alternate" else None
        )
        self.epoch = 0
        self.phase = 0
        self.start_phase(1)
        averaging = cfg.averaging
        self.average = (
            None if averaging.name == "none" else WeightAverage(averaging, self.model, cfg.epochs * self.steps)
        )
        self.metrics: dict[str, float] = {}
        self.earlier_s = 0.0  # training time before a resume
        self.result: RunResult | None = None

    def start_phase(self, phase: int) -> None:
        """Phase 1 is the config's optimizer and schedule; phase 2 its ``switch``."""
        cfg, switch = self.cfg, self.cfg.switch
        if phase == 1:
            optim, sched, epochs = cfg.optimizer, cfg.schedule, switch.at_epoch or cfg.epochs
        else:
            optim, sched, epochs = switch.optimizer, switch.schedule, cfg.epochs - switch.at_epoch
        self.phase = phase
        done = (switch.at_epoch if phase == 2 else 0) * self.steps  # the run's steps before this phase
        self.optimizer = build_optimizer(optim, self.model, epochs * self.steps, self.freeze.steps_left(done))
        self.schedule = build_schedule(sched, self.optimizer, epochs, self.steps)

    def phase_of(self, epoch: int) -> int:
        return 2 if self.cfg.switch.at_epoch and epoch > self.cfg.switch.at_epoch else 1

    def state(self, metrics: dict[str, float], wall_s: float) -> dict[str, Any]:
        """A snapshot (copies, not views of live tensors), safe to keep while training goes on."""
        cpu_rng, cuda_rng = self.rng or _rng_states()
        return copy.deepcopy(
            {
                "epoch": self.epoch,
                "phase": self.phase,
                "metrics": metrics,
                "wall_s": wall_s,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "average": self.average.state_dict() if self.average else None,
                "generator": self.gen.get_state(),
                "cpu_rng": cpu_rng,
                "cuda_rng": cuda_rng,
            }
        )

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if state["phase"] != self.phase:
            self.start_phase(state["phase"])
        # How to step (fused, foreach) is this device's choice, not the checkpoint's.
        how = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, how):
            group.update(own)
        self.schedule.load_state_dict(state["schedule"])
        if self.average:
            self.average.load_state_dict(state["average"])
        self.gen.set_state(state["generator"])
        if self.rng is not None:
            self.rng = (state["cpu_rng"], state["cuda_rng"])
        else:
            torch.set_rng_state(state["cpu_rng"])
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = state["epoch"]
        self.metrics, self.earlier_s = dict(state["metrics"]), state["wall_s"]
        self.freeze.apply(self.epoch * self.steps)  # past its steps, a parameter starts frozen

    def end(self, status: str, epochs_done: int, wall_s: float) -> None:
        self.result = RunResult(status, epochs_done, self.metrics, wall_s)
        if self.hooks.end:
            self.hooks.end(self.result)


def _device_batches(data: Dataset, aug, runs: list[_Run], epoch: int, prepared: torch.Tensor | None = None):
    """Shuffle on the device, augment whole batches there: no workers, no host copies.

    One run: x [B, ...], y [B]. Several: x [G, B, ...], y [G, B], each run's share drawn from
    its own generator exactly as alone. ``runs`` is read at every step: a run that leaves
    the group mid-epoch (stopped) leaves its share out from the next step on.

    ``prepared``: the training set as ``augment.prepare`` made it for ``aug`` (index-only),
    channels-last on CUDA: each batch is gathered from it in one op, bitwise the batch that
    augmenting and normalising the uint8 images gives. None: the uint8 path, every batch.
    """
    n, device = len(data.train_y), data.train_y.device
    perms = {r: torch.randperm(n, device=device, generator=r.gen) for r in runs}
    flips = {r: r.coins[1 - epoch % 2] for r in runs if r.coins is not None}  # a view: no draw, no copy
    channels_last = runs[0].memory_format == torch.channels_last
    b = runs[0].batch
    for i in range(runs[0].steps):
        live = list(runs)
        one = len(live) == 1  # a lone run: exactly the ops it always ran, no concatenation
        idxs = [perms[r][i * b : (i + 1) * b] for r in live]
        idx = idxs[0] if one else torch.cat(idxs)
        gens = live[0].gen if one else [r.gen for r in live]
        flip = None
        if flips:
            shares = [flips[r][ix] for r, ix in zip(live, idxs)]
            flip = shares[0] if one else torch.cat(shares)
        if prepared is not None:
            x = crops(prepared, idx, aug, gens, flip, channels_last)
        else:
            x = normalize(augment(data.train_x[idx], aug, gens, flip), stats=data.stats)
            x = x.contiguous(memory_format=live[0].memory_format)
        y = data.train_y[idx]
        if not one:
            x, y = x.view(len(live), b, *x.shape[1:]), y.view(len(live), b)
        yield x, y


def _pil_batches(loader, device: torch.device, run: _Run):
    for x, y in loader:
        yield x.to(device, non_blocking=True).contiguous(memory_format=run.memory_format), y.to(device)


def train(
    cfg: RunConfig,
    data: Dataset,
    device: str | torch.device,
    hooks: Hooks | None = None,
    resume: dict[str, Any] | None = None,
    compile: bool = False,
    backend: str | None = None,
) -> RunResult:
    """Train ``cfg`` on ``data``, evaluating after every epoch: a group of one.

    ``resume`` is a state a ``checkpoint`` hook was given: the run goes on from the end of
    that epoch and, on the CPU, ends with the numbers of a run that never stopped.
    A non-finite loss, train or test, ends the run as ``diverged`` at that epoch.
    """
    return train_group([cfg], data, device, [hooks or Hooks()], [resume], compile, backend)[0]


def check_group(cfgs: Sequence[RunConfig]) -> None:
    """A group of more than one must share what the fused step shares (``fusion.SHARED``)."""
    if len(cfgs) < 2:
        return
    first = cfgs[0]
    for cfg in cfgs:
        why = why_alone(cfg)
        if why:
            raise ValueError(f"cannot train fused: {why}")
        for key in SHARED:
            if getattr(cfg, key) != getattr(first, key):
                raise ValueError(f"cannot train fused: the runs differ in {key}")


def train_group(
    cfgs: Sequence[RunConfig],
    data: Dataset,
    device: str | torch.device,
    hooks: Sequence[Hooks] | None = None,
    resumes: Sequence[dict[str, Any] | None] | None = None,
    compile: bool = False,
    backend: str | None = None,
) -> list[RunResult]:
    """Train the runs ``cfgs`` together, one result each (see ``train``).

    More than one run: they must agree on ``fusion.SHARED``, and resume (if at all) from the
    same epoch. ``compile``: torch.compile the step's forward and loss, as one function, on
    CUDA (ignored on the CPU); ``backend`` compiles with that torch.compile backend on any
    device (the tests: ``aot_eager`` on the CPU).

    Compiling costs the first step of the first run in a process; a later run of the same
    model in that process reuses it (its model is a new object, not a new graph). Each shape
    change costs one more compile where it happens: a member leaving a group, a parameter
    frozen (``requires_grad_(False)``), the last partial group of a study.
    """
    check_group(cfgs)
    hooks = list(hooks) if hooks is not None else [Hooks() for _ in cfgs]
    resumes = list(resumes) if resumes is not None else [None] * len(cfgs)
    device = torch.device(device)
    if device.type == "cuda":
        # Fixed shapes every step: let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    compile = compile and (device.type == "cuda" or backend is not None)
    start = time.perf_counter()
    first = cfgs[0]
    data = with_channels(subset(data, first.train_subset), first.model.name).to(device)
    fused = len(cfgs) > 1
    runs = [_Run(cfg, data, device, resume is None, h, own_rng=fused) for cfg, h, resume in zip(cfgs, hooks, resumes)]
    for run, resume in zip(runs, resumes):
        if resume:
            run.restore(resume)
    if len({r.epoch for r in runs}) > 1:
        raise ValueError(f"cannot train fused: the runs resume from epochs {sorted({r.epoch for r in runs})}")
    amp = autocast_dtype(first.precision, device)
    autocast = lambda: _autocast(device, amp)  # noqa: E731
    loader, prepared, aug = None, None, first.data.aug
    if first.data.pipeline == "pil":  # alone: check_group refuses it in a group
        from ablate.pil_pipeline import pil_loader  # torchvision's transforms: only for this baseline

        loader = pil_loader(data.train_x, data.train_y, aug, runs[0].batch, first.seed)
    elif index_only(aug):
        # Normalised and padded once per run, in the step's dtype; each step only gathers.
        channels_last = runs[0].memory_format == torch.channels_last
        prepared = prepare(data.train_x, aug, amp or torch.float32, data.stats, channels_last)

    def elapsed(run: _Run) -> float:
        return run.earlier_s + time.perf_counter() - start

    live = list(runs)
    steps: dict[tuple[int, ...], Callable] = {}  # by who is in the group: rebuilt only when that changes
    for epoch in range(runs[0].epoch + 1, first.epochs + 1):
        for run in live:
            if run.phase_of(epoch) != run.phase:
                run.start_phase(run.phase_of(epoch))
            run.model.train()
        t0 = time.perf_counter()
        lrs = [run.optimizer.param_groups[0]["lr"] for run in live]
        forward_loss = _step(live, compile, backend, steps)
        loss_sum = torch.zeros(len(live), device=device)
        correct = torch.zeros(len(live), device=device, dtype=torch.long)
        batches = (
            _device_batches(data, aug, live, epoch, prepared)
            if loader is None
            else _pil_batches(loader, device, runs[0])
        )
        for i, (x, y) in enumerate(batches):
            with autocast():
                out, loss = forward_loss(x, y)
            for run in live:
                run.optimizer.zero_grad(set_to_none=True)
            (loss if loss.dim() == 0 else loss.sum()).backward()  # a member's loss reaches only its own weights
            step = (epoch - 1) * runs[0].steps + i + 1
            for j, run in enumerate(live):
                _probe(run, step, *((x, y) if len(live) == 1 else (x[j], y[j])), autocast)
                run.optimizer.step()
                run.schedule.step()
                run.freeze.apply(step)
                if run.average:
                    run.average.update(run.model, step)
            # Accumulate on the device: a .item() per step would stall the GPU queue.
            loss_sum += loss.detach().float() * runs[0].batch
            correct += (out.argmax(-1) == y).sum(-1)
            stop = [j for j, run in enumerate(live) if run.hooks.should_stop is not None and run.hooks.should_stop()]
            if stop:
                for j in stop:
                    live[j].end("stopped", epoch - 1, elapsed(live[j]))
                keep = [j for j in range(len(live)) if j not in stop]
                live[:] = [live[j] for j in keep]  # in place: the batches read it
                if not live:
                    return [run.result for run in runs]
                loss_sum, correct, lrs = loss_sum[keep], correct[keep], [lrs[j] for j in keep]
                forward_loss = _step(live, compile, backend, steps)
        seen = runs[0].steps * runs[0].batch
        train_time = time.perf_counter() - t0
        for run, lr, total, right in zip(list(live), lrs, loss_sum.tolist(), correct.tolist()):  # one sync per epoch
            run.metrics = {
                "params": run.params,
                "train_loss": total / seen,
                "train_acc": right / seen,
                "lr": lr,
                "epoch_time": train_time,
                "images_per_s": seen / train_time,
            }
            if not _close_epoch(run, epoch, data, amp, elapsed):
                live.remove(run)
        if not live:
            break
    for run in live:
        if run.cfg.probes.kernels and run.hooks.artifact:
            run.hooks.artifact("kernels.conv1", first_kernels(run.model))
        run.end("complete", first.epochs, elapsed(run))
    return [run.result for run in runs]


def _close_epoch(run: _Run, epoch: int, data: Dataset, amp, elapsed: Callable[[_Run], float]) -> bool:
    """Evaluate, checkpoint and report the epoch ``run`` has just trained; False if it diverged.

    A non-finite loss, train or test, is a divergence: weights that give an infinite test
    loss score near chance, and a run ending ``complete`` with them would pass for a result."""
    cfg, hooks = run.cfg, run.hooks
    due = epoch % cfg.eval.every == 0 or epoch == cfg.epochs
    logits: list[torch.Tensor] = []
    if np.isfinite(run.metrics["train_loss"]) and due:
        with run.average.applied(run.model) if run.average else contextlib.nullcontext():
            test_loss, test_acc = evaluate(
                run.model,
                data.test_x,
                data.test_y,
                amp,
                run.memory_format,
                cfg.eval.tta,
                stats=data.stats,
                logits=logits,
            )
        run.metrics.update(test_loss=test_loss, test_acc=test_acc)
    if not all(np.isfinite(run.metrics.get(k, 0.0)) for k in ("train_loss", "test_loss")):
        if hooks.epoch:
            hooks.epoch(epoch, run.metrics)
        run.end("diverged", epoch, elapsed(run))
        return False
    if logits:
        run.metrics.update(evaluated_metrics.compute(torch.cat(logits), data.test_y, len(data.classes)))
    run.epoch = epoch
    # Checkpoint before reporting the epoch: an epoch on record always has a state to resume.
    if hooks.checkpoint and epoch < cfg.epochs and elapsed(run) / epoch * cfg.epochs >= hooks.checkpoint_after_s:
        hooks.checkpoint(run.state(run.metrics, elapsed(run)))
    if hooks.epoch:
        hooks.epoch(epoch, run.metrics)
    return True


def warm_up(cfgs: Sequence[RunConfig], data: Dataset, device: str | torch.device, backend: str | None = None) -> None:
    """One whole compiled run of the group ``cfgs`` on dummy labels, nothing reported, so that
    a timed run of the same configs after it in this process compiles nothing: every graph
    its step needs, each shape change included (a parameter frozen after N steps), is made
    here. As the record does it; ``ablate run --compile`` does not, so a worker's first run
    of a model pays its compiles on its own clock."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(data.classes), data.train_y.shape, generator=g).to(data.train_y.device)
    train_group(cfgs, replace(data, train_y=labels), device, compile=True, backend=backend)


def _step(live: list[_Run], compile: bool, backend: str | None, cache: dict) -> Callable:
    """The step's forward and loss as one function of (x, y): a lone run's own module and its
    loss (a scalar), or the members stacked (``fusion.Stack``) and each member's loss [G].
    Compiled, it is one graph: forward and loss, and their backward."""
    key = tuple(id(run) for run in live)
    if key not in cache:
        if len(live) == 1:
            step = _lone_step(live[0].model, live[0].loss_fn)
        else:
            same = all(run.cfg.loss == live[0].cfg.loss for run in live)
            step = _stacked_step(Stack([run.model for run in live]), [run.loss_fn for run in live], same)
        cache[key] = compiled(step, backend) if compile else step
    return cache[key]


def _lone_step(model: nn.Module, loss_fn: nn.Module) -> Callable:
    # A closure, not a method: torch.compile keys its graphs by this code object and guards
    # on the tensors, so the next run's new model finds the graph already compiled.
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        return out, loss_fn(out, y)

    return step


def _stacked_step(stack: Stack, loss_fns: list[nn.Module], same: bool) -> Callable:
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = stack(x)
        return out, member_losses(loss_fns, out, y, same)

    return step


def _probe(run: _Run, step: int, x: torch.Tensor, y: torch.Tensor, autocast) -> None:
    """The run's probes due at ``step``, on its own module and its own share of the batch."""
    probes, hook = run.cfg.probes, run.hooks.probe
    if hook is None:
        return
    if probes.grad_norm_every and step % probes.grad_norm_every == 0:
        hook(step, relative_grad_norms(run.model))
    if probes.landscape_every and step % probes.landscape_every == 0:
        lr = run.optimizer.param_groups[0]["lr"]
        hook(step, loss_along_gradient(run.model, run.loss_fn, x, y, lr, probes.landscape_steps, autocast))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    amp=None,
    memory_format=torch.contiguous_format,
    tta: str = "none",
    stats=None,
    logits: list[torch.Tensor] | None = None,
):
    """Mean cross-entropy and accuracy over (x uint8, y), on the logits averaged over the
    test-time views ``tta`` (none: the images as they are); ``logits`` collects them, in
    float32, for the evaluated metrics (``ablate.metrics``)."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), EVAL_BATCH):
        xb = normalize(x[i : i + EVAL_BATCH], stats=stats)
        yb = y[i : i + EVAL_BATCH]
        with _autocast(x.device, amp):
            out = tta_logits(model, xb, tta, memory_format)
        loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
        if logits is not None:
            logits.append(out.float())
    return loss_sum.item() / len(y), correct.item() / len(y)


def with_channels(data: Dataset, model: str) -> Dataset:
    """Greyscale stays one channel unless the model asks for three: a builder that takes no
    ``in_channels`` (the built-in ones) is given each grey channel three times."""
    if data.channels != 1 or takes_in_channels(model):
        return data
    mean, std = data.stats
    return Dataset(
        data.train_x.expand(-1, 3, -1, -1).contiguous(),
        data.train_y,
        data.test_x.expand(-1, 3, -1, -1).contiguous(),
        data.test_y,
        list(data.classes),
        data.fingerprint,
        tuple(mean) * 3,
        tuple(std) * 3,
    )


def steps_per_epoch(cfg: RunConfig, n_train: int) -> int:
    """The training steps ``train`` takes per epoch on a data set of ``n_train`` images: the
    subset, in whole batches only (a ragged last batch would give BN a tiny, noisy one).
    The runner shows progress within an epoch against it before the run starts."""
    n = min(cfg.train_subset or n_train, n_train)
    return n // min(cfg.batch_size, n) if n else 0
