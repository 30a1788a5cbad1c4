"""Runs and metrics as pandas DataFrames: what figures, reports and notebooks read.

    from ablate import results
    runs = results.runs(study="depth")          # one row per run, config as dotted columns
    curves = results.metrics(study="depth", names=["test_acc"])
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ablate.config import flatten
from ablate.store import Store

RUN_COLUMNS = [
    "run_id", "study", "status", "seed", "config_hash", "label", "epochs_done",
    "test_acc", "test_loss", "train_acc", "train_loss", "wall_s", "device",
    "started_at", "ended_at", "error",
]
METRIC_COLUMNS = ["run_id", "step", "name", "value"]


def _with_store(db: str | Store | None):
    if isinstance(db, Store):
        return db, False
    return Store.open(db, create=False), True


def runs_frame(store: Store, study: str | None = None) -> pd.DataFrame:
    rows = []
    for r in store.runs(study):
        row = {c: r.get("id" if c == "run_id" else c) for c in RUN_COLUMNS}
        row.update(flatten(r["config"]))
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame if rows else pd.DataFrame(columns=RUN_COLUMNS)


def metrics_frame(store: Store, run_ids: Iterable[int], names: Iterable[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(store.metrics(run_ids, names), columns=METRIC_COLUMNS)


def artifacts_map(store: Store, run_ids: Iterable[int]) -> dict[int, dict[str, np.ndarray]]:
    """run_id -> name -> array, for the small arrays runs keep (first-layer kernels, say)."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for run_id, name, data, dtype, shape in store.artifacts(run_ids):
        out.setdefault(run_id, {})[name] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return out


def runs(db: str | Store | None = None, study: str | None = None) -> pd.DataFrame:
    """One row per run: status, seed, final metrics (``test_acc`` a fraction) and config columns."""
    store, close = _with_store(db)
    try:
        return runs_frame(store, study)
    finally:
        if close:
            store.close()


def metrics(db: str | Store | None = None, study: str | None = None, names: Iterable[str] | None = None) -> pd.DataFrame:
    """The long per-epoch table (run_id, step, name, value) of a study's runs."""
    store, close = _with_store(db)
    try:
        ids = [r["id"] for r in store.runs(study)]
        return metrics_frame(store, ids, names)
    finally:
        if close:
            store.close()
