import os
import sqlite3

import pytest
import sqlalchemy as sa

from ablate.store import SCHEMA_VERSION, NewRun, Store, StoreError
from tests.conftest import file_digest, race


def _runs(n, h="abc"):
    return [NewRun(h, seed, {"seed": seed}, f"point seed={seed}") for seed in range(n)]


def test_add_runs_inserts_only_what_is_missing(any_store):
    sid = any_store.sync_study("s", "desc", {"axes": {}})
    assert any_store.add_runs(sid, _runs(3)) == 3
    assert any_store.add_runs(sid, _runs(4)) == 1
    assert [r["seed"] for r in any_store.runs("s")] == [0, 1, 2, 3]
    assert any_store.sync_study("s", "new desc", {}) == sid


def test_claim_takes_each_pending_run_once(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(2))
    a = any_store.claim(sid, "cpu", "h", 1)
    b = any_store.claim(sid, "cpu", "h", 1)
    assert {a.run_id, b.run_id} == {1, 2}
    assert any_store.claim(sid, "cpu", "h", 1) is None
    assert {r["status"] for r in any_store.runs("s")} == {"running"}


def test_claim_respects_the_only_filter(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(3))
    assert any_store.claim(sid, "cpu", "h", 1, only={3}).run_id == 3
    assert any_store.claim(sid, "cpu", "h", 1, only={3}) is None


def test_epochs_results_and_release(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(1))
    run = any_store.claim(sid, "cpu", "h", 1)
    any_store.record_epoch(run.run_id, 1, {"test_acc": 0.5, "train_loss": float("nan")})
    any_store.record_epoch(
        run.run_id, 1, {"test_acc": 0.6, "train_loss": 2.0}
    )  # a rewritten epoch replaces the old one
    assert any_store.metrics([run.run_id]) == [(1, 1, "test_acc", 0.6), (1, 1, "train_loss", 2.0)]
    assert any_store.runs("s")[0]["epochs_done"] == 1
    # Released (Ctrl-C, a dead runner), a run keeps what its checkpoint will cover...
    assert any_store.release(run.run_id, run.token)
    r = any_store.runs("s")[0]
    assert r["status"] == "pending" and r["epochs_done"] == 1 and len(any_store.metrics([run.run_id])) == 2
    # ...and its next claim says where it resumes from: from scratch drops everything.
    run = any_store.claim(sid, "cpu", "h", 1)
    assert (run.token, run.epochs_done) == (2, 1)
    assert any_store.resume(run.run_id, 0, [], run.token) and any_store.metrics([run.run_id]) == []
    any_store.finish(
        run.run_id,
        "complete",
        {"test_acc": 0.7, "train_loss": float("inf")},
        wall_s=2.0,
        versions={"torch": "x", "ablate": "y"},
        token=run.token,
    )
    r = any_store.runs("s")[0]
    assert (r["status"], r["test_acc"], r["train_loss"], r["torch_version"]) == ("complete", 0.7, None, "x")
    assert r["attempts"] == 2


def test_resume_keeps_the_epochs_the_checkpoint_covers_and_drops_the_rest(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(1))
    run = any_store.claim(sid, "cpu", "h", 1)
    for epoch in (1, 2, 3):  # the database ran one epoch ahead of the checkpoint (epoch 2)
        any_store.record_epoch(run.run_id, epoch, {"test_acc": epoch / 10, "train_loss": 1.0 / epoch}, run.token)
    any_store.record_metrics(run.run_id, 7, {"grad_norm": 0.5}, run.token)  # a probe, by training step
    any_store.release(run.run_id, run.token)
    run = any_store.claim(sid, "cpu", "h", 1)
    history = [(1, {"test_acc": 0.1, "train_loss": 1.0}), (2, {"test_acc": 0.2, "train_loss": 0.5})]
    assert any_store.resume(run.run_id, 2, history, run.token)
    assert any_store.runs("s")[0]["epochs_done"] == 2
    rows = any_store.metrics([run.run_id])
    assert {(step, name) for _, step, name, _ in rows} == {
        (1, "test_acc"),
        (1, "train_loss"),
        (2, "test_acc"),
        (2, "train_loss"),
        (7, "grad_norm"),
    }


def test_a_superseded_claim_writes_nothing(any_store):
    """A runner declared stale while it still lives must not overwrite the new owner's run."""
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(1))
    old = any_store.claim(sid, "cpu", "h", 1)
    assert any_store.requeue_stale(sid, older_than_s=-1)
    new = any_store.claim(sid, "cpu", "h", 2)
    assert new.token == old.token + 1
    assert not any_store.heartbeat(old.run_id, old.token)
    assert not any_store.record_epoch(old.run_id, 1, {"test_acc": 0.9}, old.token)
    assert not any_store.record_metrics(old.run_id, 1, {"x": 1.0}, old.token)
    assert not any_store.put_artifact(old.run_id, "k", b"\0", "uint8", [1], old.token)
    assert not any_store.add_note(old.run_id, "old", old.token)
    assert not any_store.resume(old.run_id, 0, [], old.token)
    assert not any_store.finish(old.run_id, "complete", {"test_acc": 0.9}, token=old.token)
    assert not any_store.release(old.run_id, old.token)
    assert any_store.metrics([old.run_id]) == [] and any_store.artifacts([old.run_id]) == []
    r = any_store.runs("s")[0]
    assert (r["status"], r["pid"], r["test_acc"]) == ("running", 2, None)
    assert any_store.heartbeat(new.run_id, new.token) and any_store.finish(new.run_id, "complete", token=new.token)


