"""Variants: the runs of a study that agree on everything but the study's axes and the seed.

Running a study again with other options (``--epochs 2``, ``--set train_subset=256``,
another ``--data``) records runs of another variant of it. Statistics are only ever taken
within one variant, where each grid point is exactly one config: n counts the seeds of that
config and nothing else. Every figure, table, comparison, claim and export draws one
variant; by default the one with the most finished runs (ties: the most recent).

A run's variant follows from the run alone: its config with every axis set back to the
study's base value (or to a placeholder where the base leaves it unset), hashed as a config
is, together with the fingerprint of its data. ``studies.expand`` refuses an override under
a table-valued axis, so an axis's values never depend on the options a study ran with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

import pandas as pd

from ablate.config import (
    ConfigError,
    RunConfig,
    config_hash,
    flatten,
    from_dict,
    get_key,
    parse_value,
    set_key,
    to_dict,
)

AXIS = "<axis>"  # where a run's axis value stood and the study's base has none
RESULTS = ("complete", "diverged")  # a diverged run is a finding: that setting does not train
UNSETTLED = ("pending", "running", "failed")
NO_DATA = "data not recorded (before ablate fingerprinted data)"
CONFIG_HEADS = frozenset(f.name for f in dataclasses.fields(RunConfig))


class VariantError(ConfigError):
    pass


# ------------------------------------------------------------------------- the key


def is_config_column(column: str) -> bool:
    """Whether a run-frame column is a (dotted) config key rather than a field of the run."""
    return column.split(".", 1)[0] in CONFIG_HEADS


def study_base(spec: dict[str, Any]) -> dict[str, Any]:
    """The study's base config with every default filled in, as the runs store theirs."""
    base = spec.get("base") or {}
    try:
        return to_dict(from_dict(base))
    except ConfigError:  # a base this ablate no longer accepts: compare what is there
        return dict(base)


