"""``ablate report`` as a Python function: every figure whose study has runs, from the
database alone, with the exact numbers plotted and a README that ties them together:
per-point tables (mean, 95% CI, n seeds), the studies without a figure, and the report's
results table for the recipes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ablate import compare, figures, stats
from ablate.config import ConfigError, flatten
from ablate.results import artifacts_map, metrics_frame, runs_frame
from ablate.store import Store

DONE = ("complete", "diverged")


class FigureNotFound(ConfigError):
    pass


@dataclass
class Entry:
    number: int
    study: str
    caption: str
    png: Path | None = None  # None: not drawn (see problem) or no finished runs yet
    csv: Path | None = None
    table: pd.DataFrame | None = None  # final test accuracy per grid point over seeds
    problem: str | None = None  # why a study with runs could not be drawn

    @property
    def command(self) -> str:
        return f"ablate run {self.study}"


def check_numbers(numbers: list[int] | None) -> list[int]:
    known = sorted(figures.FIGURES)
    for n in numbers or []:
        if n not in figures.FIGURES:
            raise FigureNotFound(f"no figure {n}; figures: {', '.join(map(str, known))}")
    return sorted(set(numbers)) if numbers else known


def axis_columns(axes: dict[str, list[Any]], columns) -> list[str]:
    """The run-frame columns a study's axes set; a table-valued axis sets each of its keys."""
    out: list[str] = []
    for key, values in axes.items():
        keys = [key]
        if any(isinstance(v, dict) for v in values):
            keys = [f"{key}.{k}" for v in values if isinstance(v, dict) for k in flatten(v)]
        out += [k for k in dict.fromkeys(keys) if k in columns and k not in out]
    return out


def point_table(store: Store, runs: pd.DataFrame, axes: dict[str, list[Any]]) -> pd.DataFrame:
    """Per grid point: test accuracy (mean, 95% CI, n seeds) and mean epoch time in seconds."""
    by = axis_columns(axes, runs.columns)
    if not by:
        runs = runs.assign(point="base")
        by = ["point"]
    table = stats.summarize(runs, by=by)
    times = metrics_frame(store, runs["run_id"].tolist(), ["epoch_time"])
    per_run = times.groupby("run_id")["value"].mean().rename("epoch_s")
    timed = runs.join(per_run, on="run_id").groupby(by, dropna=False)["epoch_s"].mean().reset_index()
    return table.merge(timed, on=by, how="left")


def draw_figures(store: Store, out: Path, numbers: list[int] | None = None) -> list[Entry]:
    out.mkdir(parents=True, exist_ok=True)
    axes_of = {s["name"]: s["spec"].get("axes", {}) for s in store.studies()}
    entries = []
    for n in check_numbers(numbers):
        spec = figures.get(n)
        entry = Entry(n, spec.study, spec.caption)
        entries.append(entry)
        runs = _finished(store, spec.study)
        if runs.empty:
            continue
        ids = runs["run_id"].tolist()
        try:
            fig, plotted = spec.draw(runs, metrics_frame(store, ids), artifacts_map(store, ids))
        except ValueError as e:  # e.g. the study ran, but not the point this figure needs
            entry.problem = str(e)
            continue
        entry.png, entry.csv = out / f"figure-{n:02d}.png", out / f"figure-{n:02d}.csv"
        figures.save(fig, entry.png)
        plotted.to_csv(entry.csv, index=False)
        entry.table = point_table(store, runs, axes_of.get(spec.study, {}))
    return entries


def _finished(store: Store, study: str) -> pd.DataFrame:
    runs = runs_frame(store, study)
    return runs[runs["status"].isin(DONE)]


