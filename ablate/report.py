"""``ablate report`` as a Python function: every figure whose study has runs, from the
database alone, with the exact numbers plotted and a README that ties them together:
per-point tables (mean, 95% CI, n seeds), the report's claims checked, the studies without a
figure, and the report's results table for the recipes.

Each study is drawn from one variant (``ablate.variants``): its default, the one with the
most finished runs, or the one a selection names. Nothing is averaged across configs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablate import claims as claims_
from ablate import compare, figures, stats, study_figures
from ablate.config import ConfigError, flatten
from ablate.hints import left_out, left_out_text, run_command
from ablate.results import artifacts_map, metrics_frame, runs_frame, study_variants, with_derived
from ablate.store import Store
from ablate.variants import Variant, VariantError, select

DONE = ("complete", "diverged")


class FigureNotFound(ConfigError):
    pass


@dataclass
class View:
    """One study as the report draws it: its variants and the one drawn."""

    name: str
    spec: dict[str, Any]
    variants: list[Variant]
    variant: Variant | None = None
    problem: str | None = None  # why a study with runs is not drawn: no variant matches the selection
    description: str = ""

    @property
    def axes(self) -> dict[str, list[Any]]:
        return self.spec.get("axes") or {}

    @property
    def finished(self) -> pd.DataFrame:
        return self.variant.finished if self.variant is not None else pd.DataFrame()


@dataclass
class Entry:
    number: int
    study: str
    caption: str
    png: Path | None = None  # None: not drawn (see problem) or no finished runs yet
    csv: Path | None = None
    table: pd.DataFrame | None = None  # final test accuracy per grid point over seeds
    problem: str | None = None  # why a study with runs could not be drawn
    view: View | None = None
    note: str = ""  # after the caption in the title: "partial: 6 of 8 points"
    footer: str = ""  # under the figure and in the README: data, epochs, seeds, error bars
    command: str = ""  # what fills it, where it has no finished runs
    empty: str = ""  # why it has none: "no runs of study 'smoke' yet", "4 failed runs"


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
    """Per grid point of one variant: test accuracy (mean, 95% CI, n seeds) and mean epoch
    time in seconds."""
    by = axis_columns(axes, runs.columns)
    if not by:
        runs = runs.assign(point="base")
        by = ["point"]
    table = stats.summarize(runs, by=by, bounds=stats.ACCURACY)
    times = metrics_frame(store, runs["run_id"].tolist(), ["epoch_time"])
    per_run = times.groupby("run_id")["value"].mean().rename("epoch_s")
    timed = runs.join(per_run, on="run_id").groupby(by, dropna=False)["epoch_s"].mean().reset_index()
    return table.merge(timed, on=by, how="left")


# ----------------------------------------------------------------------- choosing


class Views:
    """Each study's view, made once per report; ``selection`` picks the variant (None: the default)."""

    def __init__(self, store: Store, selection: str | dict[str, Any] | None = None):
        self.store, self.selection = store, selection
        self.specs = {s["name"]: s for s in store.studies()}
        self._views: dict[str, View] = {}

    def __call__(self, study: str) -> View:
        if study not in self._views:
            row = self.specs.get(study)
            spec = row["spec"] if row else {}
            found = study_variants(self.store, study, runs_frame(self.store, study)) if row else []
            view = View(study, spec, found, description=row["description"] if row else "")
            if found:
                try:
                    view.variant = select(found, self.selection, study)
                except VariantError as e:
                    view.problem = str(e)
            self._views[study] = view
        return self._views[study]

    def studies(self) -> list[str]:
        return list(self.specs)