def reset_axes(config: dict[str, Any], axes: Iterable[str], base: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each axis set back to ``base``'s value, or to ``AXIS`` where it has none."""
    out = config
    for key in axes:
        try:
            value = get_key(base, key)
        except (KeyError, IndexError, TypeError):
            value = AXIS
        try:
            out = set_key(out, key, value)
        except ConfigError:  # the run predates this axis's shape: leave it as it is
            pass
    return out


def variant_key(config: dict[str, Any], axes: Iterable[str], base: dict[str, Any], data_fp: str | None) -> str:
    """12 hex digits naming the variant a run of this config and data belongs to."""
    common = reset_axes(config, axes, base)
    try:
        identity = config_hash(from_dict(common))  # the config hash's rules: seed out, later keys at default out
    except ConfigError:
        identity = repr(sorted((k, repr(v)) for k, v in flatten(common).items() if k != "seed"))
    return hashlib.sha256(f"{identity}|{data_fp}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- variants


@dataclass
class Variant:
    study: str
    key: str
    data_fp: str | None
    data_name: str | None
    common: dict[str, Any]  # the dotted config its runs share: axes and seed left out
    runs: pd.DataFrame  # every run of it, any status, as results.runs_frame has them
    diff: dict[str, Any] = field(default_factory=dict)  # where it departs from the study's base
    data_differs: bool = False  # whether the study's variants ran on different data

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"].isin(RESULTS)]

    @property
    def points(self) -> int:
        """Grid points recorded: each one config of the study's grid."""
        return int(self.runs["config_hash"].nunique())

    @property
    def done_points(self) -> int:
        return int(self.finished["config_hash"].nunique())

    @property
    def results(self) -> int:
        return len(self.finished)

    @property
    def unsettled(self) -> int:
        return int(self.runs["status"].isin(UNSETTLED).sum())

    @property
    def partial(self) -> bool:
        return self.unsettled > 0 or self.done_points < self.points

    @property
    def last(self) -> datetime | None:
        stamps = pd.concat([self.runs["ended_at"], self.runs["created_at"]]).dropna()
        return stamps.max() if len(stamps) else None

    def seeds(self, measured: str | None = None) -> tuple[int, int]:
        """The fewest and most finished seeds of one of its points (0, 0 with none). With
        ``measured`` (a metric), the seeds whose runs have it, over every recorded point: a
        point whose runs all diverged without it counts 0, as its plotted n does."""
        if measured is None:
            n = self.finished.groupby("config_hash")["seed"].nunique()
        else:
            has = self.finished[self.finished[measured].notna()] if measured in self.finished else self.finished[:0]
            n = has.groupby("config_hash")["seed"].nunique().reindex(self.runs["config_hash"].unique(), fill_value=0)
        return (int(n.min()), int(n.max())) if len(n) else (0, 0)

    @property
    def data(self) -> str:
        if self.data_fp is None:
            return NO_DATA
        return f"{self.data_name or 'data'} (fingerprint {self.data_fp[:8]})"

    def describe(self, data: bool = False) -> str:
        """``epochs=2, train_subset=256`` and, where the study's variants differ in it (or
        with ``data``), the data."""
        parts = [f"{k}={_text(v)}" for k, v in sorted(self.diff.items())]
        if self.data_differs or data:
            parts.append(f"data: {self.data}")
        return ", ".join(parts) or "the study's base"


def _text(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _present(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and v != v))


def _text_or_none(v: Any) -> str | None:
    # pandas 3 keeps a column of strings and None as its string dtype, where None reads back as NaN.
    return v if isinstance(v, str) else None


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


def variants(runs: pd.DataFrame, spec: dict[str, Any], study: str) -> list[Variant]:
    """The study's variants among ``runs`` (results.runs_frame, ``variant`` column included),
    the default first: the most finished runs, then the most recent."""
    if runs.empty:
        return []
    axes = list((spec.get("axes") or {}))
    out = []
    for key, part in runs.groupby("variant", sort=False):
        first = part.iloc[0]
        common = {}
        for column in part.columns:
            if (
                not is_config_column(column)
                or column == "seed"
                or any(column == a or column.startswith(a + ".") for a in axes)
            ):
                continue
            value = _scalar(first[column])
            if _present(value):
                common[column] = value
        out.append(
            Variant(
                study,
                str(key),
                _text_or_none(first.get("data_fp")),
                _text_or_none(first.get("data_name")),
                common,
                part.reset_index(drop=True),
            )
        )
    _name_differences(out, flatten(study_base(spec)))
    out.sort(key=lambda v: (-v.results, -(v.last.timestamp() if v.last is not None else 0.0), v.key))
    return out


def _name_differences(found: list[Variant], base: dict[str, Any]) -> None:
    """Each variant's ``diff``: keys where it departs from the study's base, and keys the
    base leaves to the model's defaults where the variants disagree among themselves."""
    keys = set().union(*(v.common for v in found))
    for v in found:
        for k in sorted(keys):
            if k not in v.common:
                continue
            if k in base:
                if not _same(v.common[k], base[k]):
                    v.diff[k] = v.common[k]
            elif any(k not in w.common or not _same(w.common[k], v.common[k]) for w in found):
                v.diff[k] = v.common[k]
        v.data_differs = len({w.data_fp for w in found}) > 1


# ---------------------------------------------------------------------- choosing


def parse_selector(text: str) -> str | dict[str, Any]:
    """``--variant``: a key (or a prefix of one), or ``KEY=VALUE[,KEY=VALUE...]``."""
    text = text.strip()
    if "=" not in text:
        if not re.fullmatch(r"[0-9a-f]{1,12}", text):
            raise VariantError(
                f"--variant takes a variant key (as `ablate status STUDY` lists them) or "
                f"KEY=VALUE[,KEY=VALUE...] (e.g. epochs=2,train_subset=256), got {text!r}"
            )
        return text
    items = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise VariantError(f"--variant: expected KEY=VALUE, got {part!r}")
        items[k.strip()] = parse_value(v.strip())
    return items


def _matches(v: Variant, wanted: dict[str, Any], exact: bool) -> bool:
    for k, value in wanted.items():
        if k == "data":
            text = str(value).lower()
            if not (v.data_fp or "").startswith(text) and text not in (v.data_name or "").lower():
                return False
        elif k not in v.common or not (_same(v.common[k], value) or _text(v.common[k]) == _text(value)):
            return False
    # Exact: every way it departs from the base is named (epochs=2 is not epochs=2,train_subset=256).
    return not exact or set(v.diff) <= set(wanted)


def select(found: list[Variant], selector: str | dict[str, Any] | None, study: str) -> Variant:
    """The variant ``selector`` names (None: the default); VariantError listing them if none."""
    if not found:
        raise VariantError(f"study '{study}' has no runs")
    if selector is None:
        return found[0]
    if isinstance(selector, str):
        hits = [v for v in found if v.key.startswith(selector)]
    else:  # an exact match first, else any that agrees on what was named
        hits = [v for v in found if _matches(v, selector, True)] or [v for v in found if _matches(v, selector, False)]
    if len(hits) == 1:
        return hits[0]
    what = selector if isinstance(selector, str) else ",".join(f"{k}={_text(v)}" for k, v in selector.items())
    if hits:  # picking one by the default order would draw a variant nobody named
        listed = "; ".join(f"{v.key} ({v.describe()}, {v.results} finished)" for v in hits)
        raise VariantError(
            f"--variant {what} matches {len(hits)} variants of study '{study}': {listed}; "
            "name one by its key or by more KEY=VALUE pairs"
        )
    listed = "; ".join(f"{v.key} ({v.describe()}, {v.results} finished)" for v in found)
    raise VariantError(f"--variant {what} matches no variant of study '{study}'; its variants: {listed}")
