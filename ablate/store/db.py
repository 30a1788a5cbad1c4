"""The one place that talks to the database. Everything else sees plain dicts.

Every public method is one transaction: a crash between two of them leaves the database
consistent, and an epoch's metrics land together with the run's progress or not at all.

Several runners may share one database. On SQLite every write transaction starts with
``BEGIN IMMEDIATE``, so writers queue for the lock (WAL, a 30 s busy timeout) instead of
failing when a read turns into a write; what SQLite still reports as busy is retried with
backoff. Readers never block writers. On a server database (PostgreSQL) the claim is the
same compare-and-swap. A runner's writes to a run carry its claim's number (``token``): a
run re-queued and claimed again behind its back refuses them.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ablate.store import migrate
from ablate.store.liveness import STALE_AFTER_S, stale_reason, this_host
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
BUSY_TIMEOUT_MS = 30_000  # SQLite waits this long for a lock before it says busy
BUSY_GIVE_UP_S = 600.0  # then ablate retries with backoff for this long in all
DONE = ("complete", "diverged", "failed")

T = TypeVar("T")


class StoreError(Exception):
    """A database that cannot be opened or used; the message names it."""


class StoreFailure(Exception):
    """The database failed under a command (a full disk, an I/O error): the environment's
    fault, not the input's. What was committed stands; the message says what to do."""


@dataclass(frozen=True)
class NewRun:
    config_hash: str
    seed: int
    config: dict[str, Any]
    label: str
    data_fp: str | None = None  # with the config and seed, what names a run
    data_name: str | None = None


@dataclass(frozen=True)
class Claim:
    run_id: int
    config: dict[str, Any]
    seed: int
    label: str
    config_hash: str = ""
    token: int = 0  # this claim's number (runs.attempts): pass it to every write of the run
    epochs_done: int = 0  # what the database holds; the checkpoint may be one epoch ahead
    data_fp: str | None = None  # the data it must train on; None: recorded before fingerprints
    created_at: datetime | None = None  # when its row was made: with the id, what names its checkpoint


def resolve_url(url: str | None) -> str:
    """``--db`` accepts a SQLAlchemy URL or a plain file path."""
    url = url or os.environ.get("ABLATE_DB") or DEFAULT_URL
    return url if "://" in url else f"sqlite:///{url}"


