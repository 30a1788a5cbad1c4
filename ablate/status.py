"""``ablate status`` as a Python function: per study, what ran, what runs, what failed.

It only reads, and in WAL mode a reader never blocks the runners writing beside it.
"""

from __future__ import annotations

from typing import Any

from ablate.results import runs_frame, study_variants
from ablate.store import STATUSES, Store, stale_reason, this_host
from ablate.store.schema import utcnow

RUN_FIELDS = (
    "id", "status", "seed", "config_hash", "label", "config", "test_acc", "epochs_done",
    "device", "host", "pid", "started_at", "ended_at", "heartbeat_at", "wall_s", "error",
    "attempts", "notes", "stale_reason",
)


def study_status(store: Store, study: str | None = None) -> list[dict[str, Any]]:
    """One entry per study: counts by status, the best test accuracy, the last update, the runs.

    A running run whose runner is gone (its process on this host no longer exists, or it
    stopped beating) is shown as ``stale``, with the reason; the next ``ablate run`` of its
    study re-queues it, to resume from its checkpoint.
    """
    now, host = utcnow(), this_host()
    by_study: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in store.studies()}
    for run in store.runs(study):
        reason = stale_reason(run, now, host)
        run = {**run, "status": "stale" if reason else run["status"], "stale_reason": reason}
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
            "variants": _variants(store, name, runs),
            "runs": runs,
        })
    return out


def _variants(store: Store, study: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The study's variants, the one a report draws by default first, each with its counts
    (stale as status shows them)."""
    shown = {r["id"]: r["status"] for r in runs}
    out = []
    for i, v in enumerate(study_variants(store, study, runs_frame(store, study))):
        counts = {s: 0 for s in (*STATUSES, "stale")}
        for run_id in v.runs["run_id"]:
            counts[shown[int(run_id)]] += 1
        low, high = v.seeds()
        out.append({"key": v.key, "default": i == 0, "differs": v.describe(data=True), "diff": v.diff, "data": v.data,
                     "data_fp": v.data_fp, "points": v.points, "done_points": v.done_points,
                     "seeds": [low, high], "counts": counts})
    return out
