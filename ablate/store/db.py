"""The one place that talks to the database. Everything else sees plain dicts.

Every public method is one transaction: a crash between two of them leaves the database
consistent, and an epoch's metrics land together with the run's progress or not at all.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ablate.store.schema import (
    SCHEMA_VERSION,
    ArtifactRow,
    Base,
    MetricRow,
    RunRow,
    StudyRow,
    VersionRow,
    utcnow,
)

DEFAULT_URL = "sqlite:///results.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
RESULT_COLUMNS = ("test_acc", "test_loss", "train_acc", "train_loss")
HEARTBEAT_S = 10.0  # a worker says it is alive this often, even inside a long epoch
STALE_AFTER_S = 180.0  # a running run silent this long belongs to a runner that died


class StoreError(Exception):
    """A database that cannot be opened or used; the message names it."""


@dataclass(frozen=True)
class NewRun:
    config_hash: str
    seed: int
    config: dict[str, Any]
    label: str


@dataclass(frozen=True)
class Claim:
    run_id: int
    config: dict[str, Any]
    seed: int
    label: str


def resolve_url(url: str | None) -> str:
    """``--db`` accepts a SQLAlchemy URL or a plain file path."""
    url = url or os.environ.get("ABLATE_DB") or DEFAULT_URL
    return url if "://" in url else f"sqlite:///{url}"


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _check_sqlite_file(path: Path, create: bool) -> bool:
    """Refuse, before SQLAlchemy touches it, a path that cannot hold our database.

    Returns whether the file exists. A file that is not SQLite is never opened, so it is
    never damaged.
    """
    if path.exists():
        if path.is_dir():
            raise StoreError(f"database path '{path}' is a directory; give a file path or a URL")
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            raise StoreError(f"'{path}' is not a SQLite database; give a new file path or an ablate database")
        return True
    parent = path.parent if str(path.parent) else Path(".")
    if create:
        if not parent.is_dir():
            raise StoreError(f"cannot create database '{path}': directory '{parent}' does not exist")
        if not os.access(parent, os.W_OK):
            raise StoreError(f"cannot create database '{path}': directory '{parent}' is not writable")
    return False


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (status, report) read while a runner writes; the busy timeout makes
    # a second writer wait for the lock instead of failing with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    def __init__(self, engine: sa.Engine, url: str):
        self.engine = engine
        self.url = url
        self._session = sessionmaker(engine, expire_on_commit=False)

    # ------------------------------------------------------------------- opening

    @classmethod
    def open(cls, url: str | None = None, create: bool = True) -> Store:
        """Open (and with ``create``, make) the database at ``url``.

        With ``create=False`` a missing SQLite file is not made: the store is empty and
        in memory, so ``status`` and ``report`` on a fresh directory write nothing.
        """
        url = resolve_url(url)
        try:
            parsed = sa.make_url(url)
        except ArgumentError:
            raise StoreError(f"cannot parse database URL '{url}'; give a file path or e.g. sqlite:///results.db") from None
        path = _sqlite_path(parsed)
        if path is not None and not _check_sqlite_file(path, create) and not create:
            parsed = sa.make_url("sqlite://")
        try:
            engine = sa.create_engine(parsed)
        except (ArgumentError, ImportError) as e:
            raise StoreError(f"cannot open database '{url}': {e}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, url)
        store._prepare()
        return store

    def _prepare(self) -> None:
        try:
            with self.engine.begin() as conn:
                tables = set(sa.inspect(conn).get_table_names())
                if "schema_version" in tables:
                    found = conn.execute(sa.select(VersionRow.version)).scalar()
                    if found is not None and found > SCHEMA_VERSION:
                        raise StoreError(
                            f"database '{self.url}' has schema version {found}, newer than this "
                            f"ablate's {SCHEMA_VERSION}; upgrade ablate to use it"
                        )
                elif tables and "runs" not in tables:
                    raise StoreError(f"database '{self.url}' holds other tables, not an ablate database")
                Base.metadata.create_all(conn)
                if "schema_version" not in tables:
                    conn.execute(sa.insert(VersionRow).values(id=1, version=SCHEMA_VERSION))
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"cannot open database '{self.url}': {e.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as s:
            yield s

    # ------------------------------------------------------------------ writing

    def sync_study(self, name: str, description: str, spec: dict[str, Any]) -> int:
        """The study's id, creating or updating its row."""
        with self.session() as s:
            row = s.scalar(sa.select(StudyRow).where(StudyRow.name == name))
            if row is None:
                row = StudyRow(name=name, description=description, spec_json=json.dumps(spec))
                s.add(row)
            else:
                row.description, row.spec_json = description, json.dumps(spec)
            s.flush()
            return row.id

    def add_runs(self, study_id: int, runs: Iterable[NewRun]) -> int:
        """Insert the runs not yet recorded as pending; return how many were new."""
        runs = list(runs)
        with self.session() as s:
            have = {
                tuple(r)
                for r in s.execute(sa.select(RunRow.config_hash, RunRow.seed).where(RunRow.study_id == study_id))
            }
            new = [r for r in runs if (r.config_hash, r.seed) not in have]
            for r in new:
                s.add(RunRow(
                    study_id=study_id, config_hash=r.config_hash, seed=r.seed,
                    config_json=json.dumps(r.config, sort_keys=True), label=r.label, status="pending",
                ))
            return len(new)

    def claim(self, study_id: int, device: str, host: str, pid: int, only: set[int] | None = None) -> Claim | None:
        """Mark the oldest pending run of the study running and return it, or None.

        A compare-and-swap on the status: of two claimers of one row, one update matches.
        """
        while True:
            with self.session() as s:
                q = sa.select(RunRow.id).where(RunRow.study_id == study_id, RunRow.status == "pending")
                if only is not None:
                    q = q.where(RunRow.id.in_(only))
                run_id = s.scalar(q.order_by(RunRow.id).limit(1))
                if run_id is None:
                    return None
                now = utcnow()
                done = s.execute(
                    sa.update(RunRow)
                    .where(RunRow.id == run_id, RunRow.status == "pending")
                    .values(status="running", device=device, host=host, pid=pid,
                            started_at=now, heartbeat_at=now, ended_at=None, error=None)
                )
                if done.rowcount == 1:
                    row = s.get(RunRow, run_id)
                    return Claim(run_id, json.loads(row.config_json), row.seed, row.label)

    def record_epoch(self, run_id: int, epoch: int, metrics: dict[str, float]) -> None:
        with self.session() as s:
            s.execute(sa.delete(MetricRow).where(MetricRow.run_id == run_id, MetricRow.step == epoch))
            s.add_all(MetricRow(run_id=run_id, step=epoch, name=k, value=_finite(v)) for k, v in metrics.items())
            s.execute(
                sa.update(RunRow).where(RunRow.id == run_id).values(epochs_done=epoch, heartbeat_at=utcnow())
            )

    def record_metrics(self, run_id: int, step: int, values: dict[str, float]) -> None:
        """Scalars at any step (probes log by training step), leaving the run's progress alone."""
        with self.session() as s:
            s.execute(sa.delete(MetricRow).where(
                MetricRow.run_id == run_id, MetricRow.step == step, MetricRow.name.in_(list(values))
            ))
            s.add_all(MetricRow(run_id=run_id, step=step, name=k, value=_finite(v)) for k, v in values.items())

    def heartbeat(self, run_id: int) -> None:
        with self.session() as s:
            s.execute(sa.update(RunRow).where(RunRow.id == run_id).values(heartbeat_at=utcnow()))

    def finish(
        self,
        run_id: int,
        status: str,
        metrics: dict[str, float] | None = None,
        wall_s: float | None = None,
        error: str | None = None,
        versions: dict[str, str] | None = None,
    ) -> None:
        """Close a run as complete, diverged or failed, with its final numbers."""
        metrics = metrics or {}
        versions = versions or {}
        with self.session() as s:
            s.execute(
                sa.update(RunRow).where(RunRow.id == run_id).values(
                    status=status, ended_at=utcnow(), wall_s=wall_s, error=error,
                    torch_version=versions.get("torch"), ablate_version=versions.get("ablate"),
                    **{k: _finite(metrics.get(k)) for k in RESULT_COLUMNS},
                )
            )

    def put_artifact(self, run_id: int, name: str, data: bytes, dtype: str, shape: list[int]) -> None:
        with self.session() as s:
            s.merge(ArtifactRow(run_id=run_id, name=name, dtype=dtype, shape=json.dumps(list(shape)), data=data))

    def release(self, run_id: int) -> None:
        """Put an interrupted run back in the queue, dropping its partial metrics."""
        with self.session() as s:
            s.execute(sa.delete(MetricRow).where(MetricRow.run_id == run_id))
            s.execute(sa.delete(ArtifactRow).where(ArtifactRow.run_id == run_id))
            s.execute(
                sa.update(RunRow).where(RunRow.id == run_id).values(
                    status="pending", epochs_done=0, device=None, host=None, pid=None,
                    started_at=None, heartbeat_at=None,
                )
            )

    def requeue_stale(self, study_id: int | None, older_than_s: float) -> int:
        """Runs left `running` by a runner that stopped beating go back to pending."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.session() as s:
            q = sa.select(RunRow.id).where(RunRow.status == "running", RunRow.heartbeat_at < cutoff)
            if study_id is not None:
                q = q.where(RunRow.study_id == study_id)
            ids = list(s.scalars(q))
        for run_id in ids:
            self.release(run_id)
        return len(ids)

    # ------------------------------------------------------------------ reading

    def studies(self) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(sa.select(StudyRow).order_by(StudyRow.name))
            return [
                {"id": r.id, "name": r.name, "description": r.description, "spec": json.loads(r.spec_json)}
                for r in rows
            ]

    def runs(self, study: str | None = None) -> list[dict[str, Any]]:
        """Every run (of one study, if named) with its config decoded, oldest first."""
        with self.session() as s:
            q = sa.select(RunRow, StudyRow.name).join(StudyRow).order_by(RunRow.id)
            if study is not None:
                q = q.where(StudyRow.name == study)
            out = []
            for run, name in s.execute(q):
                d = {c.key: getattr(run, c.key) for c in sa.inspect(RunRow).column_attrs}
                d["config"] = json.loads(d.pop("config_json"))
                d["study"] = name
                out.append(d)
            return out

    def metrics(self, run_ids: Iterable[int], names: Iterable[str] | None = None) -> list[tuple[int, int, str, float | None]]:
        """Long-format (run_id, step, name, value) rows of the given runs."""
        run_ids = list(run_ids)
        if not run_ids:
            return []
        with self.session() as s:
            q = sa.select(MetricRow.run_id, MetricRow.step, MetricRow.name, MetricRow.value).where(
                MetricRow.run_id.in_(run_ids)
            )
            if names is not None:
                q = q.where(MetricRow.name.in_(list(names)))
            return [tuple(r) for r in s.execute(q.order_by(MetricRow.run_id, MetricRow.step, MetricRow.name))]

    def artifacts(self, run_ids: Iterable[int], name: str | None = None) -> list[tuple[int, str, bytes, str, list[int]]]:
        """(run_id, name, raw bytes, dtype, shape) of the given runs' stored arrays."""
        with self.session() as s:
            q = sa.select(ArtifactRow).where(ArtifactRow.run_id.in_(list(run_ids)))
            if name is not None:
                q = q.where(ArtifactRow.name == name)
            return [_artifact_tuple(r) for r in s.scalars(q.order_by(ArtifactRow.run_id, ArtifactRow.name))]


def _finite(v: float | None) -> float | None:
    if v is None or v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


def _artifact_tuple(row: ArtifactRow) -> tuple[int, str, bytes, str, list[int]]:
    return row.run_id, row.name, row.data, row.dtype, json.loads(row.shape)