def footer(view: View) -> str:
    """What the numbers of a study's figure and table are: data, epochs, subset, seeds, CI,
    and the runs left out of them."""
    v = view.variant
    low, high = v.seeds(measured="test_acc")
    epochs = v.common.get("epochs")
    subset = v.common.get("train_subset")
    devices = sorted(set(v.finished["device"].dropna())) if "device" in v.finished else []
    parts = [
        f"Data: {v.data}",
        f"device: {', '.join(devices) or 'not recorded'}",
        (f"{int(epochs)} epoch{'s' * (int(epochs) != 1)}" if epochs is not None else "epochs: an axis of the study"),
        f"a {int(subset):,}-image training subset" if subset is not None else "the whole training set",
    ]
    if high == 0:
        parts.append("n = 0: no run has a test accuracy, so nothing is plotted")
    elif high <= 1:
        parts.append(
            f"n = {low} to 1 seed per point: no error bars (a second seed gives them)"
            if low < high
            else "n = 1 seed per point: no error bars (a second seed gives them)"
        )
    elif low == high:
        parts.append(f"n = {high} seeds per point; error bars: 95% CI over the {high} seeds")
    else:
        parts.append(
            f"n = {low} to {high} seeds per point; error bars: 95% CI over each point's seeds (none where n = 1)"
        )
    text = "; ".join(parts) + "."
    dropped = left_out_text(left_out(v.runs))
    if dropped:
        text += f" Left out: {dropped}."
    variant = f" Variant {v.key}: {v.describe()}"
    if len(view.variants) > 1:
        variant += (
            f" (1 of {len(view.variants)} variants of '{view.name}': `ablate status {view.name}` "
            f"lists them, `ablate report --variant KEY` draws another)"
        )
    return text + variant + "."


def partial_note(view: View) -> str:
    v = view.variant
    return f"partial: {v.done_points} of {v.points} points" if v is not None and v.partial else ""


# ------------------------------------------------------------------------ drawing


def draw_figures(store: Store, out: Path, numbers: list[int] | None = None, views: Views | None = None) -> list[Entry]:
    out.mkdir(parents=True, exist_ok=True)
    views = views or Views(store)
    entries = []
    for n in check_numbers(numbers):
        spec = figures.get(n)
        view = views(spec.study)
        if n == 0 and view.variant is None and not numbers:
            continue  # the CI smoke figure is not the report's: only drawn once smoke has runs
        entry = Entry(n, spec.study, spec.caption, view=view)
        entries.append(entry)
        if view.problem:
            entry.problem = view.problem
            continue
        runs = view.finished
        if runs.empty:
            entry.command = rerun(view, store.url, None)
            v = view.variant
            counts = left_out(v.runs) if v is not None else {}
            entry.empty = (
                f"no finished runs of study '{spec.study}' ({left_out_text(counts)})"
                if counts
                else f"no runs of study '{spec.study}' yet"
            )
            continue
        ids = runs["run_id"].tolist()
        entry.note, entry.footer = partial_note(view), footer(view)
        try:
            fig, plotted = spec.draw(
                runs, metrics_frame(store, ids), artifacts_map(store, ids), note=entry.note, footer=entry.footer
            )
        except ValueError as e:  # e.g. the study ran, but not the point this figure needs
            entry.problem = str(e)
            continue
        entry.png, entry.csv = out / f"figure-{n:02d}.png", out / f"figure-{n:02d}.csv"
        figures.save(fig, entry.png)
        plotted.to_csv(entry.csv, index=False)
        entry.table = point_table(store, runs, view.axes)
    return entries


def other_studies(store: Store, drawn: set[str], views: Views) -> list[tuple[View, pd.DataFrame]]:
    """(view, point table) of studies with finished runs and no figure."""
    out = []
    for name in views.studies():
        view = views(name)
        if name in drawn or view.spec.get("reported") or name == "smoke" or view.finished.empty:
            continue
        out.append((view, point_table(store, view.finished, view.axes)))
    return out


