"""ablate run all: every study in order of worth, stopped by a budget, resumed by the next call."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.config import ConfigError, to_dict
from ablate.data import OFFICIAL
from ablate.run import _study_spec, execute, plan
from ablate.run_all import (
    ROUGH_SECONDS_PER_FLOP,
    group_size,
    parse_budget,
    plan_all,
    prepare,
    report_studies,
    run_all,
    seconds_per_flop,
)
from ablate.store import NewRun, Store

# Two tiny studies of the toy net, in ./studies of the test's directory.
TINY = """
description = "{name}"
figures = []
seeds = 1
[base]
epochs = 1
train_subset = 256
batch_size = 64
data = {{ dataset = "synthetic" }}
model = {{ name = "plain_cnn", width = 4 }}
[axes]
"model.depth" = {depths}
[[claims]]
text = "deeper is better"
check = "best"
axis = "model.depth"
value = {best}
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "few.toml").write_text(TINY.format(name="few", depths="[1, 2]", best=2))
    (tmp_path / "studies" / "many.toml").write_text(TINY.format(name="many", depths="[1, 2, 3, 4, 5, 6]", best=6))
    return f"sqlite:///{tmp_path / 'all.db'}"


def test_budgets_parse_or_say_what_they_take():
    assert [parse_budget(t) for t in ("90s", "8m", "1.5h", "45", None)] == [90, 480, 5400, 45, None]
    for bad in ("8 minutes", "-1m", "0s", "m"):
        with pytest.raises(ConfigError, match="--budget takes a positive time"):
            parse_budget(bad)


def test_the_studies_go_in_order_of_claims_per_flop(tiny):
    store = Store.open(tiny)
    items = prepare(store, plan_all(["many", "few"], device="cpu"))
    store.close()
    assert [i.name for i in items] == ["few", "many"]  # one claim each; few needs far fewer FLOPs
    assert items[0].flops < items[1].flops and all(i.value == 1 for i in items)
    assert [len(i.todo) for i in items] == [2, 6]


def test_a_budget_stops_cleanly_and_the_next_call_goes_on(tiny):
    store = Store.open(tiny)
    items = run_all(store, prepare(store, plan_all(["many"], device="cpu")), budget_s=0.0)
    assert items[0].skipped == "the budget was spent before it began" and not store.runs()
    # A budget that ends while the study trains: the runner stops after its step, the rest stays pending.
    (item,) = run_all(store, prepare(store, plan_all(["many"], device="cpu")), budget_s=0.3)
    assert item.summary.out_of_time
    statuses = [r["status"] for r in store.runs("many")]
    assert statuses.count("pending") >= 1 and "running" not in statuses
    done_before = {r["id"] for r in store.runs("many") if r["status"] == "complete"}
    (item,) = run_all(store, prepare(store, plan_all(["many"], device="cpu")), budget_s=None)
    assert not item.summary.out_of_time and item.summary.skipped == len(done_before)
    assert [r["status"] for r in store.runs("many")] == ["complete"] * 6
    store.close()


