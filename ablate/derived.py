"""Per-run numbers derived from what a run recorded, beside its final accuracy: what the
report's claims about convergence, smoothness and kernels are checked on, and what
``ablate compare --metric`` accepts.

Pure pandas: a runs frame, its long metrics frame and its artifacts in, one column per
derived number out. A run that did not record what a number needs gets NaN (and a claim
on it says so), never a guess.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

Artifacts = Mapping[int, Mapping[str, np.ndarray]]

LANDSCAPE = "landscape.x"  # probe metrics: the batch loss at w - m * lr * grad, one per multiple m
KERNELS = "kernels.conv1"  # the artifact holding the first conv layer's weights, [out, 3, k, k]
EARLY = 0.25  # "early" is the first evaluated epoch at or after this fraction of training

DERIVED = {
    "epoch_time": "seconds per training epoch, mean over the run's epochs",
    "mean_test_acc": "test accuracy averaged over the evaluated epochs: the area under the convergence "
                     "curve, higher for a run that gets there sooner",
    "early_test_acc": "test accuracy at the first evaluated epoch at or after a quarter of training",
    "landscape_range": "batch loss along the gradient, largest minus smallest over the step sizes tried, "
                       "averaged over the probed steps: lower is a smoother landscape (probes.landscape_every)",
    "kernel_norm": "L2 norm of the first-layer kernels, mean over the kernels (probes.kernels)",
    "diverged": "1 for a run that diverged, 0 for one that completed",
}
NEEDS_METRICS = {"epoch_time", "mean_test_acc", "early_test_acc", "landscape_range"}
NEEDS_ARTIFACTS = {"kernel_norm"}


def _per_epoch(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    return metrics[metrics["name"] == name]


def _epoch_time(runs, metrics, artifacts) -> pd.Series:
    return _per_epoch(metrics, "epoch_time").groupby("run_id")["value"].mean()


def _mean_test_acc(runs, metrics, artifacts) -> pd.Series:
    return _per_epoch(metrics, "test_acc").groupby("run_id")["value"].mean()


def _early_test_acc(runs, metrics, artifacts) -> pd.Series:
    acc = _per_epoch(metrics, "test_acc").merge(runs[["run_id", "epochs"]], on="run_id")
    acc = acc[acc["step"] >= np.ceil(EARLY * acc["epochs"].astype(float))]
    first = acc.sort_values("step").groupby("run_id").head(1)
    return first.set_index("run_id")["value"]


def _landscape_range(runs, metrics, artifacts) -> pd.Series:
    rows = metrics[metrics["name"].str.startswith(LANDSCAPE) & np.isfinite(metrics["value"].astype(float))]
    spread = rows.groupby(["run_id", "step"])["value"].agg(lambda v: v.max() - v.min())
    return spread.groupby(level="run_id").mean()


def _kernel_norm(runs, metrics, artifacts) -> pd.Series:
    out = {}
    for run_id, arrays in (artifacts or {}).items():
        w = arrays.get(KERNELS)
        if w is not None and w.ndim == 4:
            out[run_id] = float(np.linalg.norm(w.reshape(len(w), -1).astype(np.float64), axis=1).mean())
    return pd.Series(out, dtype=float)


def _diverged(runs, metrics, artifacts) -> pd.Series:
    return pd.Series((runs["status"] == "diverged").astype(float).to_numpy(), index=runs["run_id"])


_FUNCTIONS: dict[str, Callable[..., pd.Series]] = {
    "epoch_time": _epoch_time,
    "mean_test_acc": _mean_test_acc,
    "early_test_acc": _early_test_acc,
    "landscape_range": _landscape_range,
    "kernel_norm": _kernel_norm,
    "diverged": _diverged,
}
assert set(_FUNCTIONS) == set(DERIVED)


def add(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts | None, names: Iterable[str]) -> pd.DataFrame:
    """``runs`` with a column for each derived number in ``names`` (NaN where a run lacks it);
    an evaluated metric (``ablate.metrics``) is its value at the run's last evaluated epoch."""
    out = runs.copy()
    for name in names:
        values = _FUNCTIONS[name](runs, metrics, artifacts) if name in _FUNCTIONS else _last(metrics, name)
        out[name] = out["run_id"].map(values).astype(float)
    return out


def _last(metrics: pd.DataFrame, name: str) -> pd.Series:
    rows = _per_epoch(metrics, name).sort_values("step")
    return rows.groupby("run_id")["value"].last()


def columns(names: Iterable[str]) -> list[str]:
    """Of ``names``, those ``add`` makes a column of: derived, and evaluated metrics."""
    from ablate.metrics import evaluated

    return [n for n in names if n in DERIVED or evaluated(n) is not None]


def is_accuracy(metric: str) -> bool:
    """Accuracies are fractions, and their differences read in percentage points."""
    return metric.endswith("_acc")


def fmt(metric: str, value: float | None, signed: bool = False) -> str:
    """A metric's value as the report writes it: accuracies in percent (points when signed)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if is_accuracy(metric):
        return f"{100 * value:+.2f} pp" if signed else f"{100 * value:.2f}%"
    return f"{value:+.4g}" if signed else f"{value:.4g}"
