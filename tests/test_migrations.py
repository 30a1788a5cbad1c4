"""Schema versions: every earlier version, frozen under tests/assets/, is upgraded on open
with its data intact; a database of a newer ablate is refused and left as it was (on SQLite
byte for byte). On SQLite and on PostgreSQL (``any_db_url``): there an earlier version is
the frozen file's schema and rows, loaded into a fresh database (``_frozen_copy``)."""

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
from ablate.store.migrate import MIGRATIONS, REVISIONS
from ablate.store.schema import Base
from tests.conftest import file_digest, race

ASSETS = Path(__file__).parent / "assets"
# One per earlier version; see tests/assets/make_v*_db.py.
FROZEN = {1: ASSETS / "results-v1.db", 2: ASSETS / "results-v2.db", 3: ASSETS / "results-v3.db"}
V1_RUN_COLUMNS = (
    "id",
    "study_id",
    "config_hash",
    "seed",
    "config_json",
    "label",
    "status",
    "device",
    "host",
    "pid",
    "created_at",
    "started_at",
    "ended_at",
    "heartbeat_at",
    "wall_s",
    "epochs_done",
    "test_acc",
    "test_loss",
    "train_acc",
    "train_loss",
    "error",
    "torch_version",
    "ablate_version",
)


def test_every_earlier_version_has_a_frozen_database():
    assert sorted(FROZEN) == list(range(1, SCHEMA_VERSION))
    for version, path in FROZEN.items():
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchone() == (version,)


def _frozen_copy(version: int, url: str) -> str:
    """The frozen database of ``version`` at ``url`` (a SQLite file not yet there, or an
    empty server database): copied, or built there by the revisions up to ``version``
    and filled with the frozen file's rows. Returns ``url``."""
    from alembic import command
    from alembic.config import Config

    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":
        shutil.copy(FROZEN[version], target.database)
        return url
    source = sa.create_engine(f"sqlite:///file:{FROZEN[version]}?mode=ro&uri=true")
    engine = sa.create_engine(url)
    try:
        with source.connect() as src, engine.begin() as dst:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = dst
            command.upgrade(cfg, REVISIONS[version])
            if version == 1:  # version 1 came before Alembic
                dst.exec_driver_sql("DROP TABLE alembic_version")
            have = sa.MetaData()
            have.reflect(src)
            made = sa.MetaData()
            made.reflect(dst)
            for table in have.sorted_tables:
                if table.name in ("schema_version", "alembic_version"):  # the revisions wrote them
                    continue
                rows = [dict(r._mapping) for r in src.execute(sa.select(table))]
                if rows:
                    dst.execute(sa.insert(made.tables[table.name]), rows)
                if "id" in table.c:  # rows came with their ids: new ones follow them
                    dst.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"
                    )
            assert dst.exec_driver_sql("SELECT version FROM schema_version").scalar() == version
    finally:
        source.dispose()
        engine.dispose()
    return url


def _typed_rows(url: str, table: str, columns: tuple[str, ...] | list[str], order: tuple[str, ...]) -> list[tuple]:
    """``columns`` of ``table``, read through SQLAlchemy's types, so that SQLite's and
    PostgreSQL's rows compare: times as datetimes, blobs as bytes."""
    if url.startswith("sqlite:///") and "?" not in url:  # never open a file for writing here
        url = f"sqlite:///file:{Path(url.removeprefix('sqlite:///')).resolve()}?mode=ro&uri=true"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            q = sa.select(*(t.c[c] for c in columns)).order_by(*(t.c[c] for c in order))
            return [tuple(r) for r in conn.execute(q)]
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


V1_TABLES = {  # table: (columns, order)
    "runs": (V1_RUN_COLUMNS, ("id",)),
    "metrics": (("run_id", "step", "name", "value"), ("run_id", "step", "name")),
    "artifacts": (("run_id", "name", "dtype", "shape", "data"), ("run_id", "name")),
    "studies": (("id", "name", "description", "spec_json", "created_at"), ("id",)),
}


