"""Runs and metrics as pandas DataFrames: what figures, reports, ``ablate export`` and
notebooks read.

    from ablate import results
    runs = results.runs(study="depth")          # one row per run, config as dotted columns
    curves = results.metrics(study="depth", names=["test_acc"])
    results.export("runs.parquet", study="depth", format="parquet")
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import derived
from ablate.config import ConfigError, flatten
from ablate.store import Store
from ablate.variants import Variant, select, study_base, variant_key, variants

RUN_COLUMNS = [
    "run_id",
    "study",
    "variant",
    "status",
    "seed",
    "config_hash",
    "data_fp",
    "data_name",
    "label",
    "epochs_done",
    "test_acc",
    "test_loss",
    "train_acc",
    "train_loss",
    "wall_s",
    "device",
    "created_at",
    "started_at",
    "ended_at",
    "error",
]
METRIC_COLUMNS = ["run_id", "step", "name", "value"]
# The exported per-epoch table carries each run's identity so it joins without the runs table.
LONG_METRIC_COLUMNS = ["study", "variant", "run_id", "seed", "label", "step", "name", "value"]
FORMATS = ("csv", "parquet", "json")
PARQUET_HINT = 'Parquet needs pyarrow: pip install -e ".[parquet]"'


class UnknownStudy(ConfigError):
    pass


def _with_store(db: str | Store | None):
    if isinstance(db, Store):
        return db, False
    return Store.open(db, create=False), True


def runs_frame(store: Store, study: str | None = None, found: list[dict] | None = None) -> pd.DataFrame:
    """Every run (of ``study``), any status: RUN_COLUMNS, then the config as dotted columns;
    of ``found`` (``store.runs`` rows read already) where given, so that two views of a
    database that runners write agree.

    ``variant`` names the runs that share one config apart from the study's axes and the
    seed (``ablate.variants``); statistics are only taken within one."""
    specs = {s["name"]: s["spec"] for s in store.studies()}
    bases: dict[str, dict] = {}
    rows = []
    for r in store.runs(study) if found is None else found:
        spec = specs.get(r["study"], {})
        if r["study"] not in bases:
            bases[r["study"]] = study_base(spec)
        row = {c: r.get("id" if c == "run_id" else c) for c in RUN_COLUMNS if c != "variant"}
        row["variant"] = variant_key(r["config"], spec.get("axes") or {}, bases[r["study"]], r["data_fp"])
        row.update(flatten(r["config"]))
        rows.append(row)
    frame = pd.DataFrame(rows)
    return (
        frame[RUN_COLUMNS + [c for c in frame.columns if c not in RUN_COLUMNS]]
        if rows
        else pd.DataFrame(columns=RUN_COLUMNS)
    )


def study_spec(store: Store, study: str) -> dict:
    return next((s["spec"] for s in store.studies() if s["name"] == study), {})


def study_variants(store: Store, study: str, runs: pd.DataFrame | None = None) -> list[Variant]:
    """The study's variants, the default (most finished runs, then most recent) first."""
    runs = runs_frame(store, study) if runs is None else runs
    return variants(runs, study_spec(store, study), study)


def study_runs(store: Store, study: str, selector: str | dict | None = None) -> Variant | None:
    """The variant of ``study`` that ``selector`` names (``variants.select``; None: the
    default), or None if the study has no runs. Its ``runs`` and ``finished`` are what every
    statistic of the study is taken over."""
    found = study_variants(store, study)
    return select(found, selector, study) if found else None


