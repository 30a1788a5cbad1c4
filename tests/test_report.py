"""The report's README from a database filled by hand: tables, results, gaps."""

import json

from ablate.report import axis_columns, write_report
from ablate.store import NewRun


def _fill(store, study, spec, points, description=""):
    """points: (config dict, seed, test_acc, epoch_time); one config hash per config, as a study makes them"""
    sid = store.sync_study(study, description, spec)
    store.add_runs(
        sid, [NewRun(json.dumps(cfg, sort_keys=True), seed, cfg, f"p{i}") for i, (cfg, seed, _, _) in enumerate(points)]
    )
    for _, _, acc, epoch_s in points:
        claim = store.claim(sid, "cpu", "host", 1)
        store.record_epoch(claim.run_id, 1, {"test_acc": acc, "epoch_time": epoch_s, "params": 1234})
        store.finish(claim.run_id, "complete", {"test_acc": acc}, wall_s=120.0)


def test_results_table_sets_ours_beside_the_reports(store, tmp_path):
    spec = {"axes": {}, "reported": {"acc": 0.92, "epochs": 12, "layers": 9, "note": "one-cycle"}}
    cfg = {"model": {"name": "resnet9"}, "epochs": 12}
    _fill(store, "fast", spec, [(cfg, 0, 0.90, 10.0), (cfg, 1, 0.92, 12.0)])
    write_report(store, tmp_path / "r")
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "## Results" in readme
    row = next(line for line in readme.splitlines() if line.startswith("| fast"))
    assert "91.00%" in row and "| 2 |" in row and "1,234" in row and "92.00% in 12 epochs" in row
    assert "2.0 min" in row


def test_studies_without_a_figure_get_a_table(store, tmp_path):
    spec = {"axes": {"loss.label_smoothing": [0.0, 0.1]}}
    _fill(
        store,
        "loss",
        spec,
        [
            ({"loss": {"label_smoothing": 0.0}}, 0, 0.5, 3.0),
            ({"loss": {"label_smoothing": 0.1}}, 0, 0.6, 5.0),
        ],
        description="label smoothing",
    )
    write_report(store, tmp_path / "r")
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "## Study `loss`" in readme
    assert "| 0.1 | 60.00% | - | 1 | 5.0 |" in readme


def test_table_valued_axes_become_their_columns():
    axes = {"optimizer": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}], "model.depth": [1, 2]}
    columns = ["optimizer.name", "optimizer.lr", "model.depth", "seed"]
    assert axis_columns(axes, columns) == ["optimizer.name", "optimizer.lr", "model.depth"]


def test_one_figure_writes_only_that_figure(store, tmp_path):
    write_report(store, tmp_path / "r", [4])
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "Figure 4" in readme and "Figure 1:" not in readme and "ablate run depth" in readme


def test_readme_names_the_values_that_differ_from_the_baseline(store, tmp_path):
    spec = {"axes": {"loss.label_smoothing": [0.0, 0.1, 0.2]}}
    points = []
    for s, base in enumerate([0.50, 0.55, 0.52]):
        points += [
            ({"loss": {"label_smoothing": 0.0}}, s, base, 3.0),
            ({"loss": {"label_smoothing": 0.1}}, s, base + 0.05 + 0.001 * s, 3.0),
            ({"loss": {"label_smoothing": 0.2}}, s, base + (-0.01, 0.012, -0.002)[s], 3.0),
        ]
    _fill(store, "loss", spec, points, description="label smoothing")
    write_report(store, tmp_path / "r")
    readme = (tmp_path / "r" / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("Differ from the baseline"))
    assert "`loss.label_smoothing` against 0.0: 0.1 (+5.10 pp, Holm p < 0.001)." in line
    assert "0.2 (" not in line


def test_one_seed_adds_no_significance_line(store, tmp_path):
    spec = {"axes": {"loss.label_smoothing": [0.0, 0.1]}}
    _fill(store, "loss", spec, [({"loss": {"label_smoothing": v}}, 0, 0.5 + v, 3.0) for v in (0.0, 0.1)])
    write_report(store, tmp_path / "r")
    assert "Differ from the baseline" not in (tmp_path / "r" / "README.md").read_text()


def test_the_smoke_figure_is_left_out_until_smoke_has_runs(store, tmp_path):
    """Figure 0 is CI's, not the report's: a report of the report's studies has no empty
    "Figure 0: Smoke study" section."""
    spec = {"axes": {"model.dropout": [0.0, 0.5]}}
    _fill(store, "dropout", spec, [({"model": {"dropout": d}}, 0, 0.5, 3.0) for d in (0.0, 0.5)])
    write_report(store, tmp_path / "r")
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "## Figure 0" not in readme and "## Figure 9" in readme and "## Figure 4" in readme
