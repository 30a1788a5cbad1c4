"""``ablate compare`` as a Python function: is a variant's difference from the baseline real?

Runs are paired, not pooled: a variant's run is set against the baseline's run with the same
seed and the same value on every other config key (the other axes, epochs, ...), so seed to
seed variation, which is often larger than the effect, cancels. Over those pairs: the mean
difference, its 95% Student-t interval and the paired t-test's p-value. Pairs from different
points of the other axes are pooled; ``n`` counts them.

    from ablate.compare import compare
    c = compare("resblock", by="model.block", db="results.db")
    [r.value for r in c.rows if r.significant]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ablate import stats
from ablate import metrics as metrics_
from ablate.config import ConfigError, flatten, parse_value
from ablate.results import _with_store, check_study, study_runs, with_derived
from ablate.store import Store
from ablate.variants import RESULTS, Variant, is_config_column

ALPHA = 0.05
TOO_FEW = "a comparison needs at least two pairs of runs matched by seed"


@dataclass
class Row:
    """One variant against the baseline, over the ``n`` pairs they share."""

    value: str
    n: int
    mean: float | None = None  # the variant's mean over the pairs
    baseline_mean: float | None = None  # the baseline's, over the same pairs
    mean_diff: float | None = None  # variant minus baseline; with n == 1 the one difference
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    note: str | None = None  # why there is no test: fewer than two pairs

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


@dataclass
class Comparison:
    study: str
    axis: str
    metric: str
    baseline: str | None  # None: no value of the axis has finished runs
    values: list[str]  # the values with finished runs, baseline included, in study order
    rows: list[Row] = field(default_factory=list)
    variant: str | None = None  # the variant compared (its key and how it departs from the base)

    @property
    def tested(self) -> bool:
        """Whether any variant has the two pairs a test needs."""
        return any(r.p is not None for r in self.rows)

    @property
    def significant(self) -> list[Row]:
        return [r for r in self.rows if r.significant]

    def to_dict(self) -> dict[str, Any]:
        rows = [{**asdict(r), "significant": r.significant} for r in self.rows]
        return {"study": self.study, "variant": self.variant, "axis": self.axis, "metric": self.metric,
                "baseline": self.baseline, "alpha": ALPHA, "level": 0.95, "values": self.values, "comparisons": rows}


# --------------------------------------------------------------------- axis values


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def value_labels(values: list[Any]) -> list[str]:
    """How the axis's values are named on the command line and in the output.

    A scalar by itself; a table by its ``name`` where every table has a different one (an
    axis of optimizers), else by its keys, ``crop_padding=4,flip=True`` (``{}`` is empty).
    """
    tables = [v for v in values if isinstance(v, dict)]
    names = [v.get("name") for v in tables]
    by_name = tables and None not in names and len(set(names)) == len(names)
    labels = []
    for v in values:
        if isinstance(v, dict):
            label = str(v["name"]) if by_name else (_short(v)[1:-1] or "{}")
        else:
            label = _short(v)
        labels.append(label if label not in labels else f"{label} ({len(labels) + 1})")
    return labels


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a: Any, b: Any) -> bool:
    # bool is an int to Python: True must not match an axis value of 1
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _match(variant: dict[str, Any], axis: str, values: list[Any], labels: list[str]) -> str | None:
    """The label of the study value a run's config was made from: of the values whose every
    key the config holds, the one that sets the most keys (``{}`` matches any table)."""
    best, best_len = None, -1
    for value, label in zip(values, labels):
        expected = flatten({axis: value})
        if len(expected) > best_len and all(_same(variant.get(k), v) for k, v in expected.items()):
            best, best_len = label, len(expected)
    return best


def _cell(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


# --------------------------------------------------------------------- comparing


def compare_frame(
    runs: pd.DataFrame,
    axis: str,
    values: list[Any],
    baseline: str | None = None,
    metric: str = "test_acc",
    study: str = "",
) -> Comparison:
    """Compare the values of ``axis`` in a runs frame (``results.runs``) against the baseline.

    ``values`` are the axis's values as the study file lists them; ``baseline`` is one of
    their labels (:func:`value_labels`), a scalar value as typed (``3``, ``0.1``), or None
    for the first value with complete runs.
    """
    metrics_.check(metric)
    if not runs.empty and metric not in runs.columns:
        raise ConfigError(f"the runs frame has no '{metric}' column (results.with_derived adds derived metrics)")
    # Diverged runs count where they have the metric (``diverged`` itself), like complete ones.
    done = runs[runs["status"].isin(RESULTS) & runs[metric].notna()] if not runs.empty else runs
    config = [c for c in runs.columns if is_config_column(c) and c != "seed"]
    mine = [c for c in config if c == axis or c.startswith(axis + ".")]
    rest = [c for c in config if c not in mine]
    labels = value_labels(values)

    # Each run is a variant (its config under the axis) at a point (the rest of its config)
    # and a seed; runs at one point and seed pair up.
    names: dict[tuple, str | None] = {}
    cells: dict[tuple, dict[tuple, list[float]]] = {}
    for run in done.to_dict("records"):
        run = {k: v.item() if isinstance(v, np.generic) else v for k, v in run.items()}
        own = {c: run[c] for c in mine if not _missing(run[c])}
        variant = tuple(sorted(own.items()))
        if variant not in names:
            names[variant] = _match(own, axis, values, labels)
        point = tuple((c, run[c]) for c in rest if not _missing(run[c]))
        cells.setdefault((point, run["seed"]), {}).setdefault(variant, []).append(float(run[metric]))
    # Two configs taken for one value (the study's base changed between them) stay apart.
    taken = [v for v in names.values() if v is not None]
    names = {k: None if taken.count(v) > 1 else v for k, v in names.items()}
    _name_unmatched(names, axis)
    cells = {k: {names[v]: sum(x) / len(x) for v, x in c.items()} for k, c in cells.items()}

    found = set(names.values())
    order = [lab for lab in labels if lab in found] + sorted(found - set(labels))
    result = Comparison(study, axis, metric, None, order)
    if not order:
        return result
    result.baseline = _pick(baseline, order, labels, values, axis) if baseline is not None else order[0]
    for value in order:
        if value != result.baseline:
            pairs = [(c[value], c[result.baseline]) for c in cells.values() if value in c and result.baseline in c]
            result.rows.append(_row(value, pairs))
    return result


def _name_unmatched(names: dict[tuple, str | None], axis: str) -> None:
    # Runs made from a value the study file no longer lists: name them by what sets them
    # apart, the value itself for a scalar axis.
    common = set.intersection(*(set(k) for k in names)) if names else set()
    for key in [k for k, v in names.items() if v is None]:
        own = [(c, v) for c, v in key if (c, v) not in common] or list(key)
        if len(own) == 1 and own[0][0] == axis:
            names[key] = _cell(own[0][1])
        else:
            names[key] = ",".join(f"{c[len(axis) + 1:]}={_cell(v)}" for c, v in own) or "{}"


def _pick(baseline: str, order: list[str], labels: list[str], values: list[Any], axis: str) -> str:
    if baseline in order:
        return baseline
    folded = {v.lower(): v for v in order}
    if baseline.lower() in folded:
        return folded[baseline.lower()]
    typed = parse_value(baseline)  # "3" for 3, "0.10" for 0.1, "true" for True
    for value, label in zip(values, labels):
        if not isinstance(value, (dict, list)) and _same(typed, value) and label in order:
            return label
    raise ConfigError(f"no complete runs with {axis} = '{baseline}' to compare against; "
                      f"values with runs: {', '.join(order)}")


def _row(value: str, pairs: list[tuple[float, float]]) -> Row:
    n = len(pairs)
    if n == 0:
        return Row(value, 0, note=TOO_FEW)
    mean = sum(a for a, _ in pairs) / n
    base = sum(b for _, b in pairs) / n
    diff, low, high, _, p = stats.paired([a - b for a, b in pairs])
    if n < 2:
        return Row(value, n, mean, base, diff, note=TOO_FEW)
    return Row(value, n, mean, base, diff, low, high, p)


def study_axes(store: Store, study: str) -> dict[str, list[Any]]:
    """The axes the study ran with, as recorded in the database (what ``ablate studies`` shows)."""
    check_study(store, study)
    spec = next(s["spec"] for s in store.studies() if s["name"] == study)
    return spec.get("axes", {}) or {}


def check_axis(axes: dict[str, list[Any]], study: str, by: str) -> None:
    if by not in axes:
        listed = f"its axes: {', '.join(axes)}" if axes else "it has no axes"
        raise ConfigError(f"study '{study}' has no axis '{by}'; {listed}")


def compare(
    study: str,
    by: str | None = None,
    db: str | Store | None = None,
    baseline: str | None = None,
    metric: str = "test_acc",
    variant: str | dict[str, Any] | None = None,
) -> Comparison:
    """``ablate compare``: each value of axis ``by`` of ``study`` against the baseline, within
    one variant of the study (``variant`` selects it as ``ablate.variants.select`` does; None:
    the default, the one with the most finished runs). ``by`` may be left out for a study
    of one axis."""
    metrics_.check(metric)
    store, close = _with_store(db)
    try:
        axes = study_axes(store, study)
        if by is None:
            if len(axes) != 1:
                listed = f"its axes: {', '.join(axes)}" if axes else "it has no axes"
                raise ConfigError(f"give --by AXIS: which axis of study '{study}' to compare; {listed}")
            (by,) = axes
        check_axis(axes, study, by)
        chosen = study_runs(store, study, variant)
        runs = with_derived(store, chosen.finished, [metric]) if chosen is not None else pd.DataFrame()
        result = compare_frame(runs, by, axes[by], baseline, metric, study)
        result.variant = _variant_text(chosen)
        return result
    finally:
        if close:
            store.close()


def _variant_text(v: Variant | None) -> str | None:
    return None if v is None else f"{v.key} ({v.describe()})"


def compare_axes(runs: pd.DataFrame, axes: dict[str, list[Any]], study: str = "") -> list[Comparison]:
    """Every axis with two or more values, each against its first value: the report's check."""
    return [compare_frame(runs, axis, values, study=study) for axis, values in axes.items() if len(values) > 1]
