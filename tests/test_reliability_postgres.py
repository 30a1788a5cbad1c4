"""The same protocol on a server database: PostgreSQL, started for the tests by ``pgserver``
(a pip-installable PostgreSQL) or found at ``ABLATE_TEST_POSTGRES_URL``. Skipped where
neither is available: ``pip install pgserver psycopg2-binary`` enables it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ablate.cli import app
from ablate.store import SCHEMA_VERSION, NewRun, Store, StoreError
from tests.conftest import race

pytest.importorskip("psycopg2")


@pytest.fixture(scope="module")
def server_url():
    url = os.environ.get("ABLATE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    pgserver = pytest.importorskip("pgserver")
    root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    root.chmod(0o755)  # as root, pgserver runs PostgreSQL as a user of its own
    server = pgserver.get_server(root / "data", cleanup_mode="stop")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(server_url):
    """A fresh database on the server for each test."""
    name = f"ablate_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


def test_migrations_build_the_schema_and_a_second_open_changes_nothing(pg_url):
    store = Store.open(pg_url)
    store.close()
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() == SCHEMA_VERSION
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0002"
    engine.dispose()
    Store.open(pg_url).close()


def test_concurrent_first_opens_upgrade_once(pg_url):
    assert race(lambda i: Store.open(pg_url).close()) == []


def test_concurrent_claimers_take_each_run_exactly_once(pg_url):
    setup = Store.open(pg_url)
    sid = setup.sync_study("s", "", {})
    setup.add_runs(sid, [NewRun("h", seed, {"seed": seed}, f"seed={seed}") for seed in range(60)])
    setup.close()
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(i: int):
        store = Store.open(pg_url)
        while (claim := store.claim(sid, "cpu", "host", 1000 + i)) is not None:
            assert store.heartbeat(claim.run_id, claim.token)
            assert store.record_epoch(claim.run_id, 1, {"test_acc": 0.5}, claim.token)
            assert store.finish(claim.run_id, "complete", {"test_acc": 0.5}, token=claim.token)
            with lock:
                claimed.append(claim.run_id)
        store.close()

    assert race(claimer) == []
    assert sorted(claimed) == list(range(1, 61))
    store = Store.open(pg_url)
    assert {(r["status"], r["attempts"]) for r in store.runs("s")} == {("complete", 1)}
    store.close()


def test_concurrent_add_runs_of_one_study(pg_url):
    Store.open(pg_url).close()
    def add(i):
        store = Store.open(pg_url)
        sid = store.sync_study("s", "", {})
        store.add_runs(sid, [NewRun("h", seed, {}, "x") for seed in range(20)])
        store.close()

    errors = race(add)
    store = Store.open(pg_url)
    assert errors == [] and len(store.runs("s")) == 20
    store.close()


def test_a_superseded_claim_is_fenced_and_stale_runs_are_requeued(pg_url):
    store = Store.open(pg_url)
    sid = store.sync_study("s", "", {})
    store.add_runs(sid, [NewRun("h", 0, {}, "x")])
    old = store.claim(sid, "cpu", "elsewhere", 1)
    assert store.requeue_stale(sid, older_than_s=3600) == []
    assert [r["id"] for r in store.requeue_stale(sid, older_than_s=-1)] == [old.run_id]
    new = store.claim(sid, "cpu", "here", 2)
    assert not store.record_epoch(old.run_id, 1, {"test_acc": 0.9}, old.token)
    assert not store.finish(old.run_id, "complete", token=old.token)
    assert store.finish(new.run_id, "complete", {"test_acc": 0.4}, token=new.token)
    assert store.runs("s")[0]["test_acc"] == 0.4
    store.close()


def test_a_newer_schema_is_refused(pg_url):
    Store.open(pg_url).close()
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this ablate"):
        Store.open(pg_url)


def test_the_smoke_study_end_to_end(pg_url, tmp_path):
    result = CliRunner().invoke(app, ["run", "smoke", "--db", pg_url, "--device", "cpu", "--epochs", "2",
                                      "--set", "train_subset=128", "--set", "model.width=8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    status = json.loads(CliRunner().invoke(app, ["status", "--db", pg_url, "--json"]).output)
    (study,) = status["studies"]
    assert study["counts"]["complete"] == 4
    assert not any((tmp_path / "checkpoints").rglob("*.pt"))  # checkpoints under ./checkpoints/NAME/, removed
