"""A figure for every study: the generic one (``figures.generic_figure``) of a study that
feeds none of the report's figures, written as ``study-NAME.png`` with its numbers in
``study-NAME.csv`` and its per-epoch curves in ``study-NAME-curves.csv``.

Kept apart from ``ablate.report``, which calls ``draw`` for the studies it lists without a
figure, and ``ablate report --study NAME`` for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablate import figures
from ablate import metrics as metrics_
from ablate.compare import value_labels
from ablate.config import flatten
from ablate.results import metrics_frame, with_derived
from ablate.store import Store


@dataclass
class StudyFigure:
    study: str
    png: Path | None = None
    csv: Path | None = None
    curves: Path | None = None
    problem: str | None = None


def axis_labels(runs: pd.DataFrame, axis: str, values: list[Any]) -> pd.Series:
    """Each run's value on ``axis`` by its label (``compare.value_labels``), an ordered
    categorical in the study's order; a table-valued axis's value is the table whose keys
    the run's config matches (the one naming most keys, where several do)."""
    labels = value_labels(values)
    if axis in runs.columns and not any(isinstance(v, dict) for v in values):
        by_value = {_key(v): label for v, label in zip(values, labels)}
        found = runs[axis].map(lambda v: by_value.get(_key(v)))
    else:

        def match(row) -> str | None:
            best, size = None, -1
            for value, label in zip(values, labels):
                items = flatten(value) if isinstance(value, dict) else {"": value}
                keys = {f"{axis}.{k}" if k else axis: v for k, v in items.items()}
                if all(k in row and _key(row[k]) == _key(v) for k, v in keys.items()) and len(keys) > size:
                    best, size = label, len(keys)
            return best

        found = runs.apply(match, axis=1)
    return pd.Categorical(found, categories=list(dict.fromkeys(labels)), ordered=True)


def _key(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def draw(store: Store, view, out: Path, footer: str, metric: str = "test_acc") -> StudyFigure:
    """The generic figure of ``view`` (``report.View``) into ``out``."""
    result = StudyFigure(view.name)
    runs = view.finished
    axes = {k: v for k, v in view.axes.items()}
    if runs.empty:
        result.problem = "no finished runs"
        return result
    if not axes:
        runs = runs.assign(point="base")
        axes = {"point": ["base"]}
    metrics_.check(metric)
    runs = with_derived(store, runs, [metric]) if metric not in runs.columns else runs
    points = runs[["run_id", "config_hash", "seed", metric]].copy()
    numeric = {}
    for axis, values in axes.items():
        points[axis] = axis_labels(runs, axis, values)
        numeric[axis] = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    points = points[points[list(axes)].notna().all(axis=1)]
    ids = points["run_id"].tolist()
    # The curves of the metric where it is recorded per epoch, else of test accuracy.
    recorded = metric in ("test_acc", "test_loss", "train_acc", "train_loss") or metrics_.evaluated(metric)
    curves = metrics_frame(store, ids, [metric if recorded else "test_acc"])
    title = f"Study {view.name}: {view.description}" if view.description else f"Study {view.name}"
    try:
        fig, plotted, curve_numbers = figures.generic_figure(points, list(axes), numeric, metric, curves, title, footer)
    except ValueError as e:
        result.problem = str(e)
        return result
    out.mkdir(parents=True, exist_ok=True)
    result.png = out / f"study-{view.name}.png"
    result.csv = out / f"study-{view.name}.csv"
    result.curves = out / f"study-{view.name}-curves.csv"
    figures.save(fig, result.png)
    plotted.to_csv(result.csv, index=False)
    curve_numbers.to_csv(result.curves, index=False)
    return result


def figure_lines(drawn: StudyFigure | None) -> list[str]:
    """The README lines of a study's generic figure: the image and where its numbers are."""
    if drawn is None:
        return []
    if drawn.png is None:
        return [f"No figure: {drawn.problem}.", ""]
    return [
        f"![Study {drawn.study}]({drawn.png.name})",
        "",
        f"Numbers: [{drawn.csv.name}]({drawn.csv.name}); per-epoch curves: [{drawn.curves.name}]({drawn.curves.name}).",
        "",
    ]


def collapse(entries: list, verdicts: list) -> tuple[dict[str, str], list]:
    """A report over a database of the user's own studies only: the report's figures, none
    of which has runs, get one line rather than a section each, and the report's claims,
    none of which can be checked, one line rather than a row each."""
    from ablate.report import _section

    studies = ", ".join(dict.fromkeys(e.study for e in entries))
    unrun = [v for v in verdicts if v.verdict == "not run"]
    line = (
        f"The report's {len(entries)} figures and {len(unrun)} claims have no runs in this database "
        f"(`ablate run STUDY` for {studies} draws them)."
    )
    return {"figures": _section("figures", ["", line, ""])}, [v for v in verdicts if v.verdict != "not run"]


def report_numbers(study: str) -> list[int]:
    """The report's figures that ``study`` feeds."""
    return sorted(n for n, spec in figures.FIGURES.items() if spec.study == study)


def write_study(store: Store, out: Path, study: str, selection: str | dict | None = None) -> StudyFigure:
    """``ablate report --study NAME`` for a study without a figure of the report: its generic
    figure and its section of ``out/README.md`` (replaced there, or added at the end)."""
    from ablate import report
    from ablate.results import check_study

    check_study(store, study)
    views = report.Views(store, selection)
    view = views(study)
    if view.problem:
        raise report.VariantError(view.problem)
    drawn = (
        draw(store, view, Path(out), report.footer(view))
        if view.variant is not None
        else StudyFigure(study, problem="no finished runs")
    )
    if view.variant is None or view.finished.empty:
        return drawn
    notes = report.significance(store, views, {study})
    section = report._study_section(view, report.point_table(store, view.finished, view.axes), notes.get(study), drawn)
    readme = Path(out) / "README.md"
    text = readme.read_text() if readme.exists() else ""
    start, end = report.SECTION.format(f"study-{study}"), report.END
    if start in text:
        head, _, rest = text.partition(start)
        text = head + section + rest.partition(end)[2]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "# Study report\n\n") + section + "\n"
    readme.write_text(text)
    return drawn
