"""Per-run numbers derived from what a run recorded, beside its final accuracy: what the
report's claims about convergence, smoothness and kernels are checked on, and what
``ablate compare --metric`` accepts.

Pure pandas: a runs frame, its long metrics frame and its artifacts in, one column per
derived number out. A run that did not record what a number needs gets NaN (and a claim
on it says so), never a guess.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

Artifacts = Mapping[int, Mapping[str, np.ndarray]]

LANDSCAPE = "landscape.x"  # probe metrics: the batch loss at w - m * lr * grad, one per multiple m
RELGRAD = "relgrad.conv"  # probe metrics: ||grad W|| / ||W|| of each conv layer (probes.grad_norm_every)
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
    "acc_drops": "the falls of test accuracy from one evaluated epoch to the next, added up: 0 for a curve "
    "that never falls, larger for an unsteady one",
    "grad_spread": "log10 of the largest over the smallest relative gradient norm of the conv layers, mean "
    "over the probed steps: 1 means one layer is pushed ten times harder than another "
    "(probes.grad_norm_every)",
    "grad_max": "log10 of the largest relative gradient norm of any conv layer at any probed step: "
    "explosion reads high (probes.grad_norm_every)",
    "grad_min": "log10 of the smallest relative gradient norm of any conv layer at any probed step: "
    "vanishing reads low (probes.grad_norm_every)",
}
# epochs_to_<P>: the first evaluated epoch whose test accuracy reaches P percent; a run that
# never does counts as epochs + 1, slower than any run that did (the number is censored there).
EPOCHS_TO = re.compile(r"^epochs_to_(\d{1,2}(?:\.\d+)?)$")
NEEDS_METRICS = {
    "epoch_time",
    "mean_test_acc",
    "early_test_acc",
    "landscape_range",
    "acc_drops",
    "grad_spread",
    "grad_max",
    "grad_min",
}
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


def _acc_drops(runs, metrics, artifacts) -> pd.Series:
    acc = _per_epoch(metrics, "test_acc").sort_values("step")
    falls = acc.groupby("run_id")["value"].diff().clip(upper=0)
    return (-falls).groupby(acc["run_id"]).sum()


def _relgrad_log10(metrics) -> pd.DataFrame:
    rows = metrics[metrics["name"].str.startswith(RELGRAD)]
    rows = rows[np.isfinite(rows["value"].astype(float)) & (rows["value"].astype(float) > 0)]
    return rows.assign(log=np.log10(rows["value"].astype(float)))


def _grad_spread(runs, metrics, artifacts) -> pd.Series:
    rows = _relgrad_log10(metrics)
    per_step = rows.groupby(["run_id", "step"])["log"].agg(lambda v: v.max() - v.min() if len(v) > 1 else np.nan)
    return per_step.groupby(level="run_id").mean()


def _grad_max(runs, metrics, artifacts) -> pd.Series:
    return _relgrad_log10(metrics).groupby("run_id")["log"].max()


def _grad_min(runs, metrics, artifacts) -> pd.Series:
    return _relgrad_log10(metrics).groupby("run_id")["log"].min()


def _epochs_to(target: float) -> Callable[..., pd.Series]:
    def reach(runs, metrics, artifacts) -> pd.Series:
        acc = _per_epoch(metrics, "test_acc")
        first = acc[acc["value"] >= target].groupby("run_id")["step"].min()
        ran = acc.groupby("run_id")["step"].max()  # runs with an accuracy curve
        epochs = runs.set_index("run_id")["epochs"].astype(float) if "epochs" in runs else ran
        never = epochs.reindex(ran.index).fillna(ran) + 1
        return first.reindex(ran.index).fillna(never).astype(float)

    return reach


_FUNCTIONS: dict[str, Callable[..., pd.Series]] = {
    "epoch_time": _epoch_time,
    "mean_test_acc": _mean_test_acc,
    "early_test_acc": _early_test_acc,
    "landscape_range": _landscape_range,
    "kernel_norm": _kernel_norm,
    "diverged": _diverged,
    "acc_drops": _acc_drops,
    "grad_spread": _grad_spread,
    "grad_max": _grad_max,
    "grad_min": _grad_min,
}
assert set(_FUNCTIONS) == set(DERIVED)
DISCRETE = {"diverged"}  # 0/1 per run: tested exactly, never by the normal approximation
# Metrics where less is better; "best" and "plateaus" read them that way round.
LOWER_IS_BETTER = {"test_loss", "train_loss", "wall_s", "epoch_time", "landscape_range", "diverged", "acc_drops"}


def is_derived(name: str) -> bool:
    return name in DERIVED or EPOCHS_TO.match(name) is not None


def describe(name: str) -> str:
    m = EPOCHS_TO.match(name)
    if m:
        return (
            f"the first evaluated epoch with test accuracy at or above {m.group(1)}%; a run that never "
            "gets there counts as its epochs + 1"
        )
    return DERIVED[name]


def lower_is_better(name: str) -> bool:
    from ablate.metrics import evaluated

    spec = evaluated(name)
    if spec is not None:
        return not spec.higher_is_better
    return name in LOWER_IS_BETTER or EPOCHS_TO.match(name) is not None


def needs_metrics(name: str) -> bool:
    return name in NEEDS_METRICS or EPOCHS_TO.match(name) is not None


def _function(name: str) -> Callable[..., pd.Series]:
    m = EPOCHS_TO.match(name)
    return _epochs_to(float(m.group(1)) / 100) if m else _FUNCTIONS[name]


def add(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts | None, names: Iterable[str]) -> pd.DataFrame:
    """``runs`` with a column for each derived number in ``names`` (NaN where a run lacks it);
    an evaluated metric (``ablate.metrics``) is its value at the run's last evaluated epoch."""
    out = runs.copy()
    for name in names:
        values = _function(name)(runs, metrics, artifacts) if is_derived(name) else _last(metrics, name)
        out[name] = out["run_id"].map(values).astype(float)
    return out


def _last(metrics: pd.DataFrame, name: str) -> pd.Series:
    rows = _per_epoch(metrics, name).sort_values("step")
    return rows.groupby("run_id")["value"].last()


def columns(names: Iterable[str]) -> list[str]:
    """Of ``names``, those ``add`` makes a column of: derived, and evaluated metrics."""
    from ablate.metrics import evaluated

    return [n for n in names if is_derived(n) or evaluated(n) is not None]


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
