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

from ablate import derived, stats
from ablate import metrics as metrics_
from ablate.config import ConfigError, flatten, parse_value
from ablate.hints import left_out, run_command
from ablate.results import _with_store, check_study, study_runs, with_derived
from ablate.store import Store
from ablate.variants import RESULTS, Variant, is_config_column

ALPHA = 0.05
TOO_FEW = "a comparison needs runs of at least two seeds on both sides"


@dataclass
class Row:
    """One variant against the baseline. The seed is the unit: the pairs (runs matched by seed
    and by every other config key) of one seed are averaged over the blocks (points of the
    study's other axes) first, and ``n`` counts seeds, not pairs."""

    value: str
    n: int  # seeds with at least one pair
    mean: float | None = None  # the variant's mean over the pairs
    baseline_mean: float | None = None  # the baseline's, over the same pairs
    mean_diff: float | None = None  # variant minus baseline, mean over seeds; with n == 1 that seed's
    ci_low: float | None = None  # 95% Student-t interval of mean_diff (None under 2 seeds or no spread)
    ci_high: float | None = None
    p: float | None = None  # two-sided, uncorrected
    note: str | None = None  # why there is no test: fewer than two seeds
    blocks: int = 0  # points of the other axes the pairs come from
    block_axes: list[str] = field(default_factory=list)  # the axes that set those points apart
    agree: int = 0  # blocks whose difference (mean over seeds) has the sign of mean_diff
    test: str | None = None  # "paired t" or "exact sign-flip"
    floor: float | None = None  # the smallest p this many seeds can give with that test
    p_holm: float | None = None  # p adjusted by Holm over the comparison's rows
    seed_diffs: list[float] = field(default_factory=list)  # one per seed: what the test is over
    block_diffs: list[float] = field(default_factory=list)  # one per block, mean over seeds

    @property
    def significant(self) -> bool:
        """Differs at 0.05 after Holm's correction for the values compared."""
        p = self.p_holm if self.p_holm is not None else self.p
        return p is not None and p < ALPHA

    def design(self) -> str:
        return stats.design(self.n, self.blocks, self.block_axes)


@dataclass
class Comparison:
    study: str
    axis: str
    metric: str
    baseline: str | None  # None: no value of the axis has finished runs
    values: list[str]  # the values with finished runs, baseline included, in study order
    rows: list[Row] = field(default_factory=list)
    variant: str | None = None  # the variant compared (its key and how it departs from the base)
    left_out: dict[str, int] = field(default_factory=dict)  # runs of the variant not compared, by why
    hint: str = ""  # the command that adds what the comparison lacks ("" where rerunning cannot help)

    @property
    def tested(self) -> bool:
        """Whether any variant has the two pairs a test needs."""
        return any(r.p is not None for r in self.rows)

    @property
    def significant(self) -> list[Row]:
        return [r for r in self.rows if r.significant]

    def to_dict(self) -> dict[str, Any]:
        rows = [{**asdict(r), "significant": r.significant} for r in self.rows]
        return {
            "study": self.study,
            "variant": self.variant,
            "axis": self.axis,
            "metric": self.metric,
            "baseline": self.baseline,
            "alpha": ALPHA,
            "level": 0.95,
            "values": self.values,
            "comparisons": rows,
            "left_out": self.left_out,
            "hint": self.hint,
        }


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
    exact = metric in derived.DISCRETE
    for value in order:
        if value != result.baseline:
            pairs = [
                (point, seed, c[value], c[result.baseline])
                for (point, seed), c in cells.items()
                if value in c and result.baseline in c
            ]
            result.rows.append(_row(value, pairs, exact))
    for row, p in zip(result.rows, stats.holm([np.nan if r.p is None else r.p for r in result.rows])):
        row.p_holm = None if math.isnan(p) else p
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
            names[key] = ",".join(f"{c[len(axis) + 1 :]}={_cell(v)}" for c, v in own) or "{}"


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
    raise ConfigError(
        f"no complete runs with {axis} = '{baseline}' to compare against; values with runs: {', '.join(order)}"
    )


def _row(value: str, pairs: list[tuple[tuple, Any, float, float]], exact: bool = False) -> Row:
    """``pairs``: (point of the other axes, seed, variant's value, baseline's value)."""
    if not pairs:
        return Row(value, 0, note=TOO_FEW)
    frame = pd.DataFrame(pairs, columns=["point", "seed", "a", "b"])
    frame["d"] = frame["a"] - frame["b"]
    per_seed = frame.groupby("seed", sort=True)["d"].mean()
    per_block = frame.groupby("point", sort=False)["d"].mean()
    t = stats.paired_test(per_seed.to_numpy(), exact=exact)
    varying = [
        c
        for c in dict.fromkeys(c for point in per_block.index for c, _ in point)
        if len({dict(point).get(c) for point in per_block.index}) > 1
    ]
    sign = np.sign(t.mean)
    row = Row(
        value,
        t.n,
        float(frame["a"].mean()),
        float(frame["b"].mean()),
        t.mean,
        blocks=len(per_block),
        block_axes=varying,
        agree=int((np.sign(per_block.to_numpy()) == sign).sum()) if sign else 0,
        seed_diffs=[float(x) for x in per_seed],
        block_diffs=[float(x) for x in per_block],
    )
    if t.n < 2:
        row.note = TOO_FEW
        return row
    row.ci_low = None if math.isnan(t.low) else t.low
    row.ci_high = None if math.isnan(t.high) else t.high
    row.p, row.test, row.floor = t.p, t.test, t.floor
    return row


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
        if chosen is not None:
            unsettled = chosen.runs[~chosen.runs["status"].isin(RESULTS)]
            result.left_out = left_out(pd.concat([runs, unsettled], ignore_index=True), metric)
        result.hint = _hint(result, chosen, store.url, study)
        return result
    finally:
        if close:
            store.close()


def _hint(result: Comparison, chosen: Variant | None, db: str, study: str) -> str:
    """What to run for a comparison that lacks runs: the variant's options, its database,
    --retry-failed for failed runs; nothing where every finished run diverged, as a rerun of
    the same settings trains nothing."""
    failed = chosen is not None and bool((chosen.runs["status"] == "failed").any())
    if result.baseline is None:
        if chosen is not None and not chosen.finished.empty and not failed:
            return ""  # finished, and none with the metric: diverged runs
        return run_command(study, chosen, db, retry_failed=failed)
    if not result.tested:
        return run_command(study, chosen, db, seeds=3, retry_failed=failed)
    return ""


def _variant_text(v: Variant | None) -> str | None:
    return None if v is None else f"{v.key} ({v.describe()})"


def compare_axes(runs: pd.DataFrame, axes: dict[str, list[Any]], study: str = "") -> list[Comparison]:
    """Every axis with two or more values, each against its first value: the report's check."""
    return [compare_frame(runs, axis, values, study=study) for axis, values in axes.items() if len(values) > 1]