def results_table(store: Store, views: Views) -> pd.DataFrame:
    """The report's results, side by side with ours: one row per recipe that has runs."""
    rows = []
    for name in views.studies():
        view = views(name)
        reported = view.spec.get("reported")
        runs = view.finished
        if not reported or runs.empty:
            continue
        mean, low, high, n = stats.mean_ci(runs["test_acc"].tolist(), bounds=stats.ACCURACY)
        params = metrics_frame(store, runs["run_id"].tolist(), ["params"])["value"]
        rows.append(
            {
                "recipe": name,
                "model": runs["model.name"].iloc[0],
                "test_acc": mean,
                "ci_low": low,
                "ci_high": high,
                "n": n,
                "epochs": int(runs["epochs"].iloc[0]),
                "wall_s": runs["wall_s"].mean(),
                "device": ", ".join(sorted(set(runs["device"].dropna()))),
                "data": view.variant.data,
                "layers": reported.get("layers"),
                "params": int(params.iloc[0]) if len(params) else None,
                "report_acc": reported.get("acc"),
                "report_epochs": reported.get("epochs"),
                "report_note": reported.get("note", ""),
            }
        )
    return pd.DataFrame(rows)


def _study_file(view: View):
    """The study file of the view's name, where its grid is the one recorded (or nothing is
    recorded): its claims and assumptions are the current reading of these runs. None where
    there is no such file, or it now defines another grid."""
    from ablate.studies import StudyError, load, study_files  # torch: only for such studies

    if view.name not in study_files():
        return None
    try:
        study = load(view.name)
    except StudyError:
        return None
    if view.spec and (study.axes != view.axes or study.base != (view.spec.get("base") or {})):
        return None
    return study


def study_claims(view: View) -> tuple[list[claims_.Claim], dict[str, list[Any]]]:
    """The claims of the study file of the study's name, where it still defines the recorded
    grid: claims are a reading of the runs, not part of what they computed, so a better check
    applies to runs made before it. Otherwise those recorded with the study."""
    study = _study_file(view)
    if study is not None:
        return list(study.claims), study.axes
    items = view.spec.get("claims")
    if items is not None:
        return list(claims_.parse_all(items, view.axes)), view.axes
    return [], view.axes


def study_assumed(view: View) -> list[str]:
    """What the study takes that the report does not say (its file's ``assumed``)."""
    study = _study_file(view)
    return list(study.assumed) if study is not None else list(view.spec.get("assumed") or [])


def rerun(view: View, db: str | None = None, seeds: int | None = 3) -> str:
    """The command that adds seeds to the drawn variant (or, with ``seeds`` None, fills it):
    its options, its database, and --retry-failed where it has failed runs."""
    v = view.variant
    failed = v is not None and bool((v.runs["status"] == "failed").any())
    return run_command(view.name, v, db, seeds, retry_failed=failed)


def check_claims(store: Store, views: Views) -> list[claims_.Verdict]:
    """Every claim of the studies in the database and of the built-in ones, each over its
    study's drawn variant ("not run" where it has none), in the report's order."""
    from ablate.studies import study_files

    out = []
    for name in dict.fromkeys([*views.studies(), *study_files()]):
        view = views(name)
        try:
            found, axes = study_claims(view)
        except ConfigError as e:
            raise ConfigError(f"study '{name}': {e}") from None
        if not found:
            continue
        runs = (
            with_derived(store, view.finished, {c.metric for c in found}) if not view.finished.empty else view.finished
        )
        for claim in found:
            if view.variant is None:
                why = view.problem or rerun(view, store.url, None)
                out.append(claims_.Verdict(claim, "not run", claims_.describe(claim, axes), "-", why, name))
                continue
            verdict = claims_.evaluate(claim, runs, axes, name, rerun(view, store.url), rerun(view, store.url, None))
            dropped = left_out_text(left_out(claims_.where(_claim_runs(view, runs), claim, axes), claim.metric))
            if dropped:
                verdict.evidence = ("" if verdict.evidence == "-" else verdict.evidence + "; ") + f"left out: {dropped}"
            out.append(verdict)
    return sorted(out, key=lambda v: (_section_key(v.claim.section), v.study))


def _claim_runs(view: View, runs: pd.DataFrame) -> pd.DataFrame:
    """Every run of the drawn variant, the finished ones with their derived metrics."""
    unsettled = view.variant.runs[~view.variant.runs["status"].isin(DONE)]
    return pd.concat([runs, unsettled], ignore_index=True) if len(unsettled) else runs


