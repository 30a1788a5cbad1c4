"""ablate merge: the finished runs of other databases, with no duplicate, one transaction."""

import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.merge import merge
from ablate.store import NewRun, Store
from tests.conftest import file_digest

ASSETS = Path(__file__).parent / "assets"
FP = "00000000000000aa"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def fill(
    path: Path, runs: list[tuple[str, int, str]], study: str = "toy", data_fp: str | None = FP, axes: dict | None = None
) -> str:
    """runs: (config hash, seed, status); each finished one with an epoch, a probe and an artifact."""
    url = f"sqlite:///{path}"
    store = Store.open(url)
    sid = store.sync_study(study, "a toy", {"base": {}, "axes": axes or {}})
    store.add_runs(sid, [NewRun(h, seed, {"epochs": 1}, f"{h}/{seed}", data_fp, "toy data") for h, seed, _ in runs])
    for h, seed, status in runs:
        run = next(r for r in store.runs(study) if (r["config_hash"], r["seed"]) == (h, seed))
        if status == "pending":
            continue
        claim = store.claim(sid, "cpu", "elsewhere", 1, only={run["id"]})
        if status == "running":
            continue
        store.record_epoch(claim.run_id, 1, {"test_acc": 0.5 + seed / 10, "train_loss": 1.0})
        store.record_metrics(claim.run_id, 7, {"relgrad.conv1": 0.01})
        store.put_artifact(claim.run_id, "kernels.conv1", bytes(range(4)), "uint8", [2, 2])
        store.finish(claim.run_id, status, {"test_acc": 0.5 + seed / 10}, wall_s=1.0)
    store.close()
    return url


def table(url: str) -> list[tuple]:
    store = Store.open(url, create=False)
    try:
        return sorted(
            (r["study"], r["config_hash"], r["seed"], r["data_fp"], r["status"], r["test_acc"]) for r in store.runs()
        )
    finally:
        store.close()


def counts(url: str) -> tuple[int, int]:
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return (
            conn.execute("SELECT count(*) FROM metrics").fetchone()[0],
            conn.execute("SELECT count(*) FROM artifacts").fetchone()[0],
        )


def studies(url: str) -> list[tuple]:
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return conn.execute("SELECT name, description, spec_json, created_at FROM studies").fetchall()


def test_two_overlapping_databases_merge_into_their_union_once(tmp_path):
    a = fill(tmp_path / "a.db", [("x", 0, "complete"), ("x", 1, "complete"), ("y", 0, "failed")])
    b = fill(tmp_path / "b.db", [("x", 1, "complete"), ("y", 0, "complete"), ("z", 0, "pending")])
    target = f"sqlite:///{tmp_path / 'all.db'}"
    first = merge([a, b], target)
    assert [(m.added, m.replaced, m.finished_here, m.unfinished) for m in first] == [(2, 0, 0, 1), (1, 0, 1, 1)]
    assert [(h, s, st) for _, h, s, _, st, _ in table(target)] == [
        ("x", 0, "complete"),
        ("x", 1, "complete"),
        ("y", 0, "complete"),
    ]
    assert counts(target) == (3 * 3, 3)  # each run's epoch (2 metrics) and probe, and its artifact
    assert studies(target) == studies(a)  # the study comes over whole: its description, spec and age
    digest = file_digest(tmp_path / "all.db")
    again = merge([a, b], target)
    assert all(m.added == m.replaced == 0 for m in again) and table(target) == table(target)
    assert counts(target) == (9, 3) and len(table(target)) == 3
    assert file_digest(tmp_path / "all.db") == digest  # nothing to write, nothing written


def test_a_finished_run_replaces_a_stale_pending_or_failed_one_but_not_a_live_one(tmp_path):
    target = fill(
        tmp_path / "t.db", [("x", 0, "running"), ("x", 1, "pending"), ("x", 2, "failed"), ("x", 3, "running")]
    )
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:  # seed 0's runner died long ago; seed 3's beats now
        conn.execute("UPDATE runs SET heartbeat_at = '2000-01-01 00:00:00', host = 'gone' WHERE seed = 0")
        conn.execute("UPDATE runs SET heartbeat_at = CURRENT_TIMESTAMP, host = 'other', pid = 1 WHERE seed = 3")
        conn.commit()
    source = fill(tmp_path / "s.db", [("x", s, "complete") for s in range(4)])
    (m,) = merge([source], target)
    assert (m.added, m.replaced, m.running_here) == (0, 3, 1)
    assert [st for *_, st, _ in table(target)] == ["complete", "complete", "complete", "running"]
    store = Store.open(target, create=False)
    notes = {r["seed"]: r["notes"] for r in store.runs()}
    attempts = {r["seed"]: r["attempts"] for r in store.runs()}
    store.close()
    assert (
        notes[0] == "attempt 1 (running) replaced by a merged run" and attempts[0] == 2
    )  # the old claim is fenced out


