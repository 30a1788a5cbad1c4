"""``ablate status`` as a Python function: per study, what ran, what runs, what failed.

It only reads, and in WAL mode a reader never blocks the runners writing beside it.
"""

from __future__ import annotations

from typing import Any

from ablate.config import get_key
from ablate.results import check_study, runs_frame, study_variants
from ablate.store import STATUSES, Store, stale_reason, this_host
from ablate.store.schema import utcnow
from ablate.variants import select

RUN_FIELDS = (
    "id",
    "status",
    "seed",
    "config_hash",
    "label",
    "config",
    "test_acc",
    "epochs_done",
    "device",
    "host",
    "pid",
    "started_at",
    "ended_at",
    "heartbeat_at",
    "wall_s",
    "error",
    "attempts",
    "notes",
    "stale_reason",
    "code_version",
)


def study_status(store: Store, study: str | None = None, variant: str | dict | None = None) -> list[dict[str, Any]]:
    """One entry per study: counts by status, the best test accuracy, the last update, the runs.

    A running run whose runner is gone (its process on this host no longer exists, or it
    stopped beating) is shown as ``stale``, with the reason; the next ``ablate run`` of its
    study re-queues it, to resume from its checkpoint. With ``study`` (which must be in the
    database), its entry also lists the ``points`` of one variant: the default, or the one
    ``variant`` selects (as ``ablate.variants.select`` takes it).
    """
    check_study(store, study)
    now, host = utcnow(), this_host()
    by_study: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in store.studies()}
    # Read once: the counts and the variants are of the same runs, while runners add more.
    read = store.runs(study)
    for run in read:
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
        found = study_variants(store, name, runs_frame(store, name, [r for r in read if r["study"] == name]))
        entry = {
            "name": name,
            "counts": counts,
            "total": len(runs),
            "best_test_acc": max(accs) if accs else None,
            "last_update": max(stamps) if stamps else None,
            "variants": _variants(found, runs),
            "runs": runs,
        }
        if study is not None:
            chosen = select(found, variant, name) if found else None
            entry["variant"] = chosen.key if chosen else None
            entry["axes"] = list(_axes(store, name))
            entry["points"] = _points(chosen, runs, entry["axes"]) if chosen else []
            entry["mixed_code"] = mixed_code(runs)
        out.append(entry)
    return out


def mixed_code(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs whose runs were trained by more than one version of the model's code
    (a built-in model's ablate upgraded between seeds, say): their seeds are not quite
    replicates. Runs recorded before code versions were (NULL) are left out."""
    by_config: dict[str, dict[str, Any]] = {}
    for r in runs:
        if r.get("code_version"):
            entry = by_config.setdefault(
                r["config_hash"], {"config_hash": r["config_hash"], "label": r["label"], "versions": {}}
            )
            entry["versions"][r["code_version"]] = entry["versions"].get(r["code_version"], 0) + 1
    return [e for e in by_config.values() if len(e["versions"]) > 1]


def _axes(store: Store, study: str) -> dict[str, Any]:
    spec = next((s["spec"] for s in store.studies() if s["name"] == study), {})
    return spec.get("axes") or {}


def _points(chosen, runs: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Each run of the variant: its value on each axis, seed, status (stale as shown),
    epochs done of its epochs, final test accuracy and wall time; in grid order."""
    mine = {int(i) for i in chosen.runs["run_id"]}
    out = []
    for r in runs:
        if r["id"] not in mine:
            continue
        values = {}
        for axis in axes:
            try:
                values[axis] = get_key(r["config"], axis)
            except (KeyError, IndexError, TypeError):
                values[axis] = None
        out.append(
            {
                "run_id": r["id"],
                "label": r["label"],
                "axes": values,
                "seed": r["seed"],
                "status": r["status"],
                "epochs_done": r["epochs_done"],
                "epochs": r["config"].get("epochs"),
                "test_acc": r["test_acc"],
                "wall_s": r["wall_s"],
            }
        )
    return out  # runs come oldest first: the grid's order, each point's seeds together


def _variants(found, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The study's variants, the one a report draws by default first, each with its counts
    (stale as status shows them)."""
    shown = {r["id"]: r["status"] for r in runs}
    out = []
    for i, v in enumerate(found):
        counts = {s: 0 for s in (*STATUSES, "stale")}
        for run_id in v.runs["run_id"]:
            counts[shown[int(run_id)]] += 1
        low, high = v.seeds()
        out.append(
            {
                "key": v.key,
                "default": i == 0,
                "differs": v.describe(data=True),
                "diff": v.diff,
                "data": v.data,
                "data_fp": v.data_fp,
                "points": v.points,
                "done_points": v.done_points,
                "seeds": [low, high],
                "counts": counts,
            }
        )
    return out
