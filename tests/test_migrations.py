"""Schema versions: every earlier version, frozen under tests/assets/, is upgraded on open
with its data intact; a database of a newer ablate is refused and left byte-for-byte."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ablate.cli import app
from ablate.store import SCHEMA_VERSION, Store, StoreError
from ablate.store.migrate import REVISIONS
from ablate.store.schema import Base
from tests.conftest import file_digest, race

ASSETS = Path(__file__).parent / "assets"
FROZEN = {1: ASSETS / "results-v1.db"}  # one per earlier version; see tests/assets/make_v1_db.py
V1_RUN_COLUMNS = (
    "id", "study_id", "config_hash", "seed", "config_json", "label", "status", "device", "host", "pid",
    "created_at", "started_at", "ended_at", "heartbeat_at", "wall_s", "epochs_done", "test_acc", "test_loss",
    "train_acc", "train_loss", "error", "torch_version", "ablate_version",
)


def test_every_earlier_version_has_a_frozen_database():
    assert sorted(FROZEN) == list(range(1, SCHEMA_VERSION))
    for version, path in FROZEN.items():
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchone() == (version,)


def _rows(path: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def _schema_diff(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("version", sorted(FROZEN))
def test_an_older_database_is_upgraded_on_open_with_its_data_intact(version, tmp_path):
    frozen = FROZEN[version]
    asset_digest = file_digest(frozen)
    path = tmp_path / "old.db"
    shutil.copy(frozen, path)
    runs = _rows(path, f"SELECT {', '.join(V1_RUN_COLUMNS)} FROM runs ORDER BY id")
    metrics = _rows(path, "SELECT run_id, step, name, value FROM metrics ORDER BY run_id, step, name")
    artifacts = _rows(path, "SELECT run_id, name, dtype, shape, data FROM artifacts ORDER BY run_id, name")
    studies = _rows(path, "SELECT id, name, description, spec_json, created_at FROM studies ORDER BY id")
    assert runs and metrics and artifacts and studies

    Store.open(f"sqlite:///{path}").close()

    assert _rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert _rows(path, "SELECT version_num FROM alembic_version") == [(REVISIONS[SCHEMA_VERSION],)]
    assert _rows(path, f"SELECT {', '.join(V1_RUN_COLUMNS)} FROM runs ORDER BY id") == runs
    assert _rows(path, "SELECT run_id, step, name, value FROM metrics ORDER BY run_id, step, name") == metrics
    assert _rows(path, "SELECT run_id, name, dtype, shape, data FROM artifacts ORDER BY run_id, name") == artifacts
    assert _rows(path, "SELECT id, name, description, spec_json, created_at FROM studies ORDER BY id") == studies
    # Runs that ever started count as claimed once; the rest have not been claimed.
    assert _rows(path, "SELECT id, attempts, notes FROM runs ORDER BY id") == [
        (r[0], int(r[11] is not None), None) for r in runs
    ]
    assert _schema_diff(f"sqlite:///{path}") == []
    assert file_digest(frozen) == asset_digest  # the asset itself is never opened for writing


def test_a_new_database_is_built_by_the_migrations_and_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Store.open(url).close()
    assert _schema_diff(url) == []


def test_an_upgraded_database_works_on(tmp_path):
    """The legacy study of the frozen file: its running run (a runner long gone) is stale,
    its failed run can be retried, and claims go on counting."""
    path = tmp_path / "old.db"
    shutil.copy(FROZEN[1], path)
    status = json.loads(CliRunner().invoke(app, ["status", "--db", path, "--json"]).output)
    legacy = next(s for s in status["studies"] if s["name"] == "legacy")
    assert (legacy["counts"]["stale"], legacy["counts"]["failed"], legacy["counts"]["pending"]) == (1, 1, 1)
    (stale,) = [r for r in legacy["runs"] if r["status"] == "stale"]
    assert "no heartbeat" in stale["stale_reason"]
    store = Store.open(str(path))
    sid = next(s["id"] for s in store.studies() if s["name"] == "legacy")
    assert [r["id"] for r in store.requeue_stale(sid)] == [stale["id"]]
    assert store.retry_failed(sid) == 1
    tokens = {c.run_id: c.token for c in iter(lambda: store.claim(sid, "cpu", "h", 1), None)}
    assert sorted(tokens.values()) == [1, 2, 2]  # the pending run's first claim; the others' second
    store.close()


def test_concurrent_openers_upgrade_once(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FROZEN[1], path)
    errors = race(lambda i: Store.open(str(path)).close())
    assert errors == [] and _rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize("mark", ["version", "revision"])
def test_a_database_of_a_newer_ablate_is_refused_and_left_byte_for_byte(mark, tmp_path):
    path = tmp_path / "newer.db"
    Store.open(str(path)).close()
    with closing(sqlite3.connect(path)) as conn:
        if mark == "version":
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        else:
            conn.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
        conn.commit()
    before = file_digest(path)
    for create in (True, False):
        with pytest.raises(StoreError, match="newer than this ablate"):
            Store.open(str(path), create=create)
    assert file_digest(path) == before
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
