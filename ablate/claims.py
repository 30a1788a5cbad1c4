"""The report's claims, checked with statistics against a study's runs.

A study file states the claims of the report that its grid can test, in the report's words,
each with a check over the study's variant:

    [[claims]]
    text = "the accuracy quickly fall after that"
    section = "4.3"
    check = "higher"          # see CHECKS
    axis = "model.depth"
    value = 3
    than = [4, 5, 6, 7, 8]

How a verdict is reached (the README's "How claims are decided" says the same):

- The seed is the unit of replication. Runs are paired by seed and by the study's other axes
  (blocks); within a seed the differences of its blocks are averaged, and the test is over
  the per-seed differences, so ``n`` counts seeds. Blocks share their seed's data order and
  augmentation draws, so they are not independent replicates and never add to ``n``.
- The test is Student's paired t-test, except where the normal approximation fails: for a 0/1
  metric (``diverged``) and for differences with no spread, the exact sign-flip test (which is
  the exact sign test, McNemar's, for paired 0/1 outcomes). It can never give p = 0: with n
  seeds its smallest two-sided p is 2 / 2**n.
- A claim over several comparisons (best, worst, not_best, similar, no_better, no_worse,
  plateaus, a list in higher or lower) is a family: its p-values are adjusted by Holm.
- Supported: the (adjusted) p of the claim's side is below 0.05, that is the 95% interval
  lies on the claim's side of its boundary (0, a margin, a ratio); for a claim that needs
  every comparison, all of them. Contradicted: the same on the other side. Otherwise
  inconclusive, which is all one seed per point can be: then the direction is said, and
  whether every block agrees with it.

The checks (``metric`` is read with its direction: for a loss or a time, lower is better):

- ``best`` / ``worst``: ``value`` (or each of a list) beats (loses to) every other value.
- ``not_best``: some other value beats ``value``.
- ``higher`` / ``lower``: ``value`` has a higher (lower) ``metric`` than ``than`` (or than each
  of a list of values).
- ``similar``: each listed ``value`` (default: every other value) lies within ``threshold`` of
  ``than`` (default: the axis's first value): two one-sided tests, the interval inside.
- ``no_better`` / ``no_worse``: each listed ``value`` (default: every other) is not better
  (worse) than ``than`` by more than ``threshold``: non-superiority (non-inferiority).
- ``plateaus``: along the axis's values in order, some step gains no more than ``threshold``
  ("does not improve steadily"); contradicted when every step gains more.
- ``ratio``: ``metric`` of ``value`` over that of ``than`` is at least ``threshold``
  (``doubling``: epoch time of the slow pipeline over the fast one), tested on log ratios.
- ``at_least`` / ``at_most``: the ``metric`` (of the point ``where`` names; a recipe has one)
  is at least (at most) ``threshold``: a headline result such as 92%.
- ``steadier``: the spread (largest minus smallest) of ``metric`` over the values of the axis
  ``over`` is smaller with ``axis`` = ``value`` than with ``than``.

``threshold`` is in percent (percentage points) for accuracies. ``metric`` is a final metric
(test_acc, the default) or a derived one (``ablate.derived``); ``where`` holds other axes at
given values (``where = { model = "plain_cnn" }``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ablate import derived, stats
from ablate import metrics as metrics_
from ablate.config import ConfigError, flatten
from ablate.stats import design

CHECKS = (
    "best",
    "worst",
    "not_best",
    "higher",
    "lower",
    "similar",
    "no_better",
    "no_worse",
    "plateaus",
    "ratio",
    "at_least",
    "at_most",
    "steadier",
)
KEYS = {"text", "section", "check", "axis", "value", "than", "metric", "threshold", "over", "where"}
VERDICTS = ("supported", "contradicted", "inconclusive", "not run")
ALPHA = stats.ALPHA
NO_AXIS = ("at_least", "at_most")  # checks of one point, which ``where`` names
LISTS = {"value": ("best", "worst", "similar", "no_better", "no_worse"), "than": ("higher", "lower")}
THRESHOLD = {
    "similar": "a positive margin",
    "no_better": "a margin, 0 or more",
    "no_worse": "a margin, 0 or more",
    "plateaus": "a margin, 0 or more",
    "ratio": "a positive ratio",
    "at_least": "a number",
    "at_most": "a number",
}


@dataclass(frozen=True)
class Claim:
    text: str  # the report's words
    check: str
    axis: str = ""  # empty only for at_least / at_most
    value: Any = None  # a value of the axis (for some checks: a list of them)
    than: Any = None  # the value it is set against (higher, lower: or a list)
    metric: str = "test_acc"
    threshold: float | None = None  # a margin, a ratio or a level (see the checks)
    over: str | None = None  # steadier: the axis the spread is taken over
    where: dict[str, Any] = field(default_factory=dict)  # other axes held at these values
    section: str = ""  # where the report says it

    def to_dict(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in ("text", "section", "check", "axis", "value", "than", "metric", "threshold", "over", "where")
        }
        # Left out where they hold nothing; value and than may be the empty table ({}, no augmentation).
        return {k: v for k, v in d.items() if v is not None and not (k in ("section", "where", "axis") and not v)}


@dataclass
class Verdict:
    claim: Claim
    verdict: str  # one of VERDICTS
    check: str  # the check in words
    evidence: str  # the numbers behind the verdict, in one line
    why: str = ""  # what would settle an inconclusive or unrun claim
    study: str = ""
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # every comparison of the family


# ----------------------------------------------------------------------- parsing


def _values(axes: dict[str, list[Any]], axis: str) -> list[Any]:
    if axis not in axes:
        listed = ", ".join(axes) or "none"
        raise ConfigError(f"claim on unknown axis '{axis}'; the study's axes: {listed}")
    return axes[axis]


def label_of(values: list[Any], value: Any, axis: str) -> str:
    """The label ``ablate compare`` gives ``value`` of an axis with ``values``."""
    from ablate.compare import _same, value_labels

    labels = value_labels(values)
    for v, lab in zip(values, labels):
        if isinstance(value, dict) and v == value:
            return lab
        if isinstance(value, str) and value == lab:
            return lab
        if not isinstance(v, (dict, list)) and not isinstance(value, (dict, list)) and _same(v, value):
            return lab
    raise ConfigError(f"claim on '{axis}': {value!r} is not one of its values ({', '.join(labels)})")


def _listed(v: Any) -> list[Any]:
    return [] if v is None else list(v) if isinstance(v, list) else [v]


def parse(item: dict[str, Any], axes: dict[str, list[Any]]) -> Claim:
    """One ``[[claims]]`` table, checked against the study's axes."""
    if not isinstance(item, dict):
        raise ConfigError(f"each [[claims]] entry is a table, got {item!r}")
    unknown = sorted(set(item) - KEYS)
    if unknown:
        raise ConfigError(f"unknown claim key '{unknown[0]}'; accepted: {', '.join(sorted(KEYS))}")
    for key in ("text", "check"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise ConfigError(f"a claim needs '{key}' (a string)")
    claim = Claim(**{k: v for k, v in item.items()})
    if claim.check not in CHECKS:
        raise ConfigError(f"claim check must be one of {', '.join(CHECKS)}, got {claim.check!r}")
    if not isinstance(claim.metric, str):
        raise ConfigError(f"claim metric must be a metric's name, got {claim.metric!r}")
    metrics_.check(claim.metric, "claim metric")
    if claim.check in NO_AXIS:
        for key in ("axis", "value", "than"):
            if item.get(key) not in (None, ""):
                raise ConfigError(f"an '{claim.check}' claim takes no '{key}': 'where' names the point")
        values = []
    else:
        if not isinstance(item.get("axis"), str) or not item["axis"].strip():
            raise ConfigError("a claim needs 'axis' (a string)")
        values = _values(axes, claim.axis)
    if claim.check in ("best", "worst", "not_best", "higher", "lower", "steadier", "ratio") and claim.value is None:
        raise ConfigError(f"a '{claim.check}' claim needs 'value'")
    if claim.check in ("higher", "lower", "steadier", "ratio") and claim.than is None:
        raise ConfigError(f"a '{claim.check}' claim needs 'than'")
    if claim.check == "plateaus" and (claim.value is not None or claim.than is not None):
        raise ConfigError("a 'plateaus' claim takes every value of its axis in order: no 'value' or 'than'")
    for key, checks in LISTS.items():
        if isinstance(getattr(claim, key), list) and claim.check not in checks:
            raise ConfigError(f"only {', '.join(checks)} claims take a list as '{key}', not '{claim.check}'")
    named = _listed(claim.value) + _listed(claim.than)
    for v in named:
        label_of(values, v, claim.axis)
    if claim.check in THRESHOLD:
        t = claim.threshold
        ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
        if ok and claim.check in ("similar", "ratio"):
            ok = t > 0
        elif ok and claim.check in ("no_better", "no_worse", "plateaus"):
            ok = t >= 0
        if not ok:
            unit = " (percent for accuracies)" if claim.check in NO_AXIS else " (percentage points for accuracies)"
            raise ConfigError(
                f"a '{claim.check}' claim needs 'threshold', {THRESHOLD[claim.check]}"
                + ("" if claim.check == "ratio" else unit)
            )
    elif claim.threshold is not None:
        raise ConfigError(f"'threshold' is for {', '.join(THRESHOLD)} claims, not '{claim.check}'")
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


def where(runs: pd.DataFrame, claim: Claim, axes: dict[str, list[Any]]) -> pd.DataFrame:
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


def _labels(claim: Claim, axes, key: str) -> list[str]:
    return [label_of(axes[claim.axis], v, claim.axis) for v in _listed(getattr(claim, key))]


def _first_label(values: list[Any]) -> str:
    from ablate.compare import value_labels

    return value_labels(values)[0]


def _scale(metric: str) -> float:
    """Thresholds of accuracies are written in percent."""
    return 0.01 if derived.is_accuracy(metric) else 1.0


def _margin(claim: Claim) -> str:
    return f"{claim.threshold:g} pp" if derived.is_accuracy(claim.metric) else f"{claim.threshold:g}"


def _join(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def describe(claim: Claim, axes: dict[str, list[Any]]) -> str:
    """The check in words."""
    m = claim.metric
    where = "".join(f", with `{k}` = {v}" for k, v in claim.where.items())
    if claim.check in NO_AXIS:
        level = f"{claim.threshold:g}%" if derived.is_accuracy(m) else f"{claim.threshold:g}"
        return f"{m} is at {'least' if claim.check == 'at_least' else 'most'} {level}{where}"
    a = f"`{claim.axis}`"
    named, than = _labels(claim, axes, "value"), _labels(claim, axes, "than")
    one = _join(named) if named else ""
    low = derived.lower_is_better(m)
    if claim.check in ("best", "worst"):
        word = ("lowest" if low else "highest") if claim.check == "best" else ("highest" if low else "lowest")
        verb = "beat" if claim.check == "best" else "lose to"
        if len(named) > 1:
            return f"{a} = {one} have the {word} {m}: each {verb}s every other value{where}"
        return f"{a} = {one} has the {word} {m}: it {verb}s every other value{where}"
    if claim.check == "not_best":
        return f"{a} = {one} does not have the {'lowest' if low else 'highest'} {m}: some other value beats it{where}"
    if claim.check in ("higher", "lower"):
        each = " (each)" if len(than) > 1 else ""
        return f"{a} = {one} gives a {claim.check} {m} than {_join(than)}{each}{where}"
    base = _join(than) if than else _first_label(axes.get(claim.axis, [None])) if claim.axis else ""
    which = one or "every other value"
    if claim.check == "similar":
        return f"{m} of {a} = {which} lies within ±{_margin(claim)} of {base}{where}"
    if claim.check in ("no_better", "no_worse"):
        up = (claim.check == "no_better") != low  # no better in a higher-is-better metric: not above
        return f"{m} of {a} = {which} is not {'above' if up else 'below'} that of {base} by more than {_margin(claim)}{where}"
    if claim.check == "plateaus":
        return (
            f"along {a} = {_join(_labels_all(claim, axes))}, some step does not {'lower' if low else 'raise'} "
            f"{m} by more than {_margin(claim)}{where}"
        )
    if claim.check == "ratio":
        return f"{m} with {a} = {one} is at least {claim.threshold:g} times that with {_join(than)}{where}"
    return f"the spread of {m} over `{claim.over}` is smaller with {a} = {one} than with {_join(than)}{where}"


def _labels_all(claim: Claim, axes) -> list[str]:
    from ablate.compare import value_labels

    return value_labels(axes[claim.axis])


def _p(p: float | None) -> str:
    return "-" if p is None or (isinstance(p, float) and math.isnan(p)) else "< 0.001" if p < 0.001 else f"= {p:.3f}"


@dataclass
class Contrast:
    """One comparison of a claim's family: per-seed numbers against a boundary.

    ``kind`` says which side supports the claim: "above" (the difference is above ``bound``),
    "below", or "within" (inside ±``bound``: two one-sided tests)."""

    what: str  # "5 vs 7"
    kind: str
    bound: float
    diffs: list[float]  # one per seed
    blocks: list[float]  # one per block, mean over seeds
    design: str  # "3 seeds x 5 blocks (model.channels.1)"
    metric: str
    exact: bool = False
    transform: str = ""  # "log": the numbers are log ratios, shown as ratios
    p_for: float = math.nan  # two-sided-equivalent p for the claim's side; Holm-adjusted later
    p_against: float = math.nan
    test: stats.PairedTest | None = None

    def __post_init__(self) -> None:
        self.test = stats.paired_test(self.diffs, exact=self.exact)
        if self.n < 2:
            return
        if self.kind == "within":
            hi, lo = (stats.paired_test(self.diffs, b, self.exact) for b in (self.bound, -self.bound))
            self.p_for = max(hi.two_sided("below"), lo.two_sided("above"))
            self.p_against = min(hi.two_sided("above"), lo.two_sided("below"))
        else:
            t = self.test if self.bound == 0 else stats.paired_test(self.diffs, self.bound, self.exact)
            side, other = ("above", "below") if self.kind == "above" else ("below", "above")
            self.p_for, self.p_against = t.two_sided(side), t.two_sided(other)

    @property
    def n(self) -> int:
        return self.test.n

    @property
    def mean(self) -> float:
        return self.test.mean

    def room(self, x: float) -> float:
        """How far ``x`` lies on the claim's side of the boundary (negative: on the other side)."""
        if self.kind == "above":
            return x - self.bound
        if self.kind == "below":
            return self.bound - x
        return self.bound - abs(x)

    def on_side(self, x: float) -> bool:
        if self.kind == "above":
            return x > self.bound
        if self.kind == "below":
            return x < self.bound
        return abs(x) < self.bound

    def number(self, x: float | None, signed: bool = True) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if self.transform == "log":
            return f"{math.exp(x):.3g}x"
        return derived.fmt(self.metric, x, signed)

    def interval(self) -> str:
        t = self.test
        if self.n < 2 or math.isnan(t.low):
            return "-"
        return f"{self.number(t.low)} to {self.number(t.high)}"

    def text(self, adjusted: bool) -> str:
        """ "5 vs 7: +0.03 pp (n = 4 seeds, 95% CI -0.49 pp to +0.56 pp, p = 0.857 against the claim, paired t)"."""
        inner = f"n = {self.design}"
        if self.n >= 2:
            ci = self.interval()
            if ci != "-":
                inner += f", 95% CI {ci}"
            p = self.p_for if self.p_for <= self.p_against else self.p_against
            side = "for" if self.p_for <= self.p_against else "against"
            inner += f", p {_p(p)} {side} the claim{' (Holm)' if adjusted else ''}, {self.test.test}"
        return f"{self.what}: {self.number(self.mean)} ({inner})"

    def row(self) -> dict[str, Any]:
        return {
            "comparison": self.what,
            "difference": self.number(self.mean),
            "95% CI": self.interval(),
            "boundary": self._bound_text(),
            "p for": _p(self.p_for).lstrip("= "),
            "p against": _p(self.p_against).lstrip("= "),
            "test": self.test.test or "none (1 seed)",
            "n": self.design,
        }

    def _bound_text(self) -> str:
        b = self.number(self.bound, True) if self.transform != "log" else f"{math.exp(self.bound):.3g}x"
        return {"above": f"> {b}", "below": f"< {b}", "within": f"within ±{self.number(self.bound, False)}"}[self.kind]


def evaluate(
    claim: Claim,
    runs: pd.DataFrame,
    axes: dict[str, list[Any]],
    study: str = "",
    more_seeds: str = "",
    fill: str = "",
) -> Verdict:
    """``claim`` over ``runs``: one variant's runs, with ``claim.metric`` as a column.
    ``more_seeds`` is the command that would add seeds to them, for an untested verdict;
    ``fill`` the one that runs what a "not run" verdict lacks."""
    more_seeds = more_seeds or f"ablate run {study or 'STUDY'} --seeds 3"
    verdict = _evaluate(claim, runs, axes, more_seeds, fill or f"ablate run {study or 'STUDY'}")
    verdict.study = study
    return verdict


def _evaluate(claim: Claim, runs: pd.DataFrame, axes: dict[str, list[Any]], more_seeds: str, fill: str) -> Verdict:
    check = describe(claim, axes)
    metric = claim.metric
    runs = where(runs, claim, axes)
    if runs.empty or metric not in runs.columns or runs[metric].notna().sum() == 0:
        why = f"no finished run records {metric}" + (
            f" ({derived.describe(metric)})" if derived.is_derived(metric) else ""
        )
        return Verdict(claim, "not run", check, "-", f"{why}: {fill}")
    try:
        family, mode, means = _family(claim, runs, axes)
    except _NotRun as e:
        return Verdict(claim, "not run", check, "-", f"{e}: {fill}")
    return _decide(claim, check, family, mode, means, more_seeds)


class _NotRun(Exception):
    pass


def _family(claim: Claim, runs: pd.DataFrame, axes) -> tuple[list[Contrast], str, str]:
    """The claim's comparisons, "all" or "any" of which must hold, and a line of means."""
    m = claim.metric
    if claim.check in NO_AXIS:
        contrast, means = _one_sample(claim, runs)
        return [contrast], "all", means
    if claim.check == "steadier":
        contrast, means = _steadier(claim, runs, axes)
        return [contrast], "all", means
    values = axes[claim.axis]
    low = derived.lower_is_better(m)
    exact = m in derived.DISCRETE
    frame = runs
    transform = ""
    if claim.check == "ratio":
        frame = runs.assign(**{m: np.log(runs[m].where(runs[m] > 0))})
        transform = "log"

    cache: dict[str | None, Any] = {}

    def against(b: str | None, numbers: pd.DataFrame = frame):
        from ablate.compare import compare_frame

        key = (b, numbers is frame)
        if key not in cache:
            cache[key] = compare_frame(numbers, claim.axis, values, b, m)
        return cache[key]

    def vs(a: str, b: str, kind: str, bound: float = 0.0) -> Contrast:
        try:
            comp = against(b)
        except ConfigError:
            raise _NotRun(f"no finished runs with {claim.axis} = {b}") from None
        found = [r for r in comp.rows if r.value == a]
        if not found or found[0].n == 0:
            raise _NotRun(f"no finished runs with {claim.axis} = {a} to set against {b}")
        r = found[0]
        return Contrast(f"{a} vs {b}", kind, bound, r.seed_diffs, r.block_diffs, r.design(), m, exact, transform)

    def mean_of(label: str) -> str:
        comp = against(None, runs)
        if label == comp.baseline:
            one = next((r.baseline_mean for r in comp.rows), None)
        else:
            one = next((r.mean for r in comp.rows if r.value == label), None)
        return f"{label}: {derived.fmt(m, one)}"

    named, than = _labels(claim, axes, "value"), _labels(claim, axes, "than")
    available = against(None, runs).values
    t = (claim.threshold or 0.0) * _scale(m)
    if claim.check in ("best", "worst", "not_best"):
        others = [v for v in available if v not in named]
        if not others:
            raise _NotRun(f"no other value of {claim.axis} has finished runs")
        kind, mode = rank_family(claim.check, low)
        cmps = [vs(o, x, kind) for x in named for o in others]
        return cmps, mode, "; ".join(mean_of(x) for x in named)
    if claim.check in ("higher", "lower"):
        kind = "above" if claim.check == "higher" else "below"
        means = ", ".join(mean_of(x) for x in named + than)
        return [vs(named[0], b, kind) for b in than], "all", means
    if claim.check == "ratio":
        c = vs(named[0], than[0], "above", math.log(claim.threshold))
        return [c], "all", ", ".join(mean_of(x) for x in named + than)
    base = than[0] if than else _first_label(values)
    if claim.check == "plateaus":
        order = [v for v in _labels_all(claim, axes) if v in available]
        if len(order) < 2:
            raise _NotRun(f"fewer than two values of {claim.axis} have finished runs")
        kind, bound = ("above", -t) if low else ("below", t)
        return [vs(b, a, kind, bound) for a, b in zip(order, order[1:])], "any", ""
    listed = named or [v for v in available if v != base]
    if not listed:
        raise _NotRun(f"no value to set against {base} has finished runs")
    if claim.check == "similar":
        cmps = [vs(v, base, "within", t) for v in listed]
    else:
        up = (claim.check == "no_better") != low
        cmps = [vs(v, base, "below", t) if up else vs(v, base, "above", -t) for v in listed]
    return cmps, "all", mean_of(base)


def rank_family(check: str, lower_is_better: bool = False) -> tuple[str, str]:
    """best, worst, not_best: the side of (other minus named) that supports the claim, and
    whether all comparisons must support it or any one may."""
    beats = "above" if lower_is_better else "below"  # the named value beats the other
    loses = "below" if lower_is_better else "above"
    return {"best": (beats, "all"), "worst": (loses, "all"), "not_best": (loses, "any")}[check]


def decide_family(claim: Claim, diffs: np.ndarray) -> str:
    """The verdict of a best, worst or not_best claim from per-seed differences (other minus
    named value), one row per other value: what ``evaluate`` decides once the runs are paired.
    The simulation of tests/test_claims.py runs it on data with every value equal."""
    kind, mode = rank_family(claim.check, derived.lower_is_better(claim.metric))
    family = [Contrast(f"{i}", kind, 0.0, list(row), [], "", claim.metric) for i, row in enumerate(diffs)]
    return _decide(claim, "", family, mode, "", "").verdict


def _one_sample(claim: Claim, runs: pd.DataFrame) -> tuple[Contrast, str]:
    """at_least / at_most: the per-seed mean (over the points ``where`` leaves) against the
    level; and the line of its mean."""
    from ablate.variants import is_config_column

    m = claim.metric
    done = runs[runs[m].notna()]
    points = [c for c in done.columns if is_config_column(c) and c != "seed"]
    varying = [c for c in points if done[c].astype(str).nunique() > 1]
    per_seed = done.groupby("seed")[m].mean()
    per_block = done.groupby(varying, dropna=False)[m].mean() if varying else done[m].agg(["mean"])
    level = claim.threshold * _scale(m)
    kind = "above" if claim.check == "at_least" else "below"
    # Differences from the level, so the evidence reads "+0.53 pp" above 92%.
    contrast = Contrast(
        f"mean vs {derived.fmt(m, level)}",
        kind,
        0.0,
        (per_seed - level).tolist(),
        list(per_block.to_numpy() - level),
        design(len(per_seed), len(per_block), varying),
        m,
        m in derived.DISCRETE,
    )
    return contrast, f"mean {derived.fmt(m, float(per_seed.mean()))}"


def _steadier(claim: Claim, runs: pd.DataFrame, axes) -> tuple[Contrast, str]:
    """The per-seed difference of the spreads over ``over``; and the line of both spreads."""
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
        raise _NotRun(f"needs every value of {claim.over} finished on both sides, for the same seeds")
    d = (mine[both] - theirs[both]).rename("d").reset_index()
    per_seed = d.groupby("seed")["d"].mean()
    per_block = d.groupby(others, dropna=False)["d"].mean() if others else d["d"].agg(["mean"])
    contrast = Contrast(
        f"spread with {claim.value} vs {claim.than}",
        "below",
        0.0,
        per_seed.tolist(),
        list(per_block.to_numpy()),
        design(len(per_seed), len(per_block), others),
        metric,
    )
    means = (
        f"spread {derived.fmt(metric, float(mine[both].mean()))} with {claim.value}, "
        f"{derived.fmt(metric, float(theirs[both].mean()))} with {claim.than}"
    )
    return contrast, means


def _decide(claim: Claim, check: str, family: list[Contrast], mode: str, means: str, more_seeds: str) -> Verdict:
    k = len(family)
    lead = f"{means}; " if means else ""
    untested = [c for c in family if c.n < 2]
    if untested:
        return _untested(claim, check, family, mode, lead, more_seeds)
    for c, p in zip(family, stats.holm([c.p_for for c in family])):
        c.p_for = p
    for c, p in zip(family, stats.holm([c.p_against for c in family])):
        c.p_against = p
    yes = [c.p_for < ALPHA for c in family]
    no = [c.p_against < ALPHA for c in family]
    if mode == "all":
        supported, contradicted = all(yes), any(no)
        key = max(family, key=lambda c: c.p_for)  # the weakest support decides
    else:
        supported, contradicted = any(yes), all(no)
        key = min(family, key=lambda c: c.p_for)
    if k == 1:
        evidence = lead + key.text(False)
    else:
        which = "weakest" if mode == "all" else "strongest"
        evidence = (
            f"{lead}{k} comparisons, Holm-adjusted: {sum(yes)} of {k} for the claim, {sum(no)} against it; "
            f"{which}: {key.text(True)}"
        )
    rows = [c.row() for c in family]
    verdict = "supported" if supported else "contradicted" if contradicted else "inconclusive"
    why = "" if verdict != "inconclusive" else _why_inconclusive(family, k, more_seeds)
    return Verdict(claim, verdict, check, evidence, why, comparisons=rows)


def _why_inconclusive(family: list[Contrast], k: int, more_seeds: str) -> str:
    exact = [c for c in family if c.test.test == "exact sign-flip"]
    if exact:
        n = min(c.n for c in exact)
        floor = stats.sign_flip_floor(n)
        if floor * k >= ALPHA or floor >= ALPHA:
            need = next(m for m in range(2, 64) if stats.sign_flip_floor(m) * k < ALPHA)
            holm = f", {k} comparisons under Holm" if k > 1 else ""
            return (
                f"the exact sign-flip test (for differences with no spread, or a 0/1 metric) of {n} seeds "
                f"cannot give p below {floor:.3g}{holm}; {need}+ seeds could (`{_with_seeds(more_seeds, need)}`)"
            )
    side = "boundary" if any(c.kind == "within" or c.bound for c in family) else "0"
    return f"the 95% intervals include the {side}: more seeds would narrow them"


def _with_seeds(command: str, n: int) -> str:
    return command.replace("--seeds 3", f"--seeds {n}")


def _untested(claim: Claim, check: str, family: list[Contrast], mode: str, lead: str, more_seeds: str) -> Verdict:
    agree = [c.on_side(c.mean) for c in family]
    direction = all(agree) if mode == "all" else any(agree)
    k = len(family)
    # The comparison nearest the claim's boundary, or past it (all), the one furthest on its side (any).
    pick = min if mode == "all" else max
    key = pick(family, key=lambda c: c.room(c.mean))
    parts = [key.text(False)]
    if k > 1:
        needs = "every one" if mode == "all" else "one"
        parts.append(f"{k} comparisons: the direction agrees in {sum(agree)} of {k} (the claim needs {needs})")
    else:
        parts.append(f"the direction {'agrees' if direction else 'disagrees'}")
    deciding = [c for c, a in zip(family, agree) if a] if mode == "any" else family
    blocks = [len(c.blocks) for c in deciding]
    if direction and blocks and min(blocks) > 1:
        held = [c for c in deciding if all(c.on_side(x) for x in c.blocks)]
        if mode == "all" and len(held) == len(deciding):
            parts.append(f"consistent across all {min(blocks)} blocks" if k == 1 else "consistent across every block")
        elif mode == "any" and held:
            parts.append(f"consistent across all {len(held[0].blocks)} blocks of {held[0].what}")
        else:
            parts.append("not in every block")
    n = min(c.n for c in family)
    why = f"n = {n} seed{'s' if n != 1 else ''} per point: a verdict needs 2+ seeds: `{more_seeds}`"
    return Verdict(claim, "inconclusive", check, lead + "; ".join(parts), why, comparisons=[c.row() for c in family])
