"""A figure for every study: the generic figure of a study that feeds none of the report's,
chosen by its axes, with the plotted numbers in its CSV; a report of the user's studies only."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.config import to_dict
from ablate.report import write_report
from ablate.run import _study_spec
from ablate.store import NewRun, Store
from ablate.studies import expand, parse

AXES = {
    "one": '"model.width" = [4, 8, 16]',
    "two": '"model.width" = [4, 8]\n"model.activation" = ["relu", "gelu"]',
    "three": '"model.width" = [4, 8]\n"model.activation" = ["relu", "gelu"]\n"optimizer.lr" = [0.05, 0.1]',
}


def study_text(name: str) -> str:
    return (
        f'name = "{name}"\ndescription = "a study of my own ({name} axes)"\nseeds = 2\n'
        '[base]\nepochs = 3\ndata = { dataset = "synthetic" }\nmodel = { name = "plain_cnn", depth = 1 }\n'
        f"[axes]\n{AXES[name]}\n"
    )


def fake_runs(store: Store, name: str) -> pd.DataFrame:
    """Every point and seed of the study, finished with made-up but fixed numbers; returns
    (run_id, axis values, seed, test_acc)."""
    study = parse(study_text(name))
    sid = store.sync_study(study.name, study.description, _study_spec(study))
    points = expand(study)
    store.add_runs(sid, [NewRun(p.config_hash, p.seed, to_dict(p.config), p.label, "fp", "synthetic") for p in points])
    rows = []
    for p in points:
        claim = store.claim(sid, "cpu", "host", 1)
        digest = int(hashlib.sha256(f"{claim.label}|{claim.seed}".encode()).hexdigest()[:8], 16)
        acc = 0.3 + 0.5 * (digest % 1000) / 1000
        for epoch in (1, 2, 3):
            store.record_epoch(
                claim.run_id,
                epoch,
                {"test_acc": acc * epoch / 3, "train_loss": 2.0 / epoch, "macro_f1": acc * 0.9 * epoch / 3},
                token=claim.token,
            )
        store.finish(claim.run_id, "complete", {"test_acc": acc}, 1.0, token=claim.token)
        rows.append(
            {
                "run_id": claim.run_id,
                **{k.split(".")[-1]: v for k, v in zip(study.axes, [p.axes[a] for a in study.axes])},
                "seed": claim.seed,
                "test_acc": acc,
            }
        )
    return pd.DataFrame(rows)


def hand_summary(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return runs.groupby(by, sort=False)["test_acc"].agg(["mean", "count"]).reset_index()


@pytest.mark.parametrize(
    "name, by", [("one", ["width"]), ("two", ["width", "activation"]), ("three", ["width", "activation", "lr"])]
)
def test_the_generic_figure_by_axes_plots_the_means_and_redraws_byte_for_byte(tmp_path, db_url, name, by):
    store = Store.open(db_url)
    try:
        runs = fake_runs(store, name)
        write_report(store, tmp_path / "a")
        write_report(store, tmp_path / "b")
    finally:
        store.close()
    csv = pd.read_csv(tmp_path / "a" / f"study-{name}.csv", dtype=str)
    full = {"width": "model.width", "activation": "model.activation", "lr": "optimizer.lr"}
    assert list(csv.columns) == [*(full[b] for b in by), "metric", "mean", "ci_low", "ci_high", "n"]
    expected = hand_summary(runs, by).to_dict("records")
    assert len(csv) == len(expected) == (3 if name == "one" else 2 ** len(by))
    got = {tuple(r[full[b]] for b in by): (float(r["mean"]), int(r["n"])) for r in csv.to_dict("records")}
    for r in expected:
        mean, n = got[tuple(str(r[b]) for b in by)]
        assert mean == pytest.approx(r["mean"], abs=1e-12) and n == r["count"] == 2
    curves = pd.read_csv(tmp_path / "a" / f"study-{name}-curves.csv")
    assert set(curves["epoch"]) == {1, 2, 3} and len(curves) == 3 * len(expected)
    for file in (f"study-{name}.png", f"study-{name}.csv", f"study-{name}-curves.csv", "README.md"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    readme = (tmp_path / "a" / "README.md").read_text()
    # Only the user's study: the report's twelve figures and their claims in one line, not sections.
    assert f"![Study {name}](study-{name}.png)" in readme
    assert "## Figure" not in readme and "**not run**" not in readme
    assert readme.count("have no runs in this database") == 1


def test_report_study_draws_one_study_and_metric_by_name(tmp_path, db_url):
    store = Store.open(db_url)
    try:
        fake_runs(store, "one")
        fake_runs(store, "two")
    finally:
        store.close()
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "--study", "two", "--db", db_url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "study-two-curves.csv",
        "study-two.csv",
        "study-two.png",
    ]
    assert "<!-- ablate:study-two -->" in (out / "README.md").read_text()
    again = CliRunner().invoke(app, ["report", "--study", "one", "--db", db_url, "--out", str(out)])
    assert again.exit_code == 0, again.output
    text = (out / "README.md").read_text()
    assert "<!-- ablate:study-two -->" in text and "<!-- ablate:study-one -->" in text
    bad = CliRunner().invoke(app, ["report", "--study", "nosuch", "--db", db_url, "--out", str(out)])
    assert bad.exit_code == 2 and "unknown study 'nosuch'" in bad.output


def test_the_generic_figure_takes_an_evaluated_metric(tmp_path, db_url):
    from ablate.report import Views, footer
    from ablate.study_figures import draw

    store = Store.open(db_url)
    try:
        runs = fake_runs(store, "one")
        view = Views(store)("one")
        drawn = draw(store, view, tmp_path, footer(view), metric="macro_f1")
    finally:
        store.close()
    csv = pd.read_csv(drawn.csv)
    assert set(csv["metric"]) == {"macro_f1"}
    expected = runs.assign(f1=runs["test_acc"] * 0.9).groupby("width")["f1"].mean()
    assert np.allclose(csv.set_index("model.width")["mean"].sort_index(), expected.sort_index())


def test_an_accuracy_heatmap_s_colour_bar_reads_in_percent_as_its_cells_do():
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    from ablate import figures

    summary = pd.DataFrame({"a": [1, 1, 2, 2], "b": [0, 1, 0, 1], "mean": [0.41, 0.45, 0.41, 0.475]})
    for metric, percent in (("test_acc", True), ("macro_f1", True), ("test_loss", False)):
        fig = Figure()
        figures._heatmap(fig.subplots(), summary, ["a", "b"], {"a": True, "b": True}, metric)
        bar = fig.axes[1].yaxis.get_major_formatter()
        assert isinstance(bar, PercentFormatter) == percent, metric
        if percent:
            assert bar(0.45, 0) == "45%"
