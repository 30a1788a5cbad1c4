"""``ablate compare`` on databases filled by hand, where the right answer is known."""

import json

import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from ablate.cli import app
from ablate.compare import TOO_FEW, compare, value_labels
from ablate.store import NewRun

BASE = [0.70, 0.72, 0.68, 0.71, 0.69]  # the baseline's accuracy on seeds 0..4
MARGIN = 0.03
JITTER = [0.001, -0.002, 0.0, 0.002, -0.001]  # sums to 0: the mean difference is exactly MARGIN
NOISE = [0.01, -0.012, 0.004, -0.006, 0.004]  # sums to 0 too, and swings both ways


def fill(store, study, axes, points, status="complete"):
    """points: (config dict, seed, test_acc); each gets an epoch of metrics and ends ``status``."""
    sid = store.sync_study(study, f"{study} by hand", {"axes": axes})
    store.add_runs(
        sid, [NewRun(f"{status}{i}", seed, {**cfg, "seed": seed}, f"p{i}") for i, (cfg, seed, _) in enumerate(points)]
    )
    for _, _, acc in points:
        claim = store.claim(sid, "cpu", "host", 1)
        store.record_epoch(claim.run_id, 1, {"test_acc": acc, "train_loss": 1.0})
        if status != "running":
            store.finish(claim.run_id, status, {"test_acc": acc, "test_loss": 1 - acc}, wall_s=10.0)


def block(name, **model):
    return {"model": {"name": "resnet", "depth": 2, "block": name, **model}, "epochs": 20}


def fill_blocks(store, seeds=5):
    axes = {"model.block": ["original", "better", "noise"]}
    points = [(block("original"), s, BASE[s]) for s in range(seeds)]
    points += [(block("better"), s, BASE[s] + MARGIN + JITTER[s]) for s in range(seeds)]
    points += [(block("noise"), s, BASE[s] + NOISE[s]) for s in range(seeds)]
    fill(store, "blocks", axes, points)


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_variant_better_on_every_seed_is_significant_and_noise_is_not(store):
    fill_blocks(store)
    c = compare("blocks", by="model.block", db=store)
    assert c.baseline == "original" and c.values == ["original", "better", "noise"]
    better, noise = c.rows
    assert better.value == "better" and better.n == 5
    assert better.mean_diff == pytest.approx(MARGIN)
    assert 0 < better.ci_low < MARGIN < better.ci_high
    a = [BASE[s] + MARGIN + JITTER[s] for s in range(5)]
    assert better.p == pytest.approx(scipy_stats.ttest_rel(a, BASE).pvalue)
    assert better.p < 0.001 and better.significant
    assert noise.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert noise.ci_low < 0 < noise.ci_high and noise.p > 0.5 and not noise.significant
    assert [r.value for r in c.significant] == ["better"]


def test_pairs_match_seeds_and_other_axes_and_skip_unfinished_runs(store):
    # lr moves accuracy far more than the block does; pairing within lr cancels it
    axes = {"model.block": ["original", "better"], "optimizer.lr": [0.1, 0.01]}
    points = []
    for lr, offset in ((0.1, 0.0), (0.01, -0.2)):
        for s in range(3):
            opt = {"optimizer": {"name": "sgd", "lr": lr}}
            points += [
                ({**block("original"), **opt}, s, BASE[s] + offset),
                ({**block("better"), **opt}, s, BASE[s] + offset + MARGIN + JITTER[s]),
            ]
    points.append(({**block("better"), "optimizer": {"name": "sgd", "lr": 0.1}}, 7, 0.99))  # no partner
    fill(store, "grid", axes, points)
    fill(store, "grid", axes, [(block("original", width=8), 0, 0.1)], status="running")
    (row,) = compare("grid", by="model.block", db=store).rows
    # the seed is the unit: 3 seeds, each the mean of its 2 blocks (one per lr)
    assert (row.n, row.blocks, row.block_axes) == (3, 2, ["optimizer.lr"])
    assert row.design() == "3 seeds x 2 blocks (optimizer.lr)"
    assert row.mean_diff == pytest.approx(MARGIN + sum(JITTER[:3]) / 3)
    assert row.seed_diffs == pytest.approx([MARGIN + j for j in JITTER[:3]])
    assert row.significant


