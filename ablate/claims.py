"""The report's claims, checked with statistics against a study's runs.

A study file states the claims of the report that its grid can test, in the report's words,
each with a check over the study's variant:

    [[claims]]
    text = "the 3-convlayer CNN takes a huge leap, the accuracy quickly falls after that"
    section = "4.3"
    check = "best"            # best | worst | not_best | higher | lower | similar | steadier
    axis = "model.depth"
    value = 3

Every check is decided by paired comparisons, as ``ablate compare`` makes them: runs matched
by seed and by the study's other axes, the mean difference, its 95% Student-t interval and
the paired t-test. A claim is *supported* when the interval excludes the other side,
*contradicted* when it excludes the claim's side, and *inconclusive* otherwise, which is all
one seed per point can ever give (the direction is still reported). The checks:

- ``best`` / ``worst``: ``value`` (or each of a list of values) beats (loses to) every other
  value of ``axis``; contradicted when some other value beats (loses to) it.
- ``not_best``: some other value beats ``value``; contradicted when ``value`` beats them all.
- ``higher`` / ``lower``: ``value`` has a higher (lower) ``metric`` than ``than``.
- ``similar``: every listed ``value`` (default: every other value) lies within ``threshold``
  of ``than`` (default: the axis's first value), the whole interval inside; contradicted
  when an interval lies wholly outside. ``threshold`` is in percentage points for accuracies.
- ``steadier``: the spread (largest minus smallest) of ``metric`` over the values of the axis
  ``over`` is smaller with ``axis`` = ``value`` than with ``than``, paired by seed.

``metric`` is a final metric (test_acc, the default) or a derived one (``ablate.derived``:
mean_test_acc for convergence speed, landscape_range, kernel_norm, diverged, ...); ``where``
holds other axes at given values (``where = { model = "plain_cnn" }``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate import derived
from ablate import metrics as metrics_
from ablate.config import ConfigError, flatten

CHECKS = ("best", "worst", "not_best", "higher", "lower", "similar", "steadier")
KEYS = {"text", "section", "check", "axis", "value", "than", "metric", "threshold", "over", "where"}
VERDICTS = ("supported", "contradicted", "inconclusive", "not run")


@dataclass(frozen=True)
class Claim:
    text: str  # the report's words
    check: str
    axis: str
    value: Any = None  # a value of the axis (for best and worst: or a list of them)
    than: Any = None  # the value it is set against
    metric: str = "test_acc"
    threshold: float | None = None  # similar: the largest difference that counts as none
    over: str | None = None  # steadier: the axis the spread is taken over
    where: dict[str, Any] = field(default_factory=dict)  # other axes held at these values
    section: str = ""  # where the report says it

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("text", "section", "check", "axis", "value", "than", "metric",
                                           "threshold", "over", "where")}
        # Left out where they hold nothing; value and than may be the empty table ({}, no augmentation).
        return {k: v for k, v in d.items() if v is not None and not (k in ("section", "where") and not v)}


@dataclass
class Verdict:
    claim: Claim
    verdict: str  # one of VERDICTS
    check: str  # the check in words
    evidence: str  # the numbers behind the verdict
    why: str = ""  # what would settle an inconclusive or unrun claim
    study: str = ""


# ----------------------------------------------------------------------- parsing


def _values(axes: dict[str, list[Any]], axis: str) -> list[Any]:
    if axis not in axes:
        listed = ", ".join(axes) or "none"
        raise ConfigError(f"claim on unknown axis '{axis}'; the study's axes: {listed}")
    return axes[axis]


def label_of(values: list[Any], value: Any, axis: str) -> str:
    """The label ``ablate compare`` gives ``value`` of an axis with ``values``."""
    from ablate.compare import value_labels, _same

    labels = value_labels(values)
    for v, lab in zip(values, labels):
        if isinstance(value, dict) and v == value:
            return lab
        if isinstance(value, str) and value == lab:
            return lab
        if not isinstance(v, (dict, list)) and not isinstance(value, (dict, list)) and _same(v, value):
            return lab
    raise ConfigError(f"claim on '{axis}': {value!r} is not one of its values ({', '.join(labels)})")


def parse(item: dict[str, Any], axes: dict[str, list[Any]]) -> Claim:
    """One ``[[claims]]`` table, checked against the study's axes."""
    if not isinstance(item, dict):
        raise ConfigError(f"each [[claims]] entry is a table, got {item!r}")
    unknown = sorted(set(item) - KEYS)
    if unknown:
        raise ConfigError(f"unknown claim key '{unknown[0]}'; accepted: {', '.join(sorted(KEYS))}")
    for key in ("text", "check", "axis"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise ConfigError(f"a claim needs '{key}' (a string)")
    claim = Claim(**{k: v for k, v in item.items()})
    if claim.check not in CHECKS:
        raise ConfigError(f"claim check must be one of {', '.join(CHECKS)}, got {claim.check!r}")
    metrics_.check(claim.metric, "claim metric")
    values = _values(axes, claim.axis)
    named = claim.value if isinstance(claim.value, list) else [claim.value]
    if claim.check in ("best", "worst", "not_best", "higher", "lower", "steadier") and claim.value is None:
        raise ConfigError(f"a '{claim.check}' claim needs 'value'")
    if claim.check in ("higher", "lower", "steadier") and claim.than is None:
        raise ConfigError(f"a '{claim.check}' claim needs 'than'")
    if isinstance(claim.value, list) and claim.check not in ("best", "worst", "similar"):
        raise ConfigError(f"only best, worst and similar claims take a list of values, not '{claim.check}'")
    for v in (named if claim.value is not None else []) + ([claim.than] if claim.than is not None else []):
        label_of(values, v, claim.axis)
    if claim.check == "similar":
        if not isinstance(claim.threshold, (int, float)) or isinstance(claim.threshold, bool) or not claim.threshold > 0:
            raise ConfigError("a 'similar' claim needs 'threshold', a positive number (percentage points for accuracies)")
    elif claim.threshold is not None:
        raise ConfigError(f"'threshold' is for similar claims, not '{claim.check}'")
    if claim.check == "steadier":
        if claim.over is None or claim.over == claim.axis:
            raise ConfigError("a 'steadier' claim needs 'over', another axis of the study")
        if any(isinstance(v, (dict, list)) for v in _values(axes, claim.over) + values):
            raise ConfigError("a 'steadier' claim takes axes of single values, not tables")
    elif claim.over is not None:
        raise ConfigError(f"'over' is for steadier claims, not '{claim.check}'")
    if not isinstance(claim.where, dict):
        raise ConfigError("a claim's 'where' is a table of axis = value")
    for k, v in claim.where.items():
        if k in (claim.axis, claim.over):
            raise ConfigError(f"a claim's 'where' holds other axes, not '{k}'")
        label_of(_values(axes, k), v, k)
    return claim


def parse_all(items: Any, axes: dict[str, list[Any]]) -> tuple[Claim, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError("claims must be an array of tables ([[claims]])")
    out = []
    for i, item in enumerate(items, 1):
        try:
            out.append(parse(item, axes))
        except ConfigError as e:
            raise ConfigError(f"claim {i}: {e}") from None
    return tuple(out)


# --------------------------------------------------------------------- checking


def _where(runs: pd.DataFrame, claim: Claim, axes: dict[str, list[Any]]) -> pd.DataFrame:
    """The runs with each axis of ``claim.where`` at its value."""
    from ablate.compare import _same, value_labels

    for axis, wanted in claim.where.items():
        values = axes[axis]
        value = values[value_labels(values).index(label_of(values, wanted, axis))]
        for column, v in flatten({axis: value}).items():
            if column not in runs.columns:
                return runs.iloc[0:0]
            runs = runs[runs[column].map(lambda x, v=v: _same(x.item() if hasattr(x, "item") else x, v))]
    return runs


def _names(claim: Claim, axes) -> tuple[list[str], str | None]:
    values = axes[claim.axis]
    named = claim.value if isinstance(claim.value, list) else ([] if claim.value is None else [claim.value])
    than = label_of(values, claim.than, claim.axis) if claim.than is not None else None
    return [label_of(values, v, claim.axis) for v in named], than


def describe(claim: Claim, axes: dict[str, list[Any]]) -> str:
    """The check in words."""
    named, than = _names(claim, axes)
    a, m = f"`{claim.axis}`", claim.metric
    one = " and ".join(named)
    where = "".join(f", with `{k}` = {v}" for k, v in claim.where.items())
    if claim.check in ("best", "worst"):
        word = "highest" if claim.check == "best" else "lowest"
        if len(named) > 1:
            verb = "each beat" if claim.check == "best" else "each lose to"
            return f"{a} = {one} have the {word} {m}: {verb} every other value{where}"
        verb = "beats" if claim.check == "best" else "loses to"
        return f"{a} = {one} has the {word} {m}: it {verb} every other value{where}"
    if claim.check == "not_best":
        return f"{a} = {one} does not have the highest {m}: some other value beats it{where}"
    if claim.check in ("higher", "lower"):
        return f"{a} = {one} gives a {claim.check} {m} than {than}{where}"
    if claim.check == "similar":
        base = than or _first_label(axes[claim.axis])
        scale = " pp" if derived.is_accuracy(m) else ""
        which = one or "every other value"
        return f"{m} of {a} = {which} lies within ±{claim.threshold:g}{scale} of {base}{where}"
    return f"the spread of {m} over `{claim.over}` is smaller with {a} = {one} than with {than}{where}"


def _first_label(values: list[Any]) -> str:
    from ablate.compare import value_labels

    return value_labels(values)[0]


def _row_text(metric: str, value: str, row, against: str) -> str:
    ci = "" if row.ci_low is None else f", 95% CI {derived.fmt(metric, row.ci_low, True)} to " \
                                      f"{derived.fmt(metric, row.ci_high, True)}, p {_p(row.p)}"
    return f"{value} vs {against}: {derived.fmt(metric, row.mean_diff, True)} (n = {row.n}{ci})"


def _p(p: float | None) -> str:
    return "-" if p is None else "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _above(row) -> bool:  # the row's value beats the baseline, at p < 0.05
    return row.ci_low is not None and row.ci_low > 0


def _below(row) -> bool:
    return row.ci_high is not None and row.ci_high < 0


def _untested(rows) -> bool:
    return any(r.p is None for r in rows)


def evaluate(claim: Claim, runs: pd.DataFrame, axes: dict[str, list[Any]], study: str = "",
             more_seeds: str = "") -> Verdict:
    """``claim`` over ``runs``: one variant's runs, with ``claim.metric`` as a column.
    ``more_seeds`` is the command that would add seeds to them, for an untested verdict."""
    verdict = _evaluate(claim, runs, axes, study, more_seeds or f"ablate run {study or 'STUDY'} --seeds 3")
    verdict.study = study
    return verdict


def _evaluate(claim: Claim, runs: pd.DataFrame, axes: dict[str, list[Any]], study: str, more_seeds: str) -> Verdict:
    from ablate.compare import compare_frame

    check = describe(claim, axes)
    metric = claim.metric
    runs = _where(runs, claim, axes)
    named, than = _names(claim, axes)
    seeds_hint = f"needs 2+ seeds per point: `{more_seeds}`"
    if runs.empty or metric not in runs.columns or runs[metric].notna().sum() == 0:
        why = f"no finished run records {metric}" + (f" ({derived.DERIVED[metric]})" if metric in derived.DERIVED else "")
        return Verdict(claim, "not run", check, "-", f"{why}: ablate run {study}".rstrip(": "))
    if claim.check == "steadier":
        return _steadier(claim, runs, axes, check, seeds_hint)
    values = axes[claim.axis]

    def against(label: str):
        """Every value of the axis against ``label``; None if ``label`` has no finished runs."""
        try:
            return compare_frame(runs, claim.axis, values, label, metric, study)
        except ConfigError:
            return None

    missing = [v for v in named + ([than] if than else []) if against(v) is None]
    if missing:
        return Verdict(claim, "not run", check, "-", f"no finished runs with {claim.axis} = {', '.join(missing)}")

    if claim.check in ("best", "worst", "not_best"):
        rows = []  # (named value, row of another value against it)
        for x in named:
            comp = against(x)
            rows += [(x, r) for r in comp.rows if r.value not in named]
        if not rows:
            return Verdict(claim, "not run", check, "-", f"no other value of {claim.axis} has finished runs")
        wins = _below if claim.check in ("best", "not_best") else _above  # the other value is worse (better)
        losses = _above if claim.check in ("best", "not_best") else _below
        # The closest rival: the row nearest to, or past, the claim's side.
        sign = 1 if claim.check in ("best", "not_best") else -1
        x, closest = max(rows, key=lambda xr: sign * (xr[1].mean_diff if xr[1].mean_diff is not None else -1e9))
        evidence = (f"{x}: {derived.fmt(metric, closest.baseline_mean)}; closest: "
                    + _row_text(metric, closest.value, closest, x) + f"; {len(rows)} comparison(s)")
        if claim.check == "not_best":
            if any(_above(r) for _, r in rows):
                return Verdict(claim, "supported", check, evidence)
            if all(_below(r) for _, r in rows):
                return Verdict(claim, "contradicted", check, evidence)
        else:
            if all(wins(r) for _, r in rows):
                return Verdict(claim, "supported", check, evidence)
            if any(losses(r) for _, r in rows):
                return Verdict(claim, "contradicted", check, evidence)
        direction = all(r.mean_diff is not None and sign * r.mean_diff < 0 for _, r in rows)
        if claim.check == "not_best":
            direction = not direction
        return _inconclusive(claim, check, evidence, [r for _, r in rows], direction, seeds_hint)

    if claim.check in ("higher", "lower"):
        (row,) = [r for r in against(than).rows if r.value == named[0]]
        evidence = (f"{named[0]}: {derived.fmt(metric, row.mean)}, {than}: {derived.fmt(metric, row.baseline_mean)}; "
                    + _row_text(metric, named[0], row, than))
        good, bad = (_above, _below) if claim.check == "higher" else (_below, _above)
        if good(row):
            return Verdict(claim, "supported", check, evidence)
        if bad(row):
            return Verdict(claim, "contradicted", check, evidence)
        sign = 1 if claim.check == "higher" else -1
        return _inconclusive(claim, check, evidence, [row], row.mean_diff is not None and sign * row.mean_diff > 0,
                             seeds_hint)

    # similar
    base = than or _first_label(values)
    comp = against(base)
    rows = [r for r in comp.rows if not named or r.value in named]
    if not rows:
        return Verdict(claim, "not run", check, "-", f"no value to set against {base} has finished runs")
    t = claim.threshold / 100 if derived.is_accuracy(metric) else claim.threshold
    widest = max(rows, key=lambda r: abs(r.mean_diff) if r.mean_diff is not None else -1.0)
    evidence = "largest difference: " + _row_text(metric, widest.value, widest, base) + f"; {len(rows)} value(s)"
    inside = [r.ci_low is not None and -t < r.ci_low and r.ci_high < t for r in rows]
    outside = [r.ci_low is not None and (r.ci_low > t or r.ci_high < -t) for r in rows]
    if all(inside):
        return Verdict(claim, "supported", check, evidence)
    if any(outside):
        return Verdict(claim, "contradicted", check, evidence)
    return _inconclusive(claim, check, evidence, rows, all(r.mean_diff is not None and abs(r.mean_diff) < t for r in rows),
                         seeds_hint)


def _inconclusive(claim, check, evidence, rows, direction: bool, seeds_hint: str) -> Verdict:
    if _untested(rows):
        n = min(r.n for r in rows)
        return Verdict(claim, "inconclusive", check, f"{evidence}; the direction {'agrees' if direction else 'disagrees'}",
                       f"n = {n} per comparison: {seeds_hint}")
    return Verdict(claim, "inconclusive", check, evidence, "the 95% intervals include both sides: more seeds would narrow them")


def _steadier(claim: Claim, runs: pd.DataFrame, axes, check: str, seeds_hint: str) -> Verdict:
    from ablate import stats
    from ablate.compare import _same

    others = [a for a in axes if a not in (claim.axis, claim.over) and a in runs.columns]
    metric = claim.metric

    def spreads(value) -> pd.Series:
        side = runs[runs[claim.axis].map(lambda x: _same(x.item() if hasattr(x, "item") else x, value))]
        side = side[side[metric].notna()]
        g = side.groupby(["seed", *others], dropna=False)
        full = g[claim.over].nunique() == len(axes[claim.over])  # every value of `over` finished
        spread = g[metric].max() - g[metric].min()
        return spread[full]

    mine, theirs = spreads(claim.value), spreads(claim.than)
    both = mine.index.intersection(theirs.index)
    if not len(both):
        return Verdict(claim, "not run", check, "-",
                       f"needs every value of {claim.over} finished on both sides, for the same seeds")
    diffs = (mine[both] - theirs[both]).to_numpy()
    mean, low, high, n, p = stats.paired(diffs)
    evidence = (f"spread {derived.fmt(metric, float(mine[both].mean()))} with {claim.value}, "
                f"{derived.fmt(metric, float(theirs[both].mean()))} with {claim.than}: "
                f"{derived.fmt(metric, mean, True)} (n = {n}"
                + ("" if n < 2 else f", 95% CI {derived.fmt(metric, low, True)} to {derived.fmt(metric, high, True)}, "
                                    f"p {_p(p)}") + ")")
    if n >= 2 and high < 0:
        return Verdict(claim, "supported", check, evidence)
    if n >= 2 and low > 0:
        return Verdict(claim, "contradicted", check, evidence)
    if n < 2:
        return Verdict(claim, "inconclusive", check, f"{evidence}; the direction {'agrees' if mean < 0 else 'disagrees'}",
                       f"n = {n}: {seeds_hint}")
    return Verdict(claim, "inconclusive", check, evidence, "the 95% interval includes both sides: more seeds would narrow it")