def test_stale_running_runs_are_requeued(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(1))
    any_store.claim(sid, "cpu", "h", 1)
    assert any_store.requeue_stale(sid, older_than_s=3600, host="elsewhere") == []
    (requeued,) = any_store.requeue_stale(sid, older_than_s=-1, host="elsewhere")
    assert requeued["id"] == 1 and "no heartbeat" in requeued["reason"]
    r = any_store.runs("s")[0]
    assert r["status"] == "pending" and "re-queued: no heartbeat" in r["notes"]


def test_a_dead_process_on_this_host_is_stale_at_once(any_store):
    import subprocess
    import sys

    from ablate.store import this_host

    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(3))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    any_store.claim(sid, "cpu", this_host(), dead_pid)  # its process has exited
    any_store.claim(sid, "cpu", this_host(), os.getpid())  # alive: this very process
    any_store.claim(sid, "cpu", "another-machine", dead_pid)  # elsewhere a pid says nothing; it still beats
    (requeued,) = any_store.requeue_stale(sid)
    assert requeued["id"] == 1 and f"process {dead_pid}" in requeued["reason"]
    assert [r["status"] for r in any_store.runs("s")] == ["pending", "running", "running"]


def test_retry_failed_requeues_only_failed_runs(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(3))
    for status in ("failed", "diverged", "failed"):
        run = any_store.claim(sid, "cpu", "h", 1)
        any_store.finish(run.run_id, status, error="boom" if status == "failed" else None, token=run.token)
    assert any_store.retry_failed(sid, only={1, 2}) == 1
    assert [r["status"] for r in any_store.runs("s")] == ["pending", "diverged", "failed"]
    assert "attempt 1 failed (boom); retried" in any_store.runs("s")[0]["notes"]


def test_busy_database_is_retried_not_reported(store, tmp_path, monkeypatch):
    """Another connection holds the write lock past SQLite's busy timeout: the write waits
    with backoff and lands once the lock is free."""
    import sqlite3
    import threading

    import ablate.store.db as db

    sid = store.sync_study("s", "", {})
    store.add_runs(sid, _runs(1))
    store.close()
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 50)
    store = Store.open(store.url)
    locker = sqlite3.connect(store.url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.6, locker.rollback).start()
    assert store.claim(sid, "cpu", "h", 1).run_id == 1
    assert store.busy_retries > 0
    store.close()


def test_reader_on_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "absent.db"
    s = Store.open(f"sqlite:///{path}", create=False)
    assert s.runs() == [] and not path.exists()


def test_plain_paths_are_accepted(tmp_path):
    Store.open(str(tmp_path / "plain.db")).close()
    assert (tmp_path / "plain.db").exists()


def test_not_a_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my notes, not a database\n")
    before = file_digest(path)
    with pytest.raises(StoreError, match="not a SQLite database"):
        Store.open(f"sqlite:///{path}")
    assert file_digest(path) == before


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(StoreError, match="directory .* does not exist"):
        Store.open(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_a_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "new.db"
    Store.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    before = file_digest(path)
    with pytest.raises(StoreError, match="newer than this ablate"):
        Store.open(f"sqlite:///{path}")
    assert file_digest(path) == before


def test_a_foreign_database_is_refused(any_db_url):
    engine = sa.create_engine(any_db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE invoices (id INTEGER)")
    engine.dispose()
    with pytest.raises(StoreError, match="not an ablate database"):
        Store.open(any_db_url)


def test_sqlite_runs_in_wal_mode(store, tmp_path):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_artifacts_round_trip_and_go_with_a_fresh_start(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(1))
    run = any_store.claim(sid, "cpu", "h", 1)
    any_store.put_artifact(run.run_id, "kernels", b"\x00\x01\x02\x03", "uint8", [2, 2])
    any_store.put_artifact(run.run_id, "kernels", b"\x04\x05\x06\x07", "uint8", [2, 2])  # replaces
    assert any_store.artifacts([run.run_id]) == [(run.run_id, "kernels", b"\x04\x05\x06\x07", "uint8", [2, 2])]
    any_store.release(run.run_id)
    assert len(any_store.artifacts([run.run_id])) == 1  # kept for a resume...
    run = any_store.claim(sid, "cpu", "h", 1)
    any_store.resume(run.run_id, 0, [], run.token)  # ...dropped when the run starts from scratch
    assert any_store.artifacts([run.run_id]) == []


def test_concurrent_claimers_take_each_run_exactly_once(any_store):
    sid = any_store.sync_study("s", "", {})
    any_store.add_runs(sid, _runs(40))
    claimed = []

    def claimer(i):
        mine = Store.open(any_store.url)
        while (claim := mine.claim(sid, "cpu", "h", 100 + i)) is not None:
            claimed.append(claim.run_id)
            assert mine.heartbeat(claim.run_id, claim.token)
            assert mine.finish(claim.run_id, "complete", token=claim.token)
        mine.close()

    assert race(claimer) == [] and sorted(claimed) == list(range(1, 41))
    assert {(r["status"], r["attempts"]) for r in any_store.runs("s")} == {("complete", 1)}


def test_a_password_in_the_url_is_never_shown():
    with pytest.raises(StoreError) as e:
        Store.open("postgresql+psycopg://me:s3cret@127.0.0.1:1/nowhere")
    assert "s3cret" not in str(e.value) and "me:***@127.0.0.1" in str(e.value)