def test_a_diverged_run_is_finished_and_a_replaced_runs_notes_keep_their_history(tmp_path):
    target = fill(tmp_path / "t.db", [("x", 0, "pending")])
    source = fill(tmp_path / "s.db", [("x", 0, "diverged")])
    for path, note in (("t.db", "queued by hand"), ("s.db", "loss not finite at epoch 1")):
        with closing(sqlite3.connect(tmp_path / path)) as conn:
            conn.execute("UPDATE runs SET notes = ?", (note,))
            conn.commit()
    (m,) = merge([source], target)
    assert (m.added, m.replaced, m.unfinished) == (0, 1, 0)
    store = Store.open(target, create=False)
    (run,) = store.runs()
    store.close()
    assert run["status"] == "diverged"
    assert run["notes"].split("\n") == [
        "queued by hand",
        "pending replaced by a merged run",
        "loss not finite at epoch 1",
    ]
    (again,) = merge([source], target)
    assert (again.replaced, again.finished_here) == (0, 1)  # diverged is an end, as complete is


def test_a_failed_merge_leaves_the_target_byte_identical(tmp_path):
    target = fill(tmp_path / "t.db", [("x", 0, "complete")])
    before = file_digest(tmp_path / "t.db")
    good = fill(tmp_path / "good.db", [("y", 0, "complete")])
    corrupt = tmp_path / "corrupt.db"
    shutil.copy(tmp_path / "good.db", corrupt)
    with open(corrupt, "r+b") as f:  # a SQLite header, then junk where the pages were
        f.seek(100)
        f.write(os.urandom(8000))
    for bad in (str(corrupt), str(tmp_path / "missing.db"), str(tmp_path / "t.db")):
        result = invoke("merge", good, bad, "--db", target)
        assert result.exit_code == 2 and result.output.startswith("error:") and result.output.count("\n") == 1, (
            result.output
        )
        assert file_digest(tmp_path / "t.db") == before
        assert sorted(p.name for p in tmp_path.glob("t.db*")) == ["t.db"]  # no log beside it either


def test_an_older_source_is_upgraded_on_the_way_in_and_left_as_it_was(tmp_path):
    source = tmp_path / "v1.db"
    shutil.copy(ASSETS / "results-v1.db", source)
    before = file_digest(source)
    result = invoke("merge", source, "--db", tmp_path / "t.db")
    assert result.exit_code == 0, result.output
    assert "4 added" in result.output and "3 unfinished there, not imported" in result.output
    assert file_digest(source) == before
    assert {r[0] for r in table(f"sqlite:///{tmp_path / 't.db'}")} == {"smoke"}


def test_runs_before_data_fingerprints_take_the_data_the_merge_is_told(tmp_path):
    legacy = fill(tmp_path / "old.db", [("x", 0, "complete")], data_fp=None)
    target = f"sqlite:///{tmp_path / 't.db'}"
    merge([legacy], target, assume_data="76dbb8e3d834d9ca")
    store = Store.open(target, create=False)
    (run,) = store.runs()
    store.close()
    assert (run["data_fp"], run["data_name"]) == ("76dbb8e3d834d9ca", "CIFAR-10 (JPEG copy)")
    assert "data assumed when merged: CIFAR-10 (JPEG copy)" in run["notes"]
    result = invoke("merge", legacy, "--db", target, "--assume-data", "not-a-fingerprint")
    assert result.exit_code == 2 and "--assume-data takes a data fingerprint" in result.output


def test_the_cli_says_what_it_did(tmp_path):
    a = fill(tmp_path / "a.db", [("x", 0, "complete"), ("x", 1, "pending")])
    result = invoke("merge", a, "--db", tmp_path / "t.db")
    assert result.exit_code == 0
    assert result.output.strip().endswith(
        "1 added, 0 replaced (pending, failed or stale here), 0 skipped (finished here already), "
        "1 unfinished there, not imported"
    )
    status = json.loads(invoke("status", "--db", tmp_path / "t.db", "--json").output)
    assert status["studies"][0]["counts"]["complete"] == 1


def test_runs_of_unknown_data_are_merged_once_whatever_data_a_later_merge_assumes(tmp_path):
    legacy = fill(tmp_path / "old.db", [("x", 0, "complete"), ("x", 1, "complete")], data_fp=None)
    for order in ((None, "76dbb8e3d834d9ca", "0123456789abcdef"), ("76dbb8e3d834d9ca", None, "0123456789abcdef")):
        target = f"sqlite:///{tmp_path / f'{order[0]}.db'}"
        first, *later = (merge([legacy], target, assume_data=fp)[0] for fp in order)
        assert first.added == 2
        assert [(m.added, m.unassumed_before, m.assumed_before) for m in later] == (
            [(0, 2, 0), (0, 2, 0)] if order[0] is None else [(0, 0, 2), (0, 0, 2)]
        )
        assert len(table(target)) == 2 and counts(target) == (6, 2)
    result = invoke("merge", legacy, "--db", tmp_path / "None.db", "--assume-data", "0123456789abcdef")
    assert "0 added" in result.output and "2 skipped: merged before without --assume-data" in result.output


