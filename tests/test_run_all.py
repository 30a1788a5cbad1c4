"""ablate run all: every study in order of worth, stopped by a budget, resumed by the next call."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.config import ConfigError
from ablate.run_all import group_size, parse_budget, plan_all, prepare, report_studies, run_all, seconds_per_flop
from ablate.store import Store

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
    assert rate is not None and items["few"].todo == [] and items["many"].estimate_s == pytest.approx(
        items["many"].flops * rate)
    row = next(line for line in result.output.splitlines() if "many" in line)
    assert "6/6" in row and f"{items['many'].estimate_s / 60:.1f} min" in row
    assert "6 points left in 1 studies" in result.output
    assert json.loads(invoke("status", "--db", tiny, "--json").output)["studies"][0]["counts"]["complete"] == 2


def test_run_all_covers_the_reports_studies():
    names = report_studies()
    assert "smoke" not in names and "speedrun" not in names and {"depth", "best", "bn_lr"} <= set(names)


def test_bad_input_is_one_line(tiny, tmp_path):
    for args in (["--budget", "soon"], ["--studies", "nosuch"], ["--set", "optimizer.lr=-1"], ["--studies", ","],
                 ["--studies", "few,,many"], ["--studies", ""]):
        result = invoke("run", "all", "--db", tiny, "--device", "cpu", *args)
        assert result.exit_code == 2 and result.output.startswith("error:") and result.output.count("\n") == 1, args
    assert not Path(tiny.removeprefix("sqlite:///")).exists()


def test_a_study_named_twice_is_planned_once(tiny):
    result = invoke("run", "all", "--studies", "few,many,few", "--db", tiny, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "8 points left in 2 studies" in result.output
    assert [line.split()[1] for line in result.output.splitlines() if " few " in line] == ["few"]


def test_a_fused_members_time_counts_for_its_whole_group():
    assert group_size(None) == 1 and group_size("resumed from epoch 2") == 1
    assert group_size("attempt 1: trained fused with run(s) 4, 5\nattempt 2: trained fused with run(s) 9") == 2
    assert group_size("attempt 1: trained fused with run(s) 4, 5, 6") == 4