def _section_key(section: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 999 for x in (section or "999").split("."))


def write_report(
    store: Store, out: Path, numbers: list[int] | None = None, selection: str | dict[str, Any] | None = None
) -> list[Entry]:
    """Draw the figures into ``out`` and write ``out/README.md``.

    With ``numbers`` only those figures are drawn, and only their sections of an existing
    README are replaced; every other section stays as it was. ``selection`` picks each
    study's variant (``ablate.variants.select``; None: each study's default).
    """
    out = Path(out)
    views = Views(store, selection)
    if numbers and selection is not None:  # a figure asked for by name, in a variant it lacks: say so, draw nothing
        for n in check_numbers(numbers):
            problem = views(figures.get(n).study).problem
            if problem:
                raise VariantError(problem)
    entries = draw_figures(store, out, numbers, views)
    readme = out / "README.md"
    sections = figure_sections(entries, significance(store, views, {e.study for e in entries if e.table is not None}))
    if numbers and readme.exists():
        text = replace_sections(readme.read_text(), sections)
    else:
        extra = [] if numbers else other_studies(store, {e.study for e in entries}, views)
        notes = significance(store, views, {v.name for v, _ in extra})
        results = pd.DataFrame() if numbers else results_table(store, views)
        verdicts = [] if numbers else check_claims(store, views)
        drawn = {v.name: study_figures.draw(store, v, out, footer(v)) for v, _ in extra}
        if not numbers and not any(e.png or e.problem for e in entries):  # only the user's own studies
            sections, verdicts = study_figures.collapse(entries, verdicts)
        assumed = {name: study_assumed(views(name)) for name in dict.fromkeys(v.study for v in verdicts)}
        text = render_readme(store, sections, extra, results, verdicts, notes, assumed, drawn)
    readme.write_text(text)
    return entries


def significance(store: Store, views: Views, studies: set[str]) -> dict[str, str]:
    """Study -> the line under its table naming the values that differ from the baseline at
    p < 0.05; only studies whose runs pair up at least twice (two seeds) get one."""
    out = {}
    for name in studies:
        view = views(name)
        line = _significance_md(compare.compare_axes(view.finished, view.axes, name))
        if line:
            out[name] = line
    return out


# ------------------------------------------------------------------------- markdown

SECTION = "<!-- ablate:{} -->"
END = "<!-- ablate:end -->"


def _section(name: str, body: list[str]) -> str:
    return "\n".join([SECTION.format(name), *body, END])


def _pct(x: float) -> str:
    return "-" if pd.isna(x) else f"{100 * x:.2f}%"


def _ci(low: float, high: float) -> str:
    return "-" if pd.isna(low) else f"{100 * low:.2f} to {100 * high:.2f}%"


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
        + [
            _pct(r["mean"]),
            _ci(r["ci_low"], r["ci_high"]),
            str(int(r["n"])),
            "-" if pd.isna(r["epoch_s"]) else f"{r['epoch_s']:.1f}",
        ]
        for _, r in table.iterrows()
    ]
    return _md(head, rows)


def _results_md(results: pd.DataFrame) -> str:
    head = [
        "recipe",
        "model",
        "test acc",
        "95% CI",
        "n",
        "epochs",
        "wall time",
        "device",
        "data",
        "layers",
        "parameters",
        "report",
    ]
    rows = [
        [
            r["recipe"],
            r["model"],
            _pct(r["test_acc"]),
            _ci(r["ci_low"], r["ci_high"]),
            str(r["n"]),
            str(r["epochs"]),
            f"{r['wall_s'] / 60:.1f} min",
            r["device"] or "-",
            r["data"],
            str(r["layers"]),
            f"{r['params']:,}" if pd.notna(r["params"]) else "-",
            f"{100 * r['report_acc']:.2f}% in {r['report_epochs']} epochs ({r['report_note']})",
        ]
        for _, r in results.iterrows()
    ]
    return _md(head, rows)