def _parse(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except ArgumentError:
        raise StoreError(f"cannot parse database URL '{url}'; give a file path or e.g. sqlite:///results.db") from None


def database_file(url: str | None) -> Path | None:
    """The SQLite file ``--db`` (a URL or a path) names, resolved; None for a server or in memory."""
    path = _sqlite_path(_parse(resolve_url(url)))
    return path.resolve() if path is not None else None


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def default_checkpoint_dir(url: str) -> Path:
    """Checkpoints live beside the database, not in it: ``DIR/checkpoints/NAME/`` for
    ``DIR/NAME.db``; for a server database, ``./checkpoints/NAME/`` (``--checkpoints``
    overrides both). Files are named for their run and its database
    (``checkpoints.checkpoint_key``), so databases that share a folder never share a file."""
    try:
        parsed = sa.make_url(resolve_url(url))
    except ArgumentError:
        return Path("checkpoints")
    path = _sqlite_path(parsed)
    if path is not None:
        return path.parent / "checkpoints" / path.stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", parsed.database or "memory").strip("._") or "db"
    return Path("checkpoints") / name


def _check_sqlite_file(path: Path, create: bool) -> bool:
    """Refuse, before SQLAlchemy touches it, a path that cannot hold our database.

    Returns whether the file exists. A file that is not SQLite is never opened, so it is
    never damaged; a writer is refused where SQLite could not write its journal.
    """
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if path.is_dir():
            raise StoreError(f"database path '{path}' is a directory; give a file path or a URL")
        try:
            with path.open("rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise StoreError(f"cannot read database '{path}': {e.strerror}") from None
        if head and head != SQLITE_MAGIC:
            raise StoreError(f"'{path}' is not a SQLite database; give a new file path or an ablate database")
        if create and not os.access(path, os.W_OK):
            raise StoreError(f"database '{path}' is read-only; give a writable file or a copy of it")
        if create and not os.access(parent, os.W_OK):
            raise StoreError(
                f"database '{path}' is in read-only directory '{parent}' (SQLite writes its "
                "journal beside the file); give a writable directory"
            )
        return True
    if create:
        if not parent.is_dir():
            raise StoreError(f"cannot create database '{path}': directory '{parent}' does not exist")
        if not os.access(parent, os.W_OK):
            raise StoreError(
                f"cannot create database '{path}': directory '{parent}' is read-only; give a writable directory"
            )
    return False


def _refuse(url: str, found: migrate.Found) -> None:
    if found.newer:
        raise StoreError(
            f"database '{url}' has schema version {found.version}, newer than this "
            f"ablate's {SCHEMA_VERSION}; upgrade ablate to use it"
        )
    if not found.empty and not found.ours:
        raise StoreError(f"database '{url}' holds other tables, not an ablate database")
    if found.versionless:
        raise StoreError(
            f"database '{url}' is damaged: its schema_version table has no row, so its schema "
            "is unknown; restore it from a copy, or give another database"
        )


def _readable_uri(path: Path, url: str) -> str:
    """A read-only SQLite URI for ``path``. A database in WAL mode on a read-only mount
    cannot be opened even read-only (SQLite wants its shared-memory file beside it), so
    there it is read as immutable: nobody can be writing it there."""
    base = f"file:{quote(str(path.resolve()))}"
    error = None
    for uri in (f"{base}?mode=ro", f"{base}?mode=ro&immutable=1"):
        try:
            with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return uri
        except sqlite3.Error as e:
            error = e
    raise StoreError(f"cannot read database '{url}': {error}")


def _sqlite_connect(dbapi_conn, _record) -> None:
    # pysqlite's own transaction handling would begin late and never IMMEDIATE: turn it off
    # and say BEGIN ourselves (below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")  # in WAL: never corrupt, at most the last commits lost on power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # A writer takes the write lock when it begins, waiting for it as long as the busy
    # timeout says. A deferred transaction that reads and then writes fails at once with
    # "database is locked" when another writer committed in between, whatever the timeout.
    write = conn.get_execution_options().get("ablate_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _is_busy(e: OperationalError) -> bool:
    text = str(e.orig).lower()
    code = getattr(e.orig, "pgcode", None) or getattr(e.orig, "sqlstate", None)
    # SQLite: locked or busy; PostgreSQL: serialization failure, deadlock, lock timeout.
    return "locked" in text or "busy" in text or code in ("40001", "40P01", "55P03")


def _retrying(integrity: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Retry a whole transaction, with backoff, while the database says busy (and, with
    ``integrity``, when a concurrent writer inserted the same unique row first: the retry
    then finds it). Only for methods that are one transaction, safe to run again."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def retry(self: Store, *args, **kwargs) -> T:
            deadline = time.monotonic() + BUSY_GIVE_UP_S
            delay = 0.02
            while True:
                try:
                    return fn(self, *args, **kwargs)
                except OperationalError as e:
                    if not _is_busy(e):
                        raise self._failure(e) or e from None
                    if time.monotonic() > deadline:
                        raise
                except IntegrityError:
                    if not integrity or time.monotonic() > deadline:
                        raise
                except DatabaseError as e:
                    raise self._failure(e) or e from None
                self.busy_retries += 1
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

        return retry

    return wrap


class Store:
    def __init__(self, engine: sa.Engine, url: str):
        self.engine = engine
        self.url = url
        self.busy_retries = 0  # transactions tried again because the database was busy
        self.path: Path | None = None  # the SQLite file, if it is one
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(ablate_write=True), expire_on_commit=False)

    # ------------------------------------------------------------------- opening

    @classmethod
    def open(cls, url: str | None = None, create: bool = True) -> Store:
        """Open (and with ``create``, make) the database at ``url``, upgrading an older schema.

        With ``create=False``, as the reading commands open it, nothing is ever written: a
        missing or empty SQLite file reads as an empty store, an older schema is upgraded
        in a copy in memory rather than in the file, a file on a read-only mount is read as
        it is, and a server database of an older schema is refused with what upgrades it.
        A database of a newer ablate is refused before anything is written to it.
        """
        url = resolve_url(url)
        parsed = _parse(url)
        url = parsed.render_as_string(hide_password=True)  # what messages and reports show: never a password
        path = _sqlite_path(parsed)
        if path is not None and not create:
            return cls._open_file_to_read(url, path)
        if parsed.get_backend_name() == "sqlite" and path is None:
            return cls._memory(url)
        if path is not None:
            _check_sqlite_file(path, create)
        try:
            engine = sa.create_engine(parsed)
        except (ArgumentError, ImportError) as e:
            raise StoreError(f"cannot open database '{url}': {e}") from None
        return cls._prepared(engine, url, path, writable=create)

    @classmethod
    def _prepared(cls, engine: sa.Engine, url: str, path: Path | None, writable: bool) -> Store:
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        store = cls(engine, url)
        store.path = path
        try:
            store._prepare(writable)
        except BaseException:
            engine.dispose()
            raise
        return store

    @classmethod
    def _memory(cls, url: str, conn: sqlite3.Connection | None = None) -> Store:
        """A store in memory: empty (a database not made yet), or on ``conn``, a copy."""
        if conn is None:  # made from the models at once: no migrations to import and run
            engine = sa.create_engine("sqlite://", poolclass=StaticPool)
            with engine.begin() as c:
                Base.metadata.create_all(c)
                c.execute(sa.insert(VersionRow).values(id=1, version=SCHEMA_VERSION))
            conn = engine.raw_connection().dbapi_connection
        engine = sa.create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
        return cls._prepared(engine, url, None, writable=True)  # a copy: ours to upgrade

    @classmethod
    def _open_file_to_read(cls, url: str, path: Path) -> Store:
        if not _check_sqlite_file(path, create=False) or path.stat().st_size == 0:
            return cls._memory(url)
        sidecars = [Path(f"{path}{s}") for s in ("-wal", "-shm")]
        there = [p.exists() for p in sidecars]
        uri = _readable_uri(path, url)
        found = migrate.inspect_sqlite_file(path, uri)
        if found is None:
            raise StoreError(f"cannot read database '{url}': not a readable SQLite database")
        try:
            _refuse(url, found)
        except StoreError:
            # Leave it as it was: the read-only look may have made an empty log beside it.
            if not sidecars[0].exists() or sidecars[0].stat().st_size == 0:
                for side, was in zip(sidecars, there):
                    if not was:
                        side.unlink(missing_ok=True)
            raise
        if found.empty or not found.current:  # upgraded (or made) in a copy, not in the file
            copy = sqlite3.connect(":memory:", check_same_thread=False)
            with closing(sqlite3.connect(uri, uri=True)) as source:
                source.backup(copy)
            return cls._memory(url, copy if not found.empty else None)
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
        return cls._prepared(engine, url, path, writable=False)

    @_retrying()
    def _prepare(self, writable: bool) -> None:
        try:
            found = migrate.inspect_sqlite_file(self.path) if self.path is not None and writable else None
            if found is None:
                with self.engine.connect() as conn:  # a read: a refused database stays untouched
                    found = migrate.inspect(conn)
            _refuse(self.url, found)
            if found.current:
                if writable and self.path is not None:
                    self._wal()
                return
            if not writable:  # a server database that a reading command may not upgrade
                raise StoreError(
                    f"database '{self.url}' has schema version {found.version or 'none'}, older than this ablate's "
                    f"{SCHEMA_VERSION}; the next 'ablate run' with this --db upgrades it"
                )
            if self.path is not None:
                self._wal()
            with self._upgrade_connection() as conn, conn.begin():
                if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE, for a server
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({migrate.LOCK_ID})")
                found = migrate.inspect(conn)  # another runner may have upgraded it meanwhile
                _refuse(self.url, found)
                if not found.current:
                    migrate.upgrade(conn, found)
        except OperationalError as e:
            if _is_busy(e):
                raise
            raise StoreError(f"cannot open database '{self.url}': {e.orig}") from None
        except DatabaseError as e:
            raise StoreError(f"cannot open database '{self.url}': {e.orig}") from None

    @contextmanager
    def _upgrade_connection(self) -> Iterator[sa.Connection]:
        """A write connection for the migrations. On SQLite with foreign keys off: changing a
        constraint there copies the table and drops the old one, and dropping ``runs`` with
        them on would cascade to every metric and artifact. The pragma only takes effect
        outside a transaction, so it is set on the raw connection before ours begins."""
        with self.engine.execution_options(ablate_write=True).connect() as conn:
            raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                yield conn
            finally:
                if raw is not None:
                    raw.execute("PRAGMA foreign_keys=ON")

    def _wal(self) -> None:
        # WAL lets readers (status, report) read while runners write. It is a property of
        # the file, set once, outside any transaction.
        raw = self.engine.raw_connection()
        try:
            mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raw.execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------- when it fails

    def check_intact(self) -> None:
        """Refuse a damaged SQLite file before anything is written to it (a write that
        meets a damaged page fails halfway through a command, after others succeeded)."""
        if self.path is None:
            return
        first = self._integrity()
        if first != "ok":
            raise StoreError(self._damaged(first))

    def _integrity(self) -> str:
        try:
            with self.engine.connect() as conn:
                return str(conn.exec_driver_sql("PRAGMA integrity_check(1)").scalar())
        except DatabaseError as e:
            return str(e.orig)

    def _damaged(self, first: str) -> str:
        # Its first row may start with a header line ("*** in database main ***"): the finding follows.
        found = [line for line in first.splitlines() if line.strip() and not line.startswith("***")]
        return (
            f"database '{self.url}' is damaged (integrity_check: {found[0] if found else first or '?'}); "
            "nothing was written to it: restore it from a copy, or give another --db"
        )

    def _failure(self, e: DatabaseError) -> Exception | None:
        """What a database error means to the user, or None for one left as it is."""
        text = str(e.orig).lower()
        code = getattr(e.orig, "pgcode", None) or getattr(e.orig, "sqlstate", None) or ""
        if ("full" in text and ("disk" in text or "database" in text)) or "no space" in text or code == "53100":
            return StoreFailure(
                f"database '{self.url}' cannot grow ({e.orig}): free some space and run again; "
                "recorded epochs are kept and unfinished points resume"
            )
        if "disk i/o error" in text or code.startswith("58"):
            return StoreFailure(
                f"database '{self.url}' failed ({e.orig}): check the disk and run again; "
                "recorded epochs are kept and unfinished points resume"
            )
        if "malformed" in text or "not a database" in text or code == "XX001":
            return StoreError(self._damaged(self._integrity() if self.path is not None else str(e.orig)))
        return None

    @property
    def checkpoint_dir(self) -> Path:
        return default_checkpoint_dir(self.url)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        with (self._write if write else self._read).begin() as s:
            yield s

    # ------------------------------------------------------------------ writing

    @_retrying(integrity=True)
    def sync_study(self, name: str, description: str, spec: dict[str, Any]) -> int:
        """The study's id, creating or updating its row."""
        with self.session(write=True) as s:
            row = s.scalar(sa.select(StudyRow).where(StudyRow.name == name))
            if row is None:
                row = StudyRow(name=name, description=description, spec_json=json.dumps(spec))
                s.add(row)
            elif (row.description, row.spec_json) != (description, json.dumps(spec)):
                row.description, row.spec_json = description, json.dumps(spec)
            s.flush()
            return row.id

    @_retrying(integrity=True)
    def add_runs(self, study_id: int, runs: Iterable[NewRun]) -> int:
        """Insert the runs not yet recorded as pending; return how many were new."""
        runs = list(runs)
        with self.session(write=True) as s:
            have = {
                tuple(r)
                for r in s.execute(
                    sa.select(RunRow.config_hash, RunRow.seed, RunRow.data_fp).where(RunRow.study_id == study_id)
                )
            }
            new = [r for r in runs if (r.config_hash, r.seed, r.data_fp or "") not in have]
            for r in new:
                s.add(
                    RunRow(
                        study_id=study_id,
                        config_hash=r.config_hash,
                        seed=r.seed,
                        data_fp=r.data_fp or "",
                        data_name=r.data_name,
                        config_json=json.dumps(r.config, sort_keys=True),
                        label=r.label,
                        status="pending",
                    )
                )
            return len(new)

    @_retrying()
    def claim(self, study_id: int, device: str, host: str, pid: int, only: set[int] | None = None) -> Claim | None:
        """Mark the oldest pending run of the study running and return it, or None.

        A compare-and-swap on the status: of two claimers of one row, one update matches
        (on SQLite the write lock serialises them; on a server the row lock does).
        """
        with self.session(write=True) as s:
            while True:
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
                    .values(
                        status="running",
                        device=device,
                        host=host,
                        pid=pid,
                        attempts=RunRow.attempts + 1,
                        started_at=now,
                        heartbeat_at=now,
                        ended_at=None,
                        error=None,
                    )
                )
                if done.rowcount == 1:
                    row = s.execute(
                        sa.select(
                            RunRow.config_json,
                            RunRow.seed,
                            RunRow.label,
                            RunRow.config_hash,
                            RunRow.attempts,
                            RunRow.epochs_done,
                            RunRow.data_fp,
                            RunRow.created_at,
                        ).where(RunRow.id == run_id)
                    ).one()
                    return Claim(
                        run_id,
                        json.loads(row.config_json),
                        row.seed,
                        row.label,
                        row.config_hash,
                        row.attempts,
                        row.epochs_done,
                        row.data_fp or None,
                        row.created_at,
                    )

    def _own(self, s: Session, run_id: int, token: int | None, **values: Any) -> bool:
        """Touch the run (heartbeat, plus ``values``) if it is still the claim ``token``'s.

        Without a token (tests, tools) any run is taken as it is."""
        q = sa.update(RunRow).where(RunRow.id == run_id)
        if token is not None:
            q = q.where(RunRow.status == "running", RunRow.attempts == token)
        return s.execute(q.values(heartbeat_at=utcnow(), **values)).rowcount == 1

    @_retrying()
    def record_epoch(self, run_id: int, epoch: int, metrics: dict[str, float], token: int | None = None) -> bool:
        """An epoch's metrics and the run's progress, together. Writing an epoch again
        replaces its values. False (and nothing written) if the run is no longer this claim's."""
        with self.session(write=True) as s:
            if not self._own(s, run_id, token, epochs_done=epoch):
                return False
            _put_metrics(s, run_id, epoch, metrics)
            return True

    @_retrying()
    def record_metrics(self, run_id: int, step: int, values: dict[str, float], token: int | None = None) -> bool:
        """Scalars at any step (probes log by training step), leaving the run's progress alone."""
        with self.session(write=True) as s:
            if not self._own(s, run_id, token):
                return False
            _put_metrics(s, run_id, step, values)
            return True

    @_retrying()
    def resume(
        self, run_id: int, epoch: int, history: list[tuple[int, dict[str, float]]], token: int | None = None
    ) -> bool:
        """A claimed run starts again from the end of ``epoch`` (0: from scratch).

        ``history`` holds the epochs its checkpoint covers; they are written (again), and
        the epoch metrics the checkpoint does not cover are dropped: the database may have
        run one epoch ahead of the checkpoint, and those epochs are trained anew. Probe
        scalars of later training steps stay until the replay overwrites them.
        """
        with self.session(write=True) as s:
            if not self._own(s, run_id, token, epochs_done=epoch):
                return False
            if epoch == 0:
                s.execute(sa.delete(MetricRow).where(MetricRow.run_id == run_id))
                s.execute(sa.delete(ArtifactRow).where(ArtifactRow.run_id == run_id))
                return True
            names = sorted({k for _, m in history for k in m})
            s.execute(
                sa.delete(MetricRow).where(
                    MetricRow.run_id == run_id, MetricRow.step > epoch, MetricRow.name.in_(names)
                )
            )
            for e, m in history:
                _put_metrics(s, run_id, e, m)
            return True

    @_retrying()
    def heartbeat(self, run_id: int, token: int | None = None) -> bool:
        """The run's worker is alive. False if the run is no longer this claim's."""
        with self.session(write=True) as s:
            return self._own(s, run_id, token)

    @_retrying()
    def add_note(self, run_id: int, note: str, token: int | None = None) -> bool:
        with self.session(write=True) as s:
            row = s.get(RunRow, run_id, with_for_update=True)  # a row lock on a server
            if row is None or (token is not None and (row.status != "running" or row.attempts != token)):
                return False
            row.notes = _append(row.notes, note)
            return True

    @_retrying()
    def finish(
        self,
        run_id: int,
        status: str,
        metrics: dict[str, float] | None = None,
        wall_s: float | None = None,
        error: str | None = None,
        versions: dict[str, str] | None = None,
        token: int | None = None,
    ) -> bool:
        """Close a run as complete, diverged or failed, with its final numbers."""
        metrics = metrics or {}
        versions = versions or {}
        with self.session(write=True) as s:
            q = sa.update(RunRow).where(RunRow.id == run_id)
            if token is not None:
                q = q.where(RunRow.status == "running", RunRow.attempts == token)
            return (
                s.execute(
                    q.values(
                        status=status,
                        ended_at=utcnow(),
                        wall_s=wall_s,
                        error=error,
                        torch_version=versions.get("torch"),
                        ablate_version=versions.get("ablate"),
                        **({"code_version": versions["code"]} if versions.get("code") else {}),
                        **{k: _finite(metrics.get(k)) for k in RESULT_COLUMNS},
                    )
                ).rowcount
                == 1
            )

    @_retrying()
    def put_artifact(
        self, run_id: int, name: str, data: bytes, dtype: str, shape: list[int], token: int | None = None
    ) -> bool:
        with self.session(write=True) as s:
            if not self._own(s, run_id, token):
                return False
            s.merge(ArtifactRow(run_id=run_id, name=name, dtype=dtype, shape=json.dumps(list(shape)), data=data))
            return True

    @_retrying()
    def release(self, run_id: int, token: int | None = None, note: str | None = None) -> bool:
        """Put an unfinished run back in the queue.

        Its metrics stay: the next claim resumes from its checkpoint and drops only the
        epochs the checkpoint does not cover (``resume``)."""
        with self.session(write=True) as s:
            row = s.get(RunRow, run_id, with_for_update=True)  # a row lock on a server
            if row is None or (token is not None and (row.status != "running" or row.attempts != token)):
                return False
            row.status, row.device, row.host, row.pid = "pending", None, None, None
            row.started_at = row.heartbeat_at = None
            if note:
                row.notes = _append(row.notes, note)
            return True

    def release_process(self, host: str, pid: int, wait_s: float = 1.0) -> int | None:
        """Put every run that process ``pid`` on ``host`` holds back to pending, waiting at
        most ``wait_s`` for the write lock: for a runner stopping at once, which cannot wait
        for the lock another runner holds. Returns how many, or None when the lock did not
        come in time; those runs are then found stale, their process being gone."""
        q = (
            sa.update(RunRow)
            .where(RunRow.status == "running", RunRow.host == host, RunRow.pid == pid)
            .values(status="pending", device=None, host=None, pid=None, started_at=None, heartbeat_at=None)
        )
        try:
            with self.engine.execution_options(ablate_write=True).connect() as conn:
                if conn.dialect.name == "sqlite":  # before BEGIN IMMEDIATE, which waits as long as it says
                    conn.connection.dbapi_connection.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait_s * 1000)}")
                    return conn.execute(q).rowcount
        except DatabaseError:
            return None

    @_retrying()
    def requeue_stale(
        self, study_id: int | None, older_than_s: float = STALE_AFTER_S, host: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs left `running` by a runner that is gone go back to pending, to be resumed.

        Gone: its process on this host no longer exists, or it sent no heartbeat for
        ``older_than_s``. Each run is swapped only if it is still the claim that was
        judged stale. Returns id, label and reason of each run re-queued.
        """
        host = host or this_host()
        now = utcnow()
        out = []
        with self.session(write=True) as s:
            q = sa.select(RunRow).where(RunRow.status == "running")
            if study_id is not None:
                q = q.where(RunRow.study_id == study_id)
            for row in s.scalars(q).all():
                reason = stale_reason(_as_dict(row), now, host, older_than_s)
                if reason is None:
                    continue
                # Swapped only if nothing moved since it was judged: not re-claimed, no new beat.
                beat = (
                    RunRow.heartbeat_at.is_(None)
                    if row.heartbeat_at is None
                    else RunRow.heartbeat_at == row.heartbeat_at
                )
                done = s.execute(
                    sa.update(RunRow)
                    .where(RunRow.id == row.id, RunRow.status == "running", RunRow.attempts == row.attempts, beat)
                    .values(
                        status="pending",
                        device=None,
                        host=None,
                        pid=None,
                        started_at=None,
                        heartbeat_at=None,
                        notes=_append(row.notes, f"attempt {row.attempts} re-queued: {reason}"),
                    )
                )
                if done.rowcount == 1:
                    out.append({"id": row.id, "label": row.label, "reason": reason})
        return out

    @_retrying()
    def retry_failed(self, study_id: int, only: set[int] | None = None) -> int:
        """Failed runs (of ``only``, if given) go back to pending; each starts from scratch."""
        with self.session(write=True) as s:
            q = sa.select(RunRow).where(RunRow.study_id == study_id, RunRow.status == "failed")
            if only is not None:
                q = q.where(RunRow.id.in_(only))
            rows = s.scalars(q.with_for_update()).all()
            for row in rows:
                first = (row.error or "").splitlines()[0] if row.error else "no message"
                row.status, row.device, row.host, row.pid = "pending", None, None, None
                row.started_at = row.heartbeat_at = None
                row.notes = _append(row.notes, f"attempt {row.attempts} failed ({first}); retried")
            return len(rows)

    # ------------------------------------------------------------------ reading

    @_retrying()
    def studies(self) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(sa.select(StudyRow).order_by(StudyRow.name))
            return [
                {"id": r.id, "name": r.name, "description": r.description, "spec": json.loads(r.spec_json)}
                for r in rows
            ]

    @_retrying()
    def runs(self, study: str | None = None) -> list[dict[str, Any]]:
        """Every run (of one study, if named) with its config decoded, oldest first."""
        with self.session() as s:
            q = sa.select(RunRow, StudyRow.name).join(StudyRow).order_by(RunRow.id)
            if study is not None:
                q = q.where(StudyRow.name == study)
            out = []
            for run, name in s.execute(q):
                d = _as_dict(run)
                d["config"] = json.loads(d.pop("config_json"))
                d["study"] = name
                out.append(d)
            return out

    @_retrying()
    def metrics(
        self, run_ids: Iterable[int], names: Iterable[str] | None = None
    ) -> list[tuple[int, int, str, float | None]]:
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

    @_retrying()
    def artifacts(
        self, run_ids: Iterable[int], name: str | None = None
    ) -> list[tuple[int, str, bytes, str, list[int]]]:
        """(run_id, name, raw bytes, dtype, shape) of the given runs' stored arrays."""
        with self.session() as s:
            q = sa.select(ArtifactRow).where(ArtifactRow.run_id.in_(list(run_ids)))
            if name is not None:
                q = q.where(ArtifactRow.name == name)
            return [_artifact_tuple(r) for r in s.scalars(q.order_by(ArtifactRow.run_id, ArtifactRow.name))]


def _put_metrics(s: Session, run_id: int, step: int, values: dict[str, float]) -> None:
    """Upsert named scalars at one step; other names at that step (probes) stay."""
    s.execute(
        sa.delete(MetricRow).where(MetricRow.run_id == run_id, MetricRow.step == step, MetricRow.name.in_(list(values)))
    )
    s.add_all(MetricRow(run_id=run_id, step=step, name=k, value=_finite(v)) for k, v in values.items())


def _as_dict(run: RunRow) -> dict[str, Any]:
    d = {c.key: getattr(run, c.key) for c in sa.inspect(RunRow).column_attrs}
    d["data_fp"] = d["data_fp"] or None  # '' in the table: not recorded
    return d


def _append(notes: str | None, note: str) -> str:
    return f"{notes}\n{note}" if notes else note


def _finite(v: float | None) -> float | None:
    if v is None or v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


def _artifact_tuple(row: ArtifactRow) -> tuple[int, str, bytes, str, list[int]]:
    return row.run_id, row.name, row.data, row.dtype, json.loads(row.shape)