def test_finished_runs_of_one_identity_with_other_numbers_are_a_conflict_said_and_settled(tmp_path):
    a = fill(tmp_path / "a.db", [("x", 0, "complete"), ("x", 1, "complete")])
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    with closing(sqlite3.connect(tmp_path / "b.db")) as conn:
        conn.execute("UPDATE runs SET test_acc = 0.9 WHERE seed = 1")
        conn.commit()
    b = f"sqlite:///{tmp_path / 'b.db'}"
    target = f"sqlite:///{tmp_path / 't.db'}"
    first, second = merge([a, b], target)
    assert (first.conflicts, second.finished_here) == ([], 1)  # seed 0 agrees: no conflict
    (c,) = second.conflicts
    assert (c.label, c.seed, c.metric, c.here, c.there, c.kept) == ("x/1", 1, "test_acc", 0.6, 0.9, "here")
    assert [acc for *_, acc in table(target)] == [0.5, 0.6]  # the target's, by default
    result = invoke("merge", b, "--db", target)
    assert "conflict: study 'toy', run x/1 (seed 1): test_acc 0.6 here (run 2), 0.9 in " in result.output
    assert "kept this database's (--on-conflict replace takes the source's)" in result.output
    (m,) = merge([b], target, on_conflict="replace")
    assert (m.replaced, m.conflicts[0].kept) == (1, "source")
    assert [acc for *_, acc in table(target)] == [0.5, 0.9] and counts(target) == (6, 2)
    assert merge([b], target)[0].conflicts == []  # settled: merging it again changes nothing
    result = invoke("merge", b, "--db", target, "--on-conflict", "newest")
    assert result.exit_code == 2 and "--on-conflict takes keep or replace" in result.output


def test_a_source_study_that_redefines_a_name_here_is_refused_or_renamed_or_replaces(tmp_path):
    target = fill(tmp_path / "t.db", [("x", 0, "complete")], axes={"model.depth": [1, 2]})
    before = file_digest(tmp_path / "t.db")
    other = fill(tmp_path / "o.db", [("y", 0, "complete")], axes={"optimizer.lr": [0.01, 0.05]})
    result = invoke("merge", other, "--db", target)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "study 'toy' of sqlite:///" in result.output and "axes optimizer.lr" in result.output
    assert "axes model.depth" in result.output and "--replace-study" in result.output
    assert "--rename toy=NEW" in result.output
    assert file_digest(tmp_path / "t.db") == before and sorted(p.name for p in tmp_path.glob("t.db*")) == ["t.db"]
    assert merge([other], target, rename=["toy=toy-lr"])[0].added == 1
    assert {(st, h) for st, h, *_ in table(target)} == {("toy", "x"), ("toy-lr", "y")}
    assert json.loads(dict((n, sp) for n, _, sp, _ in studies(target))["toy-lr"])["axes"] == {
        "optimizer.lr": [0.01, 0.05]
    }
    (m,) = merge([other], target, replace_study=True)
    assert m.added == 1 and m.redefined == ["toy"]
    assert json.loads(dict((n, sp) for n, _, sp, _ in studies(target))["toy"])["axes"] == {"optimizer.lr": [0.01, 0.05]}
    result = invoke("merge", other, "--db", target, "--rename", "nosuch=x")
    assert result.exit_code == 2 and "--rename: no source holds a study 'nosuch'" in result.output


def test_a_url_that_does_not_parse_is_one_line_either_side(tmp_path):
    good = fill(tmp_path / "good.db", [("x", 0, "complete")])
    for args in (("://", "--db", tmp_path / "t.db"), (good, "--db", "://")):
        result = invoke("merge", *args)
        assert (
            result.exit_code == 2
            and result.output.startswith("error: cannot parse database URL '://'")
            and result.output.count("\n") == 1
        ), result.output
    assert not (tmp_path / "t.db").exists()


def test_a_damaged_source_is_refused_in_one_line_and_the_target_keeps_every_byte(tmp_path):
    target = fill(tmp_path / "t.db", [("x", 0, "complete")])
    before = file_digest(tmp_path / "t.db")
    fill(tmp_path / "s.db", [("y", 0, "complete")])
    for name, damage, says in (
        ("nover.db", "DELETE FROM schema_version", "its schema_version table has no row"),
        ("orphan.db", "UPDATE runs SET study_id = 99", "run 1 names study id 99"),
    ):
        shutil.copy(tmp_path / "s.db", tmp_path / name)
        with closing(sqlite3.connect(tmp_path / name)) as conn:
            conn.execute(damage)
            conn.commit()
        result = invoke("merge", tmp_path / name, "--db", target)
        assert (
            result.exit_code == 2
            and result.output.startswith("error:")
            and says in result.output
            and result.output.count("\n") == 1
        ), result.output
        assert file_digest(tmp_path / "t.db") == before
    for command in (("status",), ("run", "smoke", "--device", "cpu", "--dry-run")):  # the same file, read directly
        result = invoke(*command, "--db", tmp_path / "nover.db")
        assert (
            result.exit_code == 2
            and "its schema_version table has no row" in result.output
            and result.output.count("\n") == 1
        ), result.output


@pytest.fixture(autouse=True)
def _quiet_host(monkeypatch):
    monkeypatch.setenv("ABLATE_DB", "")  # no default database steers a merge here
