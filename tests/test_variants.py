"""Variants: a study run with other options is another variant of it, and no statistic ever
pools two of them. The issue's reproductions, end to end through the CLI, then the parts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from typer.testing import CliRunner

from ablate import figures, stats
from ablate.cli import app
from ablate.config import ConfigError
from ablate.report import write_report
from ablate.results import runs_frame, study_variants
from ablate.store import NewRun, Store
from ablate.studies import expand, load
from ablate.variants import VariantError, parse_selector, select
from tests.conftest import file_digest

runner = CliRunner()
ASSETS = Path(__file__).parent / "assets"
FAST = ["--device", "cpu", "--set", "model.width=8"]  # the smoke net, narrower: seconds for the lot


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_ok(*args):
    result = invoke("run", *args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The issue's reproduction: the smoke study, then again with a subset and 1 epoch."""
    url = f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'mix.db'}"
    run_ok("smoke", "--db", url, *FAST, "--set", "train_subset=256")
    run_ok("smoke", "--db", url, *FAST, "--set", "train_subset=100", "--epochs", "1")
    return url


def test_each_variant_is_drawn_alone_one_row_per_point_n_1(mixed, tmp_path):
    result = invoke("report", "--figure", 0, "--db", mixed, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    drawn = pd.read_csv(tmp_path / "a" / "figure-00.csv")
    assert len(drawn) == 4 and (drawn["n"] == 1).all()  # before: 4 rows of n = 2, pooled
    assert drawn["ci_low"].isna().all()  # one seed: no interval at all, let alone -278%

    other = invoke("report", "--figure", 0, "--db", mixed, "--out", tmp_path / "b", "--epochs", 2)
    assert other.exit_code == 0, other.output
    drawn_other = pd.read_csv(tmp_path / "b" / "figure-00.csv")
    assert len(drawn_other) == 4 and (drawn_other["n"] == 1).all()

    runs = runs_frame(Store.open(mixed, create=False), "smoke")
    by_epochs = {e: sorted(runs[runs["epochs"] == e]["test_acc"]) for e in (1, 2)}
    assert sorted(drawn["mean"]) == pytest.approx(by_epochs[1])  # the default: the most recent of two equals
    assert sorted(drawn_other["mean"]) == pytest.approx(by_epochs[2])


def test_variant_by_key_and_the_readme_names_it(mixed, tmp_path):
    status = json.loads(invoke("status", "smoke", "--db", mixed, "--json").output)
    (study,) = status["studies"]
    variants = study["variants"]
    assert len(variants) == 2 and variants[0]["default"]
    assert {tuple(sorted(v["diff"].items())) for v in variants} == {  # smoke's base: 2 epochs, width 16
        (("model.width", 8), ("train_subset", 256)),
        (("epochs", 1), ("model.width", 8), ("train_subset", 100)),
    }
    key = next(v["key"] for v in variants if "epochs" in v["diff"])
    result = invoke("report", "--db", mixed, "--out", tmp_path, "--variant", key[:6])
    assert result.exit_code == 0, result.output
    readme = (tmp_path / "README.md").read_text()
    assert f"Variant {key}: epochs=1, model.width=8, train_subset=100 (1 of 2 variants of 'smoke'" in readme
    assert "Data: synthetic (fingerprint" in readme and "1 epoch;" in readme
    assert "n = 1 seed per point: no error bars" in readme
    table = [line for line in readme.splitlines() if line.startswith("| 1 | relu")]
    assert len(table) == 1 and "| - | 1 |" in table[0]


def test_status_lists_the_variants(mixed):
    result = invoke("status", "smoke", "--db", mixed)
    assert result.exit_code == 0, result.output
    assert "smoke: 2 variant(s)" in result.output and "epochs=1" in result.output


def test_compare_and_export_draw_one_variant(mixed, tmp_path):
    found = json.loads(invoke("compare", "smoke", "--by", "model.depth", "--db", mixed, "--json").output)
    # one seed, the relu and gelu blocks of one variant: not the four runs of two variants
    assert all((r["n"], r["blocks"]) == (1, 2) for r in found["comparisons"])
    assert found["variant"].startswith(select_default_key(mixed))
    result = invoke("export", "smoke", "--db", mixed, "--out", tmp_path / "one.csv")
    assert result.exit_code == 0, result.output
    one = pd.read_csv(tmp_path / "one.csv")
    assert len(one) == 4 and one["variant"].nunique() == 1
    invoke("export", "smoke", "--db", mixed, "--out", tmp_path / "all.csv", "--variant", "all")
    assert pd.read_csv(tmp_path / "all.csv")["variant"].nunique() == 2


def select_default_key(url):
    store = Store.open(url, create=False)
    try:
        return study_variants(store, "smoke")[0].key
    finally:
        store.close()


def test_a_variant_that_does_not_exist_is_one_line_and_writes_nothing(mixed, tmp_path):
    before = file_digest(Path(mixed.removeprefix("sqlite:///")))
    for args in (
        ["--variant", "epochs=7"],
        ["--variant", "fff"],
        ["--variant", "not a key"],
        ["--variant", "ab", "--epochs", "2"],
    ):
        result = invoke("report", "--figure", 0, "--db", mixed, "--out", tmp_path / "x", *args)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and "error:" in result.output, args
    assert not (tmp_path / "x" / "README.md").exists()
    assert file_digest(Path(mixed.removeprefix("sqlite:///"))) == before


# ------------------------------------------------------------------------- parts


def _fill(store, study, axes, points, base=None, data=("fp", "synthetic")):
    """points: (config, seed, status, test_acc); one hash per config, as a study makes them."""
    sid = store.sync_study(study, "", {"base": base or {}, "axes": axes})
    store.add_runs(
        sid, [NewRun(json.dumps(c, sort_keys=True), s, c, f"p{i}", *data) for i, (c, s, _, _) in enumerate(points)]
    )
    for _, _, status, acc in points:
        claim = store.claim(sid, "cpu", "h", 1)
        if status == "pending":
            store.release(claim.run_id)
            continue
        store.record_epoch(claim.run_id, 1, {"test_acc": acc, "train_loss": 1.0})
        store.finish(claim.run_id, status, {"test_acc": acc})


def test_the_default_variant_has_the_most_finished_runs(store):
    axes = {"model.depth": [1, 2]}
    a = [({"model": {"depth": d}, "epochs": 1}, s, "complete", 0.5) for d in (1, 2) for s in (0, 1)]
    b = [({"model": {"depth": d}, "epochs": 2}, 0, "complete", 0.6) for d in (1, 2)]
    _fill(store, "toy", axes, a + b)
    found = study_variants(store, "toy")
    assert [v.results for v in found] == [4, 2]
    assert found[0].diff == {"epochs": 1} and found[1].diff == {"epochs": 2}
    assert found[0].seeds() == (2, 2) and found[1].seeds() == (1, 1)
    assert select(found, None, "toy") is found[0]
    assert select(found, {"epochs": 2}, "toy") is found[1]
    assert select(found, found[1].key[:5], "toy") is found[1]
    with pytest.raises(VariantError, match="matches no variant.*its variants"):
        select(found, {"epochs": 3}, "toy")


def test_key_value_pairs_that_match_several_variants_are_refused_with_the_matches_listed(store):
    axes = {"model.depth": [1, 2]}
    points = [
        ({"model": {"depth": d}, "epochs": e, "train_subset": 64}, 0, "complete", 0.5) for d in (1, 2) for e in (2, 3)
    ]
    points += [({"model": {"depth": d}, "epochs": 4}, 0, "complete", 0.5) for d in (1, 2)]
    _fill(store, "toy", axes, points)
    found = study_variants(store, "toy")
    with pytest.raises(VariantError) as e:
        select(found, {"train_subset": 64}, "toy")
    message = str(e.value)
    listed = [v for v in found if v.key in message]
    assert "\n" not in message and "matches 2 variants" in message
    assert sorted(v.diff["epochs"] for v in listed) == [2, 3]  # the two that match, not the third
    chosen = select(found, {"train_subset": 64, "epochs": 3}, "toy")
    assert chosen.diff == {"epochs": 3, "train_subset": 64}


def test_a_partial_variant_says_how_many_points_it_has(store, tmp_path):
    axes = {"model.dropout": [0.0, 0.1, 0.2]}
    points = [({"model": {"dropout": d}}, 0, "complete" if d < 0.2 else "pending", 0.5 + d) for d in (0.0, 0.1, 0.2)]
    _fill(store, "dropout", axes, points)
    (entry,) = write_report(store, tmp_path, [9])
    assert entry.note == "partial: 2 of 3 points"
    assert (
        "## Figure 9: Accuracy when Different Dropout is Assigned to FCLayer (partial: 2 of 3 points)"
        in (tmp_path / "README.md").read_text()
    )


def test_two_seeds_give_clipped_intervals_printed_a_to_b(store, tmp_path):
    axes = {"model.dropout": [0.0, 0.1]}
    points = [({"model": {"dropout": 0.0}}, s, "complete", acc) for s, acc in enumerate((0.97, 1.0))]
    points += [({"model": {"dropout": 0.1}}, s, "complete", acc) for s, acc in enumerate((0.5, 0.6))]
    _fill(store, "dropout", axes, points)
    (entry,) = write_report(store, tmp_path, [9])
    drawn = pd.read_csv(entry.csv)
    assert drawn["ci_high"].max() == 1.0 and (drawn["ci_low"] >= 0).all()  # 0.985 +- 19 points, clipped
    readme = (tmp_path / "README.md").read_text()
    assert "| 0 | 98.50% | 79.44 to 100.00% | 2 |" in readme
    assert "error bars: 95% CI over the 2 seeds" in readme


def test_report_figure_replaces_only_its_section(store, tmp_path):
    axes = {"model.dropout": [0.0, 0.1]}
    _fill(store, "dropout", axes, [({"model": {"dropout": d}}, 0, "complete", 0.5) for d in (0.0, 0.1)])
    write_report(store, tmp_path)
    readme = tmp_path / "README.md"
    marked = readme.read_text().replace("No runs of study 'kernel' yet", "KEPT AS IT WAS")
    readme.write_text(marked)
    _fill(store, "dropout", axes, [({"model": {"dropout": 0.2}}, 0, "complete", 0.7)])
    write_report(store, tmp_path, [9])
    text = readme.read_text()
    assert "KEPT AS IT WAS" in text and text.count("## Figure 1:") == 1 and text.count("## Figure 9:") == 1
    assert "| 0.2 | 70.00% |" in text  # figure 9's section is the new one
    assert text.split("<!-- ablate:figure-9 -->")[0] == marked.split("<!-- ablate:figure-9 -->")[0]


def test_a_report_is_a_function_of_the_database(store, tmp_path):
    axes = {"model.dropout": [0.0, 0.1]}
    _fill(store, "dropout", axes, [({"model": {"dropout": d}}, 0, "complete", 0.5 + d) for d in (0.0, 0.1)])
    write_report(store, tmp_path / "a")
    write_report(store, tmp_path / "b")
    for name in ("README.md", "figure-09.png", "figure-09.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_runs_of_unknown_data_beside_fingerprinted_ones_are_two_variants_every_command_reads(tmp_path):
    """A study merged from before fingerprints (data_fp NULL), then run on known data: the data
    column mixes None with strings, which pandas reads back as NaN."""
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    store = Store.open(url)
    axes = {"model.dropout": [0.0, 0.1]}
    points = [({"model": {"dropout": d}}, s, "complete", 0.5 + d + s / 100) for d in (0.0, 0.1) for s in (0, 1)]
    _fill(store, "dropout", axes, points, data=(None, None))
    _fill(store, "dropout", axes, points, data=("0123456789abcdef", "CIFAR-10 copy 'small'"))
    store.close()
    status = json.loads(invoke("status", "dropout", "--db", url, "--json").output)
    assert sorted(v["data_fp"] or "" for v in status["studies"][0]["variants"]) == ["", "0123456789abcdef"]
    assert invoke("status", "--db", url).exit_code == 0
    for selector in ("data=0123", None):
        assert invoke("status", "dropout", "--db", url).exit_code == 0
        for command in (
            ("report", "--figure", 9, "--out", tmp_path / "r"),
            ("compare", "dropout", "--by", "model.dropout"),
        ):
            chosen = ("--variant", selector) if selector else ("--variant", _unknown_key(url))
            result = invoke(*command, "--db", url, *chosen)
            assert result.exit_code == 0, (command, result.output)
    assert "data not recorded" in invoke("status", "dropout", "--db", url).output


def _unknown_key(url):
    status = json.loads(invoke("status", "dropout", "--db", url, "--json").output)
    return next(v["key"] for v in status["studies"][0]["variants"] if v["data_fp"] is None)


def test_summaries_refuse_to_pool_configs():
    frame = pd.DataFrame({"model.depth": [3, 3], "config_hash": ["a", "b"], "test_acc": [0.5, 0.6]})
    with pytest.raises(stats.PoolingError, match="2 configs share one value of model.depth"):
        stats.summarize(frame, ["model.depth"])
    one = frame.assign(config_hash="a")
    assert stats.summarize(one, ["model.depth"])["n"].tolist() == [2]


def test_tick_labels_never_repeat_on_a_narrow_range():
    fig, ax = figures.new_axes()
    ax.plot([0, 1, 2, 3], [0.285, 0.287, 0.291, 0.294])
    ax.yaxis.set_major_formatter(figures._percent())
    FigureCanvasAgg(fig).draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels) and all(t.endswith("%") for t in labels)


def test_overrides_under_a_table_valued_axis_are_refused():
    study = load("optimizer")
    with pytest.raises(ConfigError, match="lies under the axis 'optimizer'"):
        expand(study, [("optimizer.weight_decay", 0.0)])
    expand(study, [("epochs", 2)])  # outside the axis: fine


def test_selectors_parse_or_say_what_they_take():
    assert parse_selector("ab12") == "ab12"
    assert parse_selector("epochs=2, train_subset=256") == {"epochs": 2, "train_subset": 256}
    for bad in ("Epochs", "epochs", "=2", "x y"):
        with pytest.raises(VariantError):
            parse_selector(bad)


def test_an_old_database_reports_one_variant_at_a_time(tmp_path):
    """results-v2.db holds two smoke variants pooled by version 2's report; now each is apart."""
    db = tmp_path / "v2.db"
    shutil.copy(ASSETS / "results-v2.db", db)
    result = invoke("report", "--db", db, "--out", tmp_path / "r", "--figure", 0)
    assert result.exit_code == 0, result.output
    drawn = pd.read_csv(tmp_path / "r" / "figure-00.csv")
    assert len(drawn) == 4 and drawn["n"].tolist() == [1, 1, 1, 1]
    status = json.loads(invoke("status", "smoke", "--db", db, "--json").output)
    assert [v["counts"]["complete"] for v in status["studies"][0]["variants"]] == [4, 4]
    assert np.isclose(drawn["mean"].max(), 0.442)  # the 2-epoch variant (the most recent of two equals)
