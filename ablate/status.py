"""``ablate status`` as a Python function: per study, what ran, what runs, what failed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ablate.store import STALE_AFTER_S, STATUSES, Store
from ablate.store.schema import utcnow

RUN_FIELDS = (
    "id", "status", "seed", "config_hash", "label", "config", "test_acc", "epochs_done",
    "device", "host", "started_at", "ended_at", "heartbeat_at", "wall_s", "error",
)


def _shown_status(run: dict[str, Any], now) -> str:
    """A running run whose heartbeat stopped is shown as stale: its runner is gone."""
    beat = run["heartbeat_at"]
    if run["status"] == "running" and beat is not None and now - beat > timedelta(seconds=STALE_AFTER_S):
        return "stale"
    return run["status"]


def study_status(store: Store, study: str | None = None) -> list[dict[str, Any]]:
    """One entry per study: counts by status, the best test accuracy, the last update, the runs."""
    now = utcnow()
    by_study: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in store.studies()}
    for run in store.runs(study):
        run = {**run, "status": _shown_status(run, now)}
        by_study.setdefault(run["study"], []).append({k: run[k] for k in RUN_FIELDS})
    out = []
    for name, runs in by_study.items():
        if study is not None and name != study:
            continue
        counts = {s: 0 for s in (*STATUSES, "stale")}
        for r in runs:
            counts[r["status"]] += 1
        accs = [r["test_acc"] for r in runs if r["status"] == "complete" and r["test_acc"] is not None]
        stamps = [t for r in runs for t in (r["ended_at"], r["heartbeat_at"], r["started_at"]) if t]
        out.append({
            "name": name,
            "counts": counts,
            "total": len(runs),
            "best_test_acc": max(accs) if accs else None,
            "last_update": max(stamps) if stamps else None,
            "runs": runs,
        })
    return out
