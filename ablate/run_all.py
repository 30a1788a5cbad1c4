"""``ablate run all``: every study of the report in one go, within a time budget.

GPU time comes in short windows, so the studies go in the order that yields the most of the
report per unit of compute: the figures and claims a study feeds, over the training FLOPs its
unfinished points still need (counted on the meta device, no GPU needed to plan). When the
budget is spent the runners stop after their current step, as at a first Ctrl-C: unfinished
points stay pending with their checkpoints, and the next call goes on from there. Estimates
of the time left come from the runs already in the database.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ablate.config import ConfigError, RunConfig
from ablate.data import data_key, synthetic
from ablate.models import create_model
from ablate.run import DONE, Plan, RunSummary, execute, existing, plan, settle_data
from ablate.scheduler import Reporter
from ablate.store import Store
from ablate.studies import study_files

# Not the report's: the CI smoke study, the airbench speedruns (the record's recipe and the
# legacy airbench94 one), DAWNBench's recipe beside fast.
LEFT_OUT = ("smoke", "speedrun", "speedrun_legacy", "fast_sgd")
TRAINING_PER_FORWARD = 3  # a training step costs about a forward and a backward of twice its work
CIFAR = (50_000, 10_000)  # training and test images, for a plan that has not read its data (Ray)
SYNTHETIC = tuple(inspect.signature(synthetic).parameters[k].default for k in ("n_train", "n_test"))
# Seconds per training FLOP where the database has no finished run on this kind of device to
# judge by: rough, from ablate's own runs, as run all counts their FLOPs. cuda: the median of
# the 81 runs in the committed results.db (one H200, 2026-11-30, 2 to 8 runs sharing the GPU),
# about 1.0 TFLOP/s a run; cpu: the depth study at 1 epoch on 2,048 images, 2 cores of the
# project's development machine (2026-12-03), about 28 GFLOP/s. Another GPU or CPU can be
# several times off: the first finished runs replace it.
ROUGH_SECONDS_PER_FLOP = {"cuda": 9.6e-13, "cpu": 3.6e-11}
ROUGH_SOURCE = {"cuda": "one H200's in 2026", "cpu": "2 cores of a development machine's"}


def parse_budget(text: str | None) -> float | None:
    """``90s``, ``8m``, ``1.5h`` or plain seconds -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--budget takes a positive time such as 90s, 8m or 1.5h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_studies(text: str | None) -> list[str] | None:
    """``--studies A,B``: the names in their order, each once; None: every study of the report."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise ConfigError(f"--studies takes study names separated by commas, got {text!r}: an empty name")
    return list(dict.fromkeys(names))


def report_studies() -> list[str]:
    return [name for name in study_files() if name not in LEFT_OUT]


_FLOPS: dict[tuple, float] = {}


def forward_flops(cfg: RunConfig) -> float:
    """FLOPs of one image's forward pass, counted on the meta device."""
    key = (cfg.model.name, repr(sorted(cfg.model.args.items())))
    if key not in _FLOPS:
        with torch.device("meta"):
            model = create_model(cfg.model.name, **cfg.model.args)
            x = torch.empty(2, 3, 32, 32)  # two: batch norm in training mode wants more than one
        with FlopCounterMode(display=False) as counter:
            model(x)
        _FLOPS[key] = counter.get_total_flops() / 2
    return _FLOPS[key]


def point_flops(cfg: RunConfig, sizes: tuple[int, int] = CIFAR) -> float:
    """Training and evaluation FLOPs of one run of ``cfg`` on data of ``sizes`` (train, test)."""
    train, test = sizes
    images = min(cfg.train_subset or train, train)
    evaluations = cfg.epochs // cfg.eval.every + (cfg.epochs % cfg.eval.every != 0)
    return forward_flops(cfg) * (TRAINING_PER_FORWARD * images * cfg.epochs + test * evaluations)


@dataclass
class Item:
    """One study as ``run all`` sees it."""

    name: str
    plan: Plan
    value: int  # the figures and claims it feeds (a recipe: its row of the results table)
    todo: list[Any] = field(default_factory=list)  # its grid points not finished yet
    flops: float = 0.0  # what they still need
    estimate_s: float | None = None  # how long: see ``prepare``
    summary: RunSummary | None = None
    skipped: str = ""  # why it was not run: the budget

    @property
    def worth(self) -> float:
        return self.value / self.flops if self.flops else float("inf")