def other_studies(store: Store, drawn: set[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """(name, description, point table) of studies with finished runs and no figure."""
    out = []
    for s in store.studies():
        if s["name"] in drawn or s["spec"].get("reported") or s["name"] == "smoke":
            continue
        runs = _finished(store, s["name"])
        if not runs.empty:
            out.append((s["name"], s["description"], point_table(store, runs, s["spec"].get("axes", {}))))
    return out


def results_table(store: Store) -> pd.DataFrame:
    """The report's results, side by side with ours: one row per recipe that has runs."""
    rows = []
    for s in store.studies():
        reported = s["spec"].get("reported")
        if not reported:
            continue
        runs = _finished(store, s["name"])
        if runs.empty:
            continue
        mean, low, high, n = stats.mean_ci(runs["test_acc"].tolist())
        params = metrics_frame(store, runs["run_id"].tolist(), ["params"])["value"]
        rows.append({
            "recipe": s["name"],
            "model": runs["model.name"].iloc[0],
            "test_acc": mean, "ci_low": low, "ci_high": high, "n": n,
            "epochs": int(runs["epochs"].iloc[0]),
            "wall_s": runs["wall_s"].mean(),
            "device": ", ".join(sorted(set(runs["device"].dropna()))),
            "layers": reported.get("layers"),
            "params": int(params.iloc[0]) if len(params) else None,
            "report_acc": reported.get("acc"),
            "report_epochs": reported.get("epochs"),
            "report_note": reported.get("note", ""),
        })
    return pd.DataFrame(rows)


def write_report(store: Store, out: Path, numbers: list[int] | None = None) -> list[Entry]:
    """Draw the figures into ``out`` and write ``out/README.md``.

    With ``numbers`` only those figures are drawn, and the README holds only them.
    """
    out = Path(out)
    entries = draw_figures(store, out, numbers)
    extra = [] if numbers else other_studies(store, {e.study for e in entries})
    results = pd.DataFrame() if numbers else results_table(store)
    tabled = {e.study for e in entries if e.table is not None} | {name for name, _, _ in extra}
    notes = significance(store, tabled)
    (out / "README.md").write_text(render_readme(entries, extra, results, store.url, notes))
    return entries


def significance(store: Store, studies: set[str]) -> dict[str, str]:
    """Study -> the line under its table naming the values that differ from the baseline at
    p < 0.05; only studies whose runs pair up at least twice (two seeds) get one."""
    out = {}
    for s in store.studies():
        if s["name"] in studies:
            found = compare.compare_axes(_finished(store, s["name"]), s["spec"].get("axes", {}), s["name"])
            line = _significance_md(found)
            if line:
                out[s["name"]] = line
    return out


# ------------------------------------------------------------------------- markdown


def _pct(x: float) -> str:
    return "-" if pd.isna(x) else f"{100 * x:.2f}%"


def _ci(low: float, high: float) -> str:
    return "-" if pd.isna(low) else f"{100 * low:.2f} - {100 * high:.2f}"


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    # pandas turns an integer axis into floats once any column is missing; show 3, not 3.0
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _table_md(table: pd.DataFrame) -> str:
    by = [c for c in table.columns if c not in ("mean", "ci_low", "ci_high", "n", "epoch_s")]
    head = [b.split(".", 1)[-1] for b in by] + ["test acc (mean)", "95% CI", "n seeds", "epoch (s)"]
    rows = [
        [_cell(r[b]) for b in by]
        + [_pct(r["mean"]), _ci(r["ci_low"], r["ci_high"]), str(int(r["n"])),
           "-" if pd.isna(r["epoch_s"]) else f"{r['epoch_s']:.1f}"]
        for _, r in table.iterrows()
    ]
    return _md(head, rows)


def _results_md(results: pd.DataFrame) -> str:
    head = ["recipe", "model", "test acc", "95% CI", "n", "epochs", "wall time", "device", "layers",
            "parameters", "report"]
    rows = [
        [r["recipe"], r["model"], _pct(r["test_acc"]), _ci(r["ci_low"], r["ci_high"]), str(r["n"]),
         str(r["epochs"]), f"{r['wall_s'] / 60:.1f} min", r["device"] or "-", str(r["layers"]),
         f"{r['params']:,}" if pd.notna(r["params"]) else "-",
         f"{100 * r['report_acc']:.2f}% in {r['report_epochs']} epochs ({r['report_note']})"]
        for _, r in results.iterrows()
    ]
    return _md(head, rows)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _significance_md(comparisons: list[compare.Comparison]) -> str:
    parts = []
    for c in comparisons:
        if not c.tested:
            continue
        found = [f"{r.value} ({100 * r.mean_diff:+.2f} pp, p {_p(r.p)})" for r in c.significant]
        parts.append(f"`{c.axis}` against {c.baseline}: {', '.join(found) if found else 'none'}.")
    if not parts:
        return ""
    return ("Differ from the baseline at p < 0.05 (`ablate compare`: paired t-test, runs matched by seed and "
            "the other axes): " + " ".join(parts))


def render_readme(entries: list[Entry], extra, results: pd.DataFrame, db_url: str,
                  notes: dict[str, str] | None = None) -> str:
    """``notes``: study -> a line under its table (which values differ from the baseline)."""
    notes = notes or {}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Study report",
        "",
        f"Generated by `ablate report` from `{db_url}` on {stamp}. Every figure is drawn from "
        "the database alone; `figure-NN.csv` beside each holds the exact numbers plotted. "
        "Accuracies are final test accuracies: mean over seeds, 95% confidence interval (Student t).",
    ]
    if not results.empty:
        parts += ["", "## Results", "", _results_md(results)]
    tabled: set[str] = set()  # a study feeding several figures gets its table once
    for e in entries:
        parts += ["", f"## Figure {e.number}: {e.caption}", ""]
        if e.problem:
            parts.append(f"Not drawn: {e.problem}.")
            continue
        if e.png is None:
            parts.append(f"No finished runs of study `{e.study}` yet: `{e.command}` fills this figure.")
            continue
        parts += [f"![Figure {e.number}]({e.png.name})", "", f"Study `{e.study}`; numbers: [{e.csv.name}]({e.csv.name})."]
        if e.table is not None and e.study not in tabled:
            parts += ["", _table_md(e.table)]
            if e.study in notes:
                parts += ["", notes[e.study]]
            tabled.add(e.study)
    for name, description, table in extra:
        parts += ["", f"## Study `{name}`", "", description, "", _table_md(table)]
        if name in notes:
            parts += ["", notes[name]]
    return "\n".join(parts) + "\n"
