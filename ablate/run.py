"""``ablate run`` as a Python function: a study and its options in, trained runs out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ablate import data as datasets
from ablate.config import ConfigError, parse_assignment, to_dict
from ablate.scheduler import QuietReporter, Reporter, Runner, parse_devices
from ablate.store import STALE_AFTER_S, NewRun, Store
from ablate.studies import GridPoint, Study, expand, load

DONE = ("complete", "diverged")


@dataclass
class Plan:
    study: Study
    points: list[GridPoint]
    devices: list[str]
    data_source: str | None


@dataclass
class RunSummary:
    study: str
    total: int
    skipped: int  # already complete or diverged before this invocation
    left_failed: int  # failed earlier and not retried
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def plan(
    study: str,
    sets: Sequence[str] = (),
    seeds: int | None = None,
    epochs: int | None = None,
    data: str | None = None,
    device: str | None = None,
) -> Plan:
    """Check every input and expand the grid; touches no database, so bad input writes nothing."""
    spec = load(study)
    overrides = [parse_assignment(s) for s in sets]
    if epochs is not None:
        overrides.append(("epochs", epochs))
    if data == "synthetic":
        overrides.append(("data.dataset", "synthetic"))
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds}")
    points = expand(spec, overrides, seeds)
    source = None if data in (None, "synthetic") else data
    if any(p.config.data.dataset == "cifar10" for p in points):
        datasets.check_source(source)
    return Plan(spec, points, parse_devices(device), source)


def _study_spec(study: Study) -> dict[str, Any]:
    return {"base": study.base, "axes": study.axes, "seeds": study.seeds, "figures": list(study.figures),
            "reported": study.reported, "path": str(study.path) if study.path else None}


def existing(store: Store, plan_: Plan) -> dict[tuple[str, int], dict[str, Any]]:
    """The recorded runs of the plan's points, keyed (config_hash, seed)."""
    wanted = {(p.config_hash, p.seed) for p in plan_.points}
    return {
        (r["config_hash"], r["seed"]): r
        for r in store.runs(plan_.study.name)
        if (r["config_hash"], r["seed"]) in wanted
    }


def execute(store: Store, plan_: Plan, reporter: Reporter | None = None) -> RunSummary:
    """Record the plan's points, then train those not done yet."""
    study = plan_.study
    study_id = store.sync_study(study.name, study.description, _study_spec(study))
    store.requeue_stale(study_id, STALE_AFTER_S)
    store.add_runs(study_id, (
        NewRun(p.config_hash, p.seed, to_dict(p.config), p.label) for p in plan_.points
    ))
    runs = existing(store, plan_)
    skipped = sum(r["status"] in DONE for r in runs.values())
    failed = sum(r["status"] == "failed" for r in runs.values())
    todo = {r["id"] for r in runs.values() if r["status"] == "pending"}
    summary = RunSummary(study.name, len(plan_.points), skipped, failed)
    if not todo:
        return summary
    preloaded = _preload(plan_)
    runner = Runner(store, study_id, plan_.devices, plan_.data_source, reporter or QuietReporter(), preloaded)
    outcome = runner.run(todo, len(todo), skipped)
    summary.counts, summary.interrupted = outcome.counts, outcome.interrupted
    return summary


def _preload(plan_: Plan) -> dict[str, datasets.Dataset]:
    """Load the data once up front: a missing download fails here, not in every worker."""
    names = {p.config.data.dataset for p in plan_.points}
    return {n: datasets.load("synthetic" if n == "synthetic" else plan_.data_source) for n in names}


def run_study(study: str, db: str | None = None, reporter: Reporter | None = None, **options) -> RunSummary:
    plan_ = plan(study, **options)
    store = Store.open(db)
    try:
        return execute(store, plan_, reporter)
    finally:
        store.close()


def dry_run(store: Store, plan_: Plan) -> list[dict[str, Any]]:
    """Each point with its recorded status (``new`` if never run); writes nothing."""
    runs = existing(store, plan_)
    return [
        {"label": p.label, "seed": p.seed, "config_hash": p.config_hash,
         "status": runs.get((p.config_hash, p.seed), {}).get("status", "new")}
        for p in plan_.points
    ]