def test_one_seed_says_a_comparison_needs_two(store, db_url):
    fill_blocks(store, seeds=1)
    c = compare("blocks", by="model.block", db=store)
    assert not c.tested
    for row in c.rows:
        assert row.n == 1 and row.p is None and row.ci_low is None and row.note == TOO_FEW
    result = invoke("compare", "blocks", "--by", "model.block", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "needs runs of at least two seeds" in result.stdout and "needs 2+ seeds" in result.stdout


def test_cli_table_and_json(store, db_url):
    fill_blocks(store)
    result = invoke("compare", "blocks", "--by", "model.block", "--db", db_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("blocks: test_acc by model.block, against original; variant ")
    better = next(line for line in lines if "better" in line)
    assert "+3.00" in better and "<0.001" in better and "yes" in better
    assert "no" in next(line for line in lines if "noise" in line)

    out = json.loads(invoke("compare", "blocks", "--by", "model.block", "--db", db_url, "--json").stdout)
    assert {k: out[k] for k in ("study", "axis", "metric", "baseline", "alpha")} == {
        "study": "blocks",
        "axis": "model.block",
        "metric": "test_acc",
        "baseline": "original",
        "alpha": 0.05,
    }
    better, noise = out["comparisons"]
    assert set(better) == {
        "value",
        "n",
        "mean",
        "baseline_mean",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p",
        "note",
        "significant",
        "blocks",
        "block_axes",
        "agree",
        "test",
        "floor",
        "p_holm",
        "seed_diffs",
        "block_diffs",
    }
    assert better["test"] == "paired t" and better["p_holm"] == pytest.approx(min(1.0, 2 * better["p"]))
    assert better["significant"] is True and noise["significant"] is False and better["n"] == 5


def test_baseline_and_metric_options(store, db_url):
    fill_blocks(store)
    out = json.loads(
        invoke(
            "compare",
            "blocks",
            "--by",
            "model.block",
            "--baseline",
            "Better",
            "--metric",
            "test_loss",
            "--db",
            db_url,
            "--json",
        ).stdout
    )
    assert out["baseline"] == "better" and out["metric"] == "test_loss"
    assert [r["value"] for r in out["comparisons"]] == ["original", "noise"]
    assert out["comparisons"][0]["mean_diff"] == pytest.approx(MARGIN)  # loss is 1 - acc here


def test_scalar_baseline_as_typed(store):
    axes = {"model.depth": [1, 2]}
    fill(
        store,
        "depth",
        axes,
        [({"model": {"name": "plain_cnn", "depth": d}}, s, 0.5 + d / 10 + JITTER[s]) for d in (1, 2) for s in range(3)],
    )
    c = compare("depth", by="model.depth", db=store, baseline="2.0")
    assert c.baseline == "2" and c.rows[0].value == "1" and c.rows[0].mean_diff == pytest.approx(-0.1)


def test_table_valued_axes_go_by_name_else_by_keys(store):
    opts = [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 1e-3}]
    assert value_labels(opts) == ["sgd", "adam"]
    augs = [{}, {"crop_padding": 4}, {"crop_padding": 4, "flip": True}]
    assert value_labels(augs) == ["{}", "crop_padding=4", "crop_padding=4,flip=True"]

    # a run holds every key of its table, defaults included: the most specific value wins
    def aug(**kw):
        return {"data": {"aug": {"crop_padding": 0, "flip": False, **kw}}}

    points = [(aug(), s, BASE[s]) for s in range(3)]
    points += [(aug(crop_padding=4), s, BASE[s] + 0.01 + JITTER[s]) for s in range(3)]
    points += [(aug(crop_padding=4, flip=True), s, BASE[s] + 0.02 + JITTER[s]) for s in range(3)]
    fill(store, "aug", {"data.aug": augs}, points)
    c = compare("aug", by="data.aug", db=store, baseline="crop_padding=4")
    assert c.values == ["{}", "crop_padding=4", "crop_padding=4,flip=True"]
    assert [r.mean_diff for r in c.rows] == pytest.approx([-0.01 - sum(JITTER[:3]) / 3, 0.01])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["blocks", "--by", "block"], "study 'blocks' has no axis 'block'; its axes: model.block"),
        (["nothing", "--by", "model.block"], "unknown study 'nothing'; studies in"),
        (["blocks", "--by", "model.block", "--baseline", "wide"], "values with runs: original, better, noise"),
        (["blocks", "--by", "model.block", "--metric", "f1"], "unknown metric 'f1'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, db_url, args, fragment):
    fill_blocks(store, seeds=2)
    result = invoke("compare", *args, "--db", db_url)
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and fragment in result.stderr


def test_missing_database_is_the_stores_error(tmp_path):
    result = invoke("compare", "blocks", "--by", "model.block", "--db", tmp_path / "none.db")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "none.db").exists()


def test_runs_of_a_value_the_study_no_longer_lists_stay_apart(store):
    def aug(**kw):
        return {"data": {"aug": {"crop_padding": 0, "flip": False, **kw}}}

    # {} matches any table, so an old crop_padding=2 run would match it too: it must not
    # be pooled with the baseline's runs, so neither is taken for {}
    points = [(aug(), s, BASE[s]) for s in range(2)] + [(aug(flip=True), s, BASE[s] + 0.01) for s in range(2)]
    points += [(aug(crop_padding=2), s, BASE[s] - 0.01) for s in range(2)]
    fill(store, "aug", {"data.aug": [{}, {"flip": True}]}, points)
    c = compare("aug", by="data.aug", db=store, baseline="crop_padding=0,flip=False")
    assert c.values == ["flip=True", "crop_padding=0,flip=False", "crop_padding=2,flip=False"]
    assert [(r.value, r.n) for r in c.rows] == [("flip=True", 2), ("crop_padding=2,flip=False", 2)]
    assert [r.mean_diff for r in c.rows] == pytest.approx([0.01, -0.01])