def with_derived(store: Store, runs: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """``runs`` with a column for each derived metric in ``names`` (``ablate.derived``); the
    final metrics are columns already."""
    names = derived.columns(names)
    if not names or runs.empty:
        return runs.assign(**{n: float("nan") for n in names}) if names else runs
    ids = runs["run_id"].tolist()
    per_epoch = any(map(derived.needs_metrics, names)) or any(not derived.is_derived(n) for n in names)
    metrics = metrics_frame(store, ids) if per_epoch else pd.DataFrame(columns=METRIC_COLUMNS)
    arrays = artifacts_map(store, ids) if set(names) & derived.NEEDS_ARTIFACTS else {}
    return derived.add(runs, metrics, arrays, names)


def metrics_frame(store: Store, run_ids: Iterable[int], names: Iterable[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(store.metrics(run_ids, names), columns=METRIC_COLUMNS)


def artifacts_map(store: Store, run_ids: Iterable[int]) -> dict[int, dict[str, np.ndarray]]:
    """run_id -> name -> array, for the small arrays runs keep (first-layer kernels, say)."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for run_id, name, data, dtype, shape in store.artifacts(run_ids):
        out.setdefault(run_id, {})[name] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return out


def check_study(store: Store, study: str | None) -> None:
    """Refuse a study the database does not know: a typo would otherwise read as "no runs"."""
    if study is None:
        return
    known = [s["name"] for s in store.studies()]
    if study not in known:
        where = f"studies in {store.url}: {', '.join(known)}" if known else f"{store.url} holds no studies yet"
        raise UnknownStudy(f"unknown study '{study}'; {where}")


def long_metrics_frame(store: Store, found: pd.DataFrame, names: Iterable[str] | None = None) -> pd.DataFrame:
    """``store.metrics`` of the runs ``found`` (a runs frame), each row with its run's study,
    variant, seed and label."""
    if isinstance(names, str):  # names="test_acc" would otherwise match its letters
        names = [names]
    long = metrics_frame(store, found["run_id"].tolist() if len(found) else [], names)
    who = (
        found[["study", "variant", "run_id", "seed", "label"]]
        if len(found)
        else pd.DataFrame(columns=["study", "variant", "run_id", "seed", "label"])
    )
    return long.merge(who, on="run_id", how="left")[LONG_METRIC_COLUMNS]


ALL = "all"  # --variant all: every run, whatever its variant


def chosen_runs(store: Store, study: str | None = None, variant: str | dict | None = None) -> pd.DataFrame:
    """The runs a statistic may be taken over: of ``study`` (else of every study) the variant
    ``variant`` selects (None: each study's default); ``"all"``: every run."""
    check_study(store, study)
    if variant == ALL:
        return runs_frame(store, study)
    if variant is not None and study is None:
        raise ConfigError("--variant names a variant of one study: give the study too (or --variant all)")
    names = [study] if study else [s["name"] for s in store.studies()]
    parts = [v.runs for v in (study_runs(store, name, variant) for name in names) if v is not None]
    return pd.concat(parts, ignore_index=True) if parts else runs_frame(store, study).iloc[0:0]


def runs(db: str | Store | None = None, study: str | None = None, variant: str | dict | None = ALL) -> pd.DataFrame:
    """One row per run: status, seed, final metrics (``test_acc`` a fraction) and config columns.

    Every run by default, with its ``variant``; ``variant=None`` keeps each study's default
    variant, as ``ablate export`` does. A study the database does not know is an error.
    """
    store, close = _with_store(db)
    try:
        return chosen_runs(store, study, variant)
    finally:
        if close:
            store.close()


def metrics(
    db: str | Store | None = None,
    study: str | None = None,
    names: Iterable[str] | None = None,
    variant: str | dict | None = ALL,
) -> pd.DataFrame:
    """The long per-epoch table (study, variant, run_id, seed, label, step, name, value) of the
    runs ``runs`` returns; ``names`` keeps only those metrics. ``ablate export --metrics``."""
    store, close = _with_store(db)
    try:
        return long_metrics_frame(store, chosen_runs(store, study, variant), names)
    finally:
        if close:
            store.close()


# ------------------------------------------------------------------------- export


def default_out(study: str | None, format: str = "csv", metrics: bool = False) -> Path:
    """``STUDY.csv``, ``STUDY-metrics.csv``; ``runs.csv``, ``metrics.csv`` for every study."""
    stem = f"{study}-metrics" if study and metrics else study or ("metrics" if metrics else "runs")
    return Path(f"{stem}.{format}")


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown format '{format}'; formats: {', '.join(FORMATS)}")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError(PARQUET_HINT) from None
        except ImportError as e:  # installed, but built for other packages (pyarrow 15+ wants NumPy 2)
            raise ConfigError(f"pyarrow is installed but does not import: {e}") from None


def check_out(out: str | Path) -> None:
    """Refuse a file that cannot be written before anything is read or written."""
    if str(out) == "-":
        return
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"'{out}' is a directory; give a file path (or - for standard output)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"cannot write '{out}': directory '{parent}' does not exist")


def _arrow_ready(frame: pd.DataFrame) -> pd.DataFrame:
    # A config key that is a string in one run and a number in another (a model's
    # ``channels`` is an int or a list) is one column Arrow cannot type: keep it as text.
    out = frame.copy()
    for col in [c for c in out.columns if pd.api.types.is_object_dtype(out[c])]:
        kinds = {type(v) for v in out[col] if not (v is None or (isinstance(v, float) and np.isnan(v)))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            out[col] = out[col].map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out


def _json_value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or pd.isna(v):  # NaN, NaT, pd.NA: null
        return None
    return v.isoformat() if hasattr(v, "isoformat") else v


def _encode(frame: pd.DataFrame, format: str) -> bytes:
    if format == "csv":
        return frame.to_csv(index=False).encode()
    if format == "json":
        # records, one object per row; not pandas' to_json, which rounds floats at 15 digits
        return (
            json.dumps([{k: _json_value(v) for k, v in r.items()} for r in frame.to_dict("records")]) + "\n"
        ).encode()
    buf = io.BytesIO()
    _arrow_ready(frame).to_parquet(buf, index=False)
    return buf.getvalue()


def write(frame: pd.DataFrame, out: str | Path, format: str = "csv") -> None:
    """Write ``frame`` as csv, parquet or json to ``out``; ``-`` is standard output.

    A file is written whole or not at all: into a temporary beside it, then renamed.
    """
    check_format(format)
    check_out(out)
    data = _encode(frame, format)
    if str(out) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write '{out}': {e.strerror}") from None


def _with_evaluated(store: Store, frame: pd.DataFrame) -> pd.DataFrame:
    """The runs frame with each evaluated metric (``ablate.metrics``; per-class ones are in
    the per-epoch export) at the run's last evaluated epoch, where any run recorded it."""
    from ablate.metrics import EVALUATED

    names = [n for n, spec in EVALUATED.items() if not spec.per_class]
    if frame.empty or "run_id" not in frame.columns:
        return frame
    found = with_derived(store, frame, names)
    return found.drop(columns=[n for n in names if found[n].isna().all()])


def export(
    out: str | Path | None = None,
    db: str | Store | None = None,
    study: str | None = None,
    format: str = "csv",
    per_epoch: bool = False,
    variant: str | dict | None = None,
) -> tuple[Path | str, int]:
    """``ablate export``: the runs table (or with ``per_epoch`` the metrics table) to a file.

    The runs are those a figure of the study draws: its default variant, or the one
    ``variant`` selects; ``"all"`` exports every run, each with its ``variant``. ``out``
    defaults to :func:`default_out`. Returns where it went and the number of rows. A database
    without a single run is refused rather than exported as an empty table: a missing file
    opens as an empty database, and a mistyped ``--db`` should not pass unseen.
    """
    check_format(format)
    out = default_out(study, format, per_epoch) if out is None else out
    check_out(out)
    store, close = _with_store(db)
    try:
        frame = (metrics if per_epoch else runs)(store, study, variant=variant)
        if not per_epoch:
            frame = _with_evaluated(store, frame)
        if study is None and not store.runs():
            raise ConfigError(f"no runs in {store.url}")
    finally:
        if close:
            store.close()
    write(frame, out, format)
    return out, len(frame)