def _claims_md(verdicts: list[claims_.Verdict]) -> list[str]:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in claims_.VERDICTS}
    head = ["§", "the report says", "study", "check", "verdict", "evidence"]
    rows = []
    for v in verdicts:
        verdict = f"**{v.verdict}**" + (f" ({v.why})" if v.why else "")
        rows.append(
            [
                v.claim.section or "-",
                _escape(v.claim.text),
                f"`{v.study}`",
                _escape(v.check),
                verdict,
                _escape(v.evidence),
            ]
        )
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    return [
        f"Each claim of the report that a study can test, checked over the study's drawn variant ({summary}). "
        "The seed is the unit: runs are paired by seed and the study's other axes (blocks), a seed's blocks "
        "are averaged, and n counts seeds. The test is the paired t-test, or the exact sign-flip test for a "
        "0/1 metric and for differences with no spread; a claim over several comparisons is corrected by Holm. "
        "Supported: the 95% interval (adjusted p < 0.05) lies on the claim's side of its boundary (0, a margin, "
        "a ratio, a level), for every comparison the claim needs; contradicted: on the other side; "
        "inconclusive: neither, which is all one seed per point can give (the direction is still said, and "
        "whether every block agrees). Every comparison is listed under Claims in detail.",
        "",
        _md(head, rows),
    ]


def _claims_detail_md(verdicts: list[claims_.Verdict]) -> list[str]:
    """Every comparison of every claim with runs: what the one-line evidence summarises."""
    out = [
        "Each claim's comparisons: the difference (first named minus second, mean over seeds), its 95% "
        "interval (Student t; none with one seed or no spread), the boundary the claim needs it past, and "
        "the p-values for and against the claim, Holm-adjusted within the claim."
    ]
    head = ["comparison", "difference", "95% CI", "claim needs", "p for", "p against", "test", "n"]
    for v in verdicts:
        if not v.comparisons:
            continue
        out += [
            "",
            f"**{v.claim.section} {_escape(v.claim.text)}** (`{v.study}`: {v.verdict}). {_escape(v.check)}.",
            "",
            _md(
                head,
                [
                    [
                        _escape(str(c[k]))
                        for k in ("comparison", "difference", "95% CI", "boundary", "p for", "p against", "test", "n")
                    ]
                    for c in v.comparisons
                ],
            ),
        ]
    return out


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _significance_md(comparisons: list[compare.Comparison]) -> str:
    parts = []
    for c in comparisons:
        if not c.tested:
            continue
        found = [f"{r.value} ({100 * r.mean_diff:+.2f} pp, Holm p {_p(r.p_holm)})" for r in c.significant]
        parts.append(f"`{c.axis}` against {c.baseline}: {', '.join(found) if found else 'none'}.")
    if not parts:
        return ""
    return (
        "Differ from the baseline at p < 0.05, Holm-corrected over the axis's values (`ablate compare`: "
        "runs matched by seed and the other axes, the seed as the unit): " + " ".join(parts)
    )


def _first_figures() -> dict[str, int]:
    """Study -> its first registered figure, under which its table goes."""
    out: dict[str, int] = {}
    for n in sorted(figures.FIGURES):
        out.setdefault(figures.FIGURES[n].study, n)
    return out


def figure_sections(entries: list[Entry], notes: dict[str, str]) -> dict[str, str]:
    """``figure-N`` -> its README section: the image, the caption line, the study's table."""
    first = _first_figures()
    out = {}
    for e in entries:
        body = ["", f"## Figure {e.number}: {e.caption}" + (f" ({e.note})" if e.note else ""), ""]
        if e.problem:
            body.append(f"Not drawn: {e.problem}.")
        elif e.png is None:
            body.append(f"{e.empty[0].upper()}{e.empty[1:]}: `{e.command}` fills this figure.")
        else:
            body += [
                f"![Figure {e.number}]({e.png.name})",
                "",
                e.footer,
                "",
                f"Study `{e.study}`; numbers: [{e.csv.name}]({e.csv.name}).",
            ]
            if e.table is not None and first.get(e.study) == e.number:
                body += ["", _table_md(e.table)]
                if e.study in notes:
                    body += ["", notes[e.study]]
                body += _assumed_md(study_assumed(e.view))
        out[f"figure-{e.number}"] = _section(f"figure-{e.number}", body + [""])
    return out


