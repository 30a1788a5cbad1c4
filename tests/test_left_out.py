"""Runs a statistic cannot use are named, never dropped in silence, and every hint is a
command that does what it says (issue 20, items 5 and 6)."""

import json

from ablate.compare import compare
from ablate.report import write_report
from ablate.store import NewRun
from tests.test_cli import invoke

EDGE = {
    "base": {},
    "axes": {"optimizer.lr": [1e20, 0.05], "model.activation": ["relu", "gelu"]},
    "claims": [
        {
            "text": "a sane lr trains",
            "section": "1",
            "check": "higher",
            "axis": "optimizer.lr",
            "value": 0.05,
            "than": 1e20,
        }
    ],
}


def _fill(store, spec, outcome, seeds=4, study="edge2"):
    """``outcome(lr, act, seed)`` -> (status, test_acc or None) for every point and seed."""
    sid = store.sync_study(study, "", spec)
    points = [
        (lr, act, s)
        for lr in spec["axes"]["optimizer.lr"]
        for act in spec["axes"]["model.activation"]
        for s in range(seeds)
    ]
    cfgs = {(lr, act): {"optimizer": {"name": "sgd", "lr": lr}, "model": {"activation": act}} for lr, act, _ in points}
    store.add_runs(
        sid,
        [NewRun(json.dumps(cfgs[lr, act], sort_keys=True), s, cfgs[lr, act], f"{lr}-{act}") for lr, act, s in points],
    )
    for _ in points:
        claim = store.claim(sid, "cpu", "host", 1)
        run = next(r for r in store.runs(study) if r["id"] == claim.run_id)
        lr, act = run["config"]["optimizer"]["lr"], run["config"]["model"]["activation"]
        status, acc = outcome(lr, act, run["seed"])
        if status == "failed":
            store.finish(claim.run_id, "failed", error="boom")
            continue
        if acc is not None:
            store.record_epoch(claim.run_id, 1, {"test_acc": acc})
        store.finish(claim.run_id, status, {"test_acc": acc} if acc is not None else {})


def _six_of_eight_diverge(lr, act, seed):
    if lr == 1e20 and not (act == "relu" and seed < 2):
        return "diverged", None
    return "complete", (0.11 if lr == 1e20 else 0.6 + 0.01 * seed + (0.005 if act == "gelu" else 0))


def test_the_runs_a_claim_and_a_caption_leave_out_are_named(store, tmp_path):
    _fill(store, EDGE, _six_of_eight_diverge)
    write_report(store, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| 1 | a sane lr trains"))
    assert "left out: 6 diverged without test_acc" in row
    found = compare("edge2", by="optimizer.lr", db=store)
    assert found.left_out == {"diverged without test_acc": 6}


def test_a_caption_gives_each_point_s_n_not_the_most_seeds(store):
    from ablate.report import Views, footer

    _fill(store, EDGE, _six_of_eight_diverge)
    text = footer(Views(store)("edge2"))
    assert "n = 0 to 4 seeds per point" in text and "Left out: 6 diverged without test_acc." in text


def test_every_run_diverged_says_so_and_suggests_no_rerun(store, db_url):
    _fill(store, EDGE, lambda lr, act, seed: ("diverged", None), seeds=2)
    from ablate.report import Views, footer

    assert "n = 0: no run has a test accuracy" in footer(Views(store)("edge2"))
    result = invoke("compare", "edge2", "--by", "optimizer.lr", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "8 diverged without test_acc" in result.stdout and "trains nothing" in result.stdout
    assert "ablate run" not in result.stdout


def test_every_run_failed_gives_the_command_that_retries_them_in_this_database(store, db_url, tmp_path):
    spec = {**EDGE, "base": {"epochs": 1}}
    _fill(store, spec, lambda lr, act, seed: ("failed", None), seeds=1, study="smoke")
    result = invoke("report", "--db", db_url, "--out", tmp_path / "r", "--figure", "0")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("figure  0"))
    assert "no finished runs of study 'smoke' (4 failed)" in line
    assert line.endswith(f"ablate run smoke --retry-failed --db {db_url}")
    result = invoke("compare", "smoke", "--by", "optimizer.lr", "--db", db_url)
    assert f"ablate run smoke --retry-failed --db {db_url}" in result.stdout


def test_more_seeds_hint_carries_the_variant_s_options_and_database(store, db_url):
    spec = {**EDGE, "claims": []}
    sid = store.sync_study("edge2", "", spec)
    cfg = {"optimizer": {"name": "sgd", "lr": 0.05}, "model": {"activation": "relu"}, "epochs": 2}
    other = {**cfg, "optimizer": {"name": "sgd", "lr": 1e20}}
    store.add_runs(sid, [NewRun("a", 0, cfg, "a"), NewRun("b", 0, other, "b")])
    for acc in (0.6, 0.5):
        claim = store.claim(sid, "cpu", "host", 1)
        store.finish(claim.run_id, "complete", {"test_acc": acc})
    found = compare("edge2", by="optimizer.lr", db=store)
    assert found.hint == f"ablate run edge2 --seeds 3 --epochs 2 --db {db_url}"
