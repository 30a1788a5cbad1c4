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
from ablate.run import DONE, Plan, RunSummary, execute, existing, plan
from ablate.scheduler import Reporter
from ablate.store import Store
from ablate.studies import study_files

# Not the report's: the CI smoke study and the airbench speedrun.
LEFT_OUT = ("smoke", "speedrun")
TRAINING_PER_FORWARD = 3  # a training step costs about a forward and a backward of twice its work
CIFAR = (50_000, 10_000)  # training and test images, for a plan that has not read its data (Ray)
SYNTHETIC = tuple(inspect.signature(synthetic).parameters[k].default for k in ("n_train", "n_test"))


def parse_budget(text: str | None) -> float | None:
    """``90s``, ``8m``, ``1.5h`` or plain seconds -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--budget takes a positive time such as 90s, 8m or 1.5h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


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
    estimate_s: float | None = None  # how long, judged from past runs; None: no past run to judge by
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
    return [plan(name, data_cache=cache, **options) for name in names or report_studies()]


def prepare(store: Store, plans: list[Plan]) -> list[Item]:
    """What each plan has left to train in ``store``, in order of worth."""
    items = []
    for p in plans:
        done = existing(store, p)
        todo = [pt for pt in p.points if done.get(p.key(pt), {}).get("status") not in DONE]
        item = Item(p.study.name, p, _value(p), todo)
        item.flops = sum(point_flops(pt.config, _sizes(p, pt.config)) for pt in todo)
        items.append(item)
    cuda = any(d.startswith(("cuda", "ray:cuda")) for p in plans for d in p.devices)
    rate = seconds_per_flop(store, "cuda" if cuda else "cpu")
    if rate is not None:
        for item in items:
            item.estimate_s = item.flops * rate
    return sorted(items, key=lambda i: (-i.worth, i.name))


def run_all(store: Store, items: list[Item], budget_s: float | None, reporter: Reporter | None = None,
            **execute_options) -> list[Item]:
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