def replace_sections(text: str, sections: dict[str, str]) -> str:
    """``text`` with each named section replaced (or, if absent, put in figure order)."""
    for name, section in sections.items():
        pattern = re.compile(re.escape(SECTION.format(name)) + r".*?" + re.escape(END), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _, section=section: section, text, count=1)
            continue
        number = int(name.split("-")[1])
        later = [m for m in re.finditer(r"<!-- ablate:figure-(\d+) -->", text) if int(m.group(1)) > number]
        if later:
            text = text[: later[0].start()] + section + "\n" + text[later[0].start() :]
        else:
            text = text.rstrip("\n") + "\n" + section + "\n"
    return text


def _stamp(store: Store) -> str:
    """When the newest run of the database ended (or was recorded): the report is a function
    of the database, so it carries no clock of its own and redraws byte for byte."""
    stamps = [t for r in store.runs() for t in (r["ended_at"], r["created_at"]) if t is not None]
    return max(stamps).strftime("%Y-%m-%d %H:%M UTC") if stamps else "no runs yet"


def render_readme(
    store: Store,
    sections: dict[str, str],
    extra: list[tuple[View, pd.DataFrame]],
    results: pd.DataFrame,
    verdicts: list[claims_.Verdict],
    notes: dict[str, str],
    assumed: dict[str, list[str]] | None = None,
    drawn: dict[str, Any] | None = None,
) -> str:
    parts = [
        "# Study report",
        "",
        f"Generated by `ablate report` from `{store.url}` (its newest run: {_stamp(store)}). Every figure "
        "is drawn from the database alone; `figure-NN.csv` beside each holds the exact numbers plotted. Each "
        "study is drawn from one variant: the runs that share one config apart from the study's axes and the "
        "seed, so each point is one config and n counts its seeds. Accuracies are final test accuracies: mean "
        "over seeds, 95% confidence interval (Student t, clipped to 0 to 100%).",
    ]
    if not results.empty:
        parts += ["", _section("results", ["", "## Results", "", _results_md(results), ""])]
    if verdicts:
        said = [
            f"- `{name}`: " + " ".join(f"({i}) {_escape(a)}." for i, a in enumerate(items, 1))
            for name, items in sorted((assumed or {}).items())
            if items
        ]
        what = (
            ["", "What each study assumes where the report does not say (its file's `assumed`):", "", *said]
            if said
            else []
        )
        parts += ["", _section("claims", ["", "## Claims", "", *_claims_md(verdicts), *what, ""])]
    parts += ["", *sections.values()]
    for view, table in extra:
        parts += ["", _study_section(view, table, notes.get(view.name), (drawn or {}).get(view.name))]
    if any(v.comparisons for v in verdicts):
        parts += ["", _section("claims-detail", ["", "## Claims in detail", "", *_claims_detail_md(verdicts), ""])]
    return "\n".join(parts) + "\n"


def _study_section(view: View, table: pd.DataFrame, note: str | None, drawn=None) -> str:
    body = ["", f"## Study `{view.name}`", "", view.description, ""]
    body += study_figures.figure_lines(drawn)
    body += [footer(view), "", _table_md(table)]
    if note:
        body += ["", note]
    body += _assumed_md(study_assumed(view))
    return _section(f"study-{view.name}", body + [""])


def _assumed_md(assumed: list[str]) -> list[str]:
    if not assumed:
        return []
    return [
        "",
        "Assumed, where the report does not say: " + " ".join(f"({i}) {_escape(a)}." for i, a in enumerate(assumed, 1)),
    ]