def _value(p: Plan) -> int:
    s = p.study
    return len(s.figures) + len(s.claims) + (1 if s.reported else 0)


def group_size(notes: str | None) -> int:
    """How many runs the run last trained fused with, itself included: a fused member's
    wall time is its whole group's (the scheduler's note "trained fused with run(s) ...")."""
    found = re.findall(r"trained fused with run\(s\) ([\d, ]+)", notes or "")
    return 1 + len(re.findall(r"\d+", found[-1])) if found else 1


def seconds_per_flop(store: Store, device_kind: str) -> float | None:
    """The median, over the finished runs of the database trained on this kind of device,
    of wall seconds per FLOP: what turns FLOPs into a time estimate."""
    from ablate.config import from_dict

    rates = []
    for r in store.runs():
        if r["status"] not in DONE or not r["wall_s"] or not (r["device"] or "").startswith(device_kind):
            continue
        try:
            cfg = from_dict(r["config"])
            flops = point_flops(cfg, CIFAR if cfg.data.dataset == "cifar10" else SYNTHETIC)
            rates.append(r["wall_s"] / (flops * group_size(r["notes"])))
        except (ConfigError, RuntimeError, TypeError, ValueError):
            continue
    rates.sort()
    return rates[len(rates) // 2] if rates else None


def _sizes(p: Plan, cfg: RunConfig) -> tuple[int, int]:
    loaded = p.loaded.get(data_key(cfg.data.dataset, cfg.data.image_size))  # a Ray plan keeps none
    return (len(loaded.train_y), len(loaded.test_y)) if loaded is not None else CIFAR


def plan_all(names: list[str] | None = None, **options) -> list[Plan]:
    """Plan every study (``options`` as ``run.plan`` takes them, the same for each); reads the
    data once, touches no database, so a bad option or study writes nothing."""
    cache: dict = {}
    names = report_studies() if names is None else list(dict.fromkeys(names))  # a study named twice trains once
    return [plan(name, data_cache=cache, **options) for name in names]


@dataclass
class Pace:
    """Seconds per FLOP on the plans' kind of device, and what it was judged from."""

    seconds_per_flop: float
    kind: str  # cuda | cpu
    rough: bool  # True: ROUGH_SECONDS_PER_FLOP, the database had no run to judge by

    def says(self) -> str:
        if self.rough:
            return (
                f"rough: no finished run on {self.kind} in this database, so {1 / self.seconds_per_flop / 1e9:,.0f} "
                f"GFLOP/s a run is assumed, {ROUGH_SOURCE[self.kind]} pace"
            )
        return "from the runs in the database: their seconds per FLOP on this kind of device"


def pace(store: Store, plans: list[Plan]) -> Pace:
    """How fast the plans' device trains: the database's runs on that kind of device, or a rough rate."""
    kind = "cuda" if any(d.startswith(("cuda", "ray:cuda")) for p in plans for d in p.devices) else "cpu"
    rate = seconds_per_flop(store, kind)
    return Pace(ROUGH_SECONDS_PER_FLOP[kind], kind, True) if rate is None else Pace(rate, kind, False)


def prepare(store: Store, plans: list[Plan]) -> list[Item]:
    """What each plan has left to train in ``store``, in order of worth, each with an estimate
    of its time at ``pace``."""
    items = []
    for p in plans:
        settle_data(store, p)
        done = existing(store, p)
        todo = [pt for pt in p.points if done.get(p.key(pt), {}).get("status") not in DONE]
        item = Item(p.study.name, p, _value(p), todo)
        item.flops = sum(point_flops(pt.config, _sizes(p, pt.config)) for pt in todo)
        items.append(item)
    rate = pace(store, plans).seconds_per_flop
    for item in items:
        item.estimate_s = item.flops * rate
    return sorted(items, key=lambda i: (-i.worth, i.name))


def run_all(
    store: Store, items: list[Item], budget_s: float | None, reporter: Reporter | None = None, **execute_options
) -> list[Item]:
    """Train the items in order until done or until ``budget_s`` is spent."""
    deadline = time.monotonic() + budget_s if budget_s is not None else None
    for item in items:
        if not item.todo:
            continue
        if deadline is not None and time.monotonic() >= deadline:
            item.skipped = "the budget was spent before it began"
            continue
        item.summary = execute(store, item.plan, reporter, deadline=deadline, **execute_options)
        if item.summary.interrupted and not item.summary.out_of_time:
            break  # Ctrl-C: stop the whole run, not just this study
    return items
