import sqlite3

import pytest

from ablate.store import NewRun, SCHEMA_VERSION, Store, StoreError
from tests.conftest import file_digest


def _runs(n, h="abc"):
    return [NewRun(h, seed, {"seed": seed}, f"point seed={seed}") for seed in range(n)]


def test_add_runs_inserts_only_what_is_missing(store):
    sid = store.sync_study("s", "desc", {"axes": {}})
    assert store.add_runs(sid, _runs(3)) == 3
    assert store.add_runs(sid, _runs(4)) == 1
    assert [r["seed"] for r in store.runs("s")] == [0, 1, 2, 3]
    assert store.sync_study("s", "new desc", {}) == sid


def test_claim_takes_each_pending_run_once(store):
    sid = store.sync_study("s", "", {})
    store.add_runs(sid, _runs(2))
    a = store.claim(sid, "cpu", "h", 1)
    b = store.claim(sid, "cpu", "h", 1)
    assert {a.run_id, b.run_id} == {1, 2}
    assert store.claim(sid, "cpu", "h", 1) is None
    assert {r["status"] for r in store.runs("s")} == {"running"}


def test_claim_respects_the_only_filter(store):
    sid = store.sync_study("s", "", {})
    store.add_runs(sid, _runs(3))
    assert store.claim(sid, "cpu", "h", 1, only={3}).run_id == 3
    assert store.claim(sid, "cpu", "h", 1, only={3}) is None


def test_epochs_results_and_release(store):
    sid = store.sync_study("s", "", {})
    store.add_runs(sid, _runs(1))
    run = store.claim(sid, "cpu", "h", 1)
    store.record_epoch(run.run_id, 1, {"test_acc": 0.5, "train_loss": float("nan")})
    store.record_epoch(run.run_id, 1, {"test_acc": 0.6})  # a rewritten epoch replaces the old one
    assert store.metrics([run.run_id]) == [(1, 1, "test_acc", 0.6)]
    assert store.runs("s")[0]["epochs_done"] == 1
    store.release(run.run_id)
    r = store.runs("s")[0]
    assert r["status"] == "pending" and r["epochs_done"] == 0 and store.metrics([run.run_id]) == []
    run = store.claim(sid, "cpu", "h", 1)
    store.finish(run.run_id, "complete", {"test_acc": 0.7, "train_loss": float("inf")}, wall_s=2.0,
                 versions={"torch": "x", "ablate": "y"})
    r = store.runs("s")[0]
    assert (r["status"], r["test_acc"], r["train_loss"], r["torch_version"]) == ("complete", 0.7, None, "x")


def test_stale_running_runs_are_requeued(store):
    sid = store.sync_study("s", "", {})
    store.add_runs(sid, _runs(1))
    store.claim(sid, "cpu", "h", 1)
    assert store.requeue_stale(sid, older_than_s=3600) == 0
    assert store.requeue_stale(sid, older_than_s=-1) == 1
    assert store.runs("s")[0]["status"] == "pending"


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


def test_a_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not an ablate database"):
        Store.open(f"sqlite:///{path}")


def test_sqlite_runs_in_wal_mode(store, tmp_path):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_artifacts_round_trip_and_go_with_a_release(store):
    sid = store.sync_study("s", "", {})
    store.add_runs(sid, _runs(1))
    run = store.claim(sid, "cpu", "h", 1)
    store.put_artifact(run.run_id, "kernels", b"\x00\x01\x02\x03", "uint8", [2, 2])
    store.put_artifact(run.run_id, "kernels", b"\x04\x05\x06\x07", "uint8", [2, 2])  # replaces
    assert store.artifacts([run.run_id]) == [(run.run_id, "kernels", b"\x04\x05\x06\x07", "uint8", [2, 2])]
    store.release(run.run_id)
    assert store.artifacts([run.run_id]) == []