def test_dry_run_estimates_from_the_runs_in_the_database(tiny, tmp_path):
    result = invoke("run", "all", "--studies", "few", "--db", tiny, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "few: 2 trained" in result.output
    result = invoke("run", "all", "--studies", "few,many", "--db", tiny, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    store = Store.open(tiny, create=False)
    rate = seconds_per_flop(store, "cpu")
    items = {i.name: i for i in prepare(store, plan_all(["few", "many"], device="cpu"))}
    store.close()
    assert (
        rate is not None
        and items["few"].todo == []
        and items["many"].estimate_s == pytest.approx(items["many"].flops * rate)
    )
    row = next(line for line in result.output.splitlines() if "many" in line)
    assert "6/6" in row and f"{items['many'].estimate_s / 60:.1f} min" in row
    assert "6 points left in 1 studies" in result.output
    assert json.loads(invoke("status", "--db", tiny, "--json").output)["studies"][0]["counts"]["complete"] == 2


def test_run_all_covers_the_reports_studies():
    names = report_studies()
    assert not {"smoke", "speedrun", "speedrun_legacy", "fast_sgd"} & set(names) and {
        "depth",
        "best",
        "bn_lr",
        "fast",
        "relu_lr",
    } <= set(names)


def test_bad_input_is_one_line(tiny, tmp_path):
    for args in (
        ["--budget", "soon"],
        ["--studies", "nosuch"],
        ["--set", "optimizer.lr=-1"],
        ["--studies", ","],
        ["--studies", "few,,many"],
        ["--studies", ""],
    ):
        result = invoke("run", "all", "--db", tiny, "--device", "cpu", *args)
        assert result.exit_code == 2 and result.output.startswith("error:") and result.output.count("\n") == 1, args
    assert not Path(tiny.removeprefix("sqlite:///")).exists()


def test_a_study_named_twice_is_planned_once(tiny):
    result = invoke("run", "all", "--studies", "few,many,few", "--db", tiny, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "8 points left in 2 studies" in result.output
    assert [line.split()[1] for line in result.output.splitlines() if " few " in line] == ["few"]


@pytest.fixture
def official(tiny, tmp_path, monkeypatch):
    """A study on CIFAR-10 with nothing downloaded: a download would fail the test."""
    spec = TINY.format(name="real", depths="[1, 2]", best=2).replace('"synthetic"', '"cifar10"')
    (tmp_path / "studies" / "real.toml").write_text(spec)
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "cache"))

    def refuse(root):
        raise AssertionError(f"a dry run downloaded into {root}")

    monkeypatch.setattr("ablate.data._download", refuse)
    return tiny


def test_a_dry_run_downloads_nothing_and_says_that_the_run_will(official, tmp_path):
    result = invoke("run", "all", "--studies", "real", "--db", official, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"data: CIFAR-10 is not in {tmp_path / 'cache'} yet; it is downloaded at run time" in result.output
    assert not (tmp_path / "cache").exists() and not Path(official.removeprefix("sqlite:///")).exists()
    result = invoke("run", "real", "--db", official, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 points on CIFAR-10 (official), downloaded at run time: 0 done, 2 to train" in result.output
    with pytest.raises(ConfigError, match="without its data"):  # such a plan is for printing only
        store = Store.open(official)
        try:
            execute(store, plan("real", device="cpu", download=False))
        finally:
            store.close()


def test_a_dry_run_finds_the_official_sets_runs_by_their_name(official):
    store = Store.open(official)
    p = plan("real", device="cpu", download=False)
    point = p.points[1]
    sid = store.sync_study("real", "", _study_spec(p.study))
    store.add_runs(
        sid, [NewRun(point.config_hash, point.seed, to_dict(point.config), point.label, "0123456789abcdef", OFFICIAL)]
    )
    claim = store.claim(sid, "cpu", "h", 1)
    store.finish(claim.run_id, "complete", {"test_acc": 0.5})
    store.add_runs(
        sid,
        [
            NewRun(
                p.points[0].config_hash,
                0,
                to_dict(p.points[0].config),
                "other data",
                "fedcba9876543210",
                "CIFAR-10 copy 'x'",
            )
        ],
    )
    (item,) = prepare(store, plan_all(["real"], device="cpu", download=False))
    store.close()
    assert [pt.label for pt in item.todo] == [p.points[0].label]  # the official run's point is done


def test_with_no_run_to_judge_by_the_estimate_is_a_stated_rough_rate(tiny):
    result = invoke("run", "all", "--studies", "few", "--db", tiny, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    store = Store.open(tiny, create=False)
    (item,) = prepare(store, plan_all(["few"], device="cpu"))
    store.close()
    assert item.estimate_s == pytest.approx(item.flops * ROUGH_SECONDS_PER_FLOP["cpu"])
    assert f"about {item.estimate_s / 60:.1f} min (rough: no finished run on cpu in this database" in result.output


def test_a_fused_members_time_counts_for_its_whole_group():
    assert group_size(None) == 1 and group_size("resumed from epoch 2") == 1
    assert group_size("attempt 1: trained fused with run(s) 4, 5\nattempt 2: trained fused with run(s) 9") == 2
    assert group_size("attempt 1: trained fused with run(s) 4, 5, 6") == 4