@pytest.mark.parametrize("version", sorted(FROZEN))
def test_an_older_database_is_upgraded_on_open_with_its_data_intact(version, any_db_url):
    frozen = FROZEN[version]
    asset_digest = file_digest(frozen)
    frozen_url = f"sqlite:///{frozen}"
    before = {t: _typed_rows(frozen_url, t, *spec) for t, spec in V1_TABLES.items()}
    assert all(before.values())
    url = _frozen_copy(version, any_db_url)

    Store.open(url).close()

    assert _typed_rows(url, "schema_version", ["version"], ("id",)) == [(SCHEMA_VERSION,)]
    assert _typed_rows(url, "alembic_version", ["version_num"], ("version_num",)) == [(REVISIONS[SCHEMA_VERSION],)]
    for table, spec in V1_TABLES.items():
        assert _typed_rows(url, table, *spec) == before[table], table
    if version == 1:  # runs that ever started count as claimed once; the rest have not been claimed
        assert _typed_rows(url, "runs", ["id", "attempts", "notes"], ("id",)) == [
            (r[0], int(r[11] is not None), None) for r in before["runs"]
        ]
    # Runs on the built-in synthetic data get its fingerprint as it was when they ran (frozen in
    # the migration: another torch may round a pixel of the generated images otherwise); of the
    # others' data nothing is known.
    synthetic = {r[0] for r in before["runs"] if json.loads(r[4]).get("data", {}).get("dataset") == "synthetic"}
    assert synthetic and len(synthetic) < len(before["runs"])
    if version >= 3:  # recorded with the run: kept as it was
        recorded = _typed_rows(frozen_url, "runs", ["id", "data_fp", "data_name"], ("id",))
        assert _typed_rows(url, "runs", ["id", "data_fp", "data_name"], ("id",)) == recorded
    else:
        assert _typed_rows(url, "runs", ["id", "data_fp", "data_name"], ("id",)) == [
            (r[0], *((_migration_0003().SYNTHETIC_FP, "synthetic") if r[0] in synthetic else ("", None)))
            for r in before["runs"]
        ]
    # Which code trained them was not recorded: none is made up.
    assert _typed_rows(url, "runs", ["code_version"], ("id",)) == [(None,)] * len(before["runs"])
    assert _schema_diff(url) == []
    assert file_digest(frozen) == asset_digest  # the asset itself is never opened for writing


def _migration_0003():
    import importlib.util

    path = Path(MIGRATIONS) / "versions" / "0003_data_identity.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_database_is_built_by_the_migrations_and_matches_the_models(any_db_url):
    Store.open(any_db_url).close()
    assert _schema_diff(any_db_url) == []
    assert _typed_rows(any_db_url, "schema_version", ["version"], ("id",)) == [(SCHEMA_VERSION,)]
    assert _typed_rows(any_db_url, "alembic_version", ["version_num"], ("version_num",)) == [
        (REVISIONS[SCHEMA_VERSION],)
    ]
    Store.open(any_db_url).close()  # a second open finds it current
    assert _schema_diff(any_db_url) == []


def test_an_upgraded_database_works_on(any_db_url):
    """The legacy study of the frozen file: its running run (a runner long gone) is stale,
    its failed run can be retried, and claims go on counting."""
    url = _frozen_copy(1, any_db_url)
    Store.open(url).close()  # upgraded by a writer (status reads as it is, never upgrading)
    status = json.loads(CliRunner().invoke(app, ["status", "--db", url, "--json"]).output)
    legacy = next(s for s in status["studies"] if s["name"] == "legacy")
    assert (legacy["counts"]["stale"], legacy["counts"]["failed"], legacy["counts"]["pending"]) == (1, 1, 1)
    (stale,) = [r for r in legacy["runs"] if r["status"] == "stale"]
    assert "no heartbeat" in stale["stale_reason"]
    store = Store.open(url)
    sid = next(s["id"] for s in store.studies() if s["name"] == "legacy")
    assert [r["id"] for r in store.requeue_stale(sid)] == [stale["id"]]
    assert store.retry_failed(sid) == 1
    tokens = {c.run_id: c.token for c in iter(lambda: store.claim(sid, "cpu", "h", 1), None)}
    assert sorted(tokens.values()) == [1, 2, 2]  # the pending run's first claim; the others' second
    store.close()


def test_concurrent_openers_upgrade_once(any_db_url):
    url = _frozen_copy(1, any_db_url)
    errors = race(lambda i: Store.open(url).close())
    assert errors == [] and _typed_rows(url, "schema_version", ["version"], ("id",)) == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize("mark", ["version", "revision"])
def test_a_database_of_a_newer_ablate_is_refused_and_left_as_it_was(mark, any_db_url):
    Store.open(any_db_url).close()
    engine = sa.create_engine(any_db_url)
    with engine.begin() as conn:
        if mark == "version":
            conn.exec_driver_sql(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
        else:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dfeed'")
    engine.dispose()
    path = sa.make_url(any_db_url).database if any_db_url.startswith("sqlite") else None
    before = file_digest(Path(path)) if path else _contents(any_db_url)
    for create in (True, False):
        with pytest.raises(StoreError, match="newer than this ablate"):
            Store.open(any_db_url, create=create)
    if path:  # byte for byte, and no write-ahead log left beside it
        assert file_digest(Path(path)) == before
        assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    else:
        assert _contents(any_db_url) == before


def _contents(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, sorted."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn)
            return {name: sorted(map(tuple, conn.execute(sa.select(t)))) for name, t in meta.tables.items()}
    finally:
        engine.dispose()
