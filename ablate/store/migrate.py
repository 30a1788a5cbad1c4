"""Schema versions: which one a database has, and the Alembic upgrade to this ablate's.

The single-row ``schema_version`` table is the version the application reads; Alembic's
``alembic_version`` table names the revision that produced it. Each revision sets both.
A database of version 1 came before Alembic, so it has no ``alembic_version`` and is
stamped with the revision of its version before it is upgraded.

Adding a version: change ``schema.py``, raise ``SCHEMA_VERSION``, add a revision to
``migrations/versions/`` that sets ``schema_version`` to it and map it below, then freeze
a database of the version before under ``tests/assets/`` for ``tests/test_migrations.py``.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from ablate.store.schema import SCHEMA_VERSION

MIGRATIONS = Path(__file__).with_name("migrations")
REVISIONS = {1: "0001", 2: "0002", 3: "0003", 4: "0004"}  # schema_version -> the Alembic revision that made it
assert max(REVISIONS) == SCHEMA_VERSION
LOCK_ID = 0x61626C617465  # "ablate": the PostgreSQL advisory lock that serialises upgrades


@dataclass(frozen=True)
class Found:
    """What an opened database holds, read without writing anything."""

    tables: frozenset[str]
    version: int | None  # schema_version's value; None without the table, or with no row in it
    revision: str | None  # alembic_version's value; None without the table

    @property
    def empty(self) -> bool:
        return not self.tables

    @property
    def ours(self) -> bool:
        return "runs" in self.tables and "schema_version" in self.tables

    @property
    def versionless(self) -> bool:
        """Ours, but its single-row ``schema_version`` lost its row: damaged, not old."""
        return "schema_version" in self.tables and self.version is None

    @property
    def newer(self) -> bool:
        """Written by a newer ablate: a higher version, or a revision this one lacks."""
        known = set(REVISIONS.values())
        return (self.version or 0) > SCHEMA_VERSION or (self.revision is not None and self.revision not in known)

    @property
    def current(self) -> bool:
        return self.version == SCHEMA_VERSION and self.revision == REVISIONS[SCHEMA_VERSION]


def inspect(conn: sa.Connection) -> Found:
    tables = frozenset(sa.inspect(conn).get_table_names())
    version = revision = None
    if "schema_version" in tables:
        version = conn.exec_driver_sql("SELECT version FROM schema_version").scalar()
    if "alembic_version" in tables:
        revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return Found(tables, version, revision)


def inspect_sqlite_file(path: Path, uri: str | None = None) -> Found | None:
    """What a SQLite file holds, through a read-only connection (``uri``, by default
    ``mode=ro``): one that cannot even checkpoint a write-ahead log someone else left, so a
    refused file keeps every byte. None if it cannot be read that way (the caller then
    reads it as usual)."""
    uri = uri or f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            tables = frozenset(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
            version = revision = None
            if "schema_version" in tables:
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                version = row[0] if row else None
            if "alembic_version" in tables:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = row[0] if row else None
            return Found(tables - {"sqlite_sequence"}, version, revision)
    except sqlite3.Error:
        return None


def upgrade(conn: sa.Connection, found: Found) -> None:
    """Bring the database on ``conn`` to ``SCHEMA_VERSION`` inside the caller's transaction."""
    from alembic import command  # a second of imports that only a new or old database pays
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    if found.version is not None and found.revision is None:
        command.stamp(cfg, REVISIONS[found.version])
    command.upgrade(cfg, "head")
