"""Shared fixtures: a fresh database per test, run from a scratch directory.

``db_url`` and ``store`` are SQLite. ``any_db_url`` and ``any_store`` run a test once on
SQLite and once on PostgreSQL (ids ``sqlite`` and ``postgres``: ``pytest -k postgres``); the
PostgreSQL runs need a server at ``ABLATE_TEST_POSTGRES_URL`` (``.ci/run`` starts one) and
are skipped without it. Each gets a database of its own there, dropped after the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from ablate.store import Store

PG_ENV = "ABLATE_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _scratch_dir(tmp_path, monkeypatch):
    # Every command defaults to ./results.db and ./reports: keep them out of the repo,
    # and keep the user's environment from steering the tests.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATE_DB", raising=False)
    monkeypatch.delenv("ABLATE_DATA", raising=False)
    monkeypatch.setenv("ABLATE_PLUGINS", "")  # a test's plugins reach its own workers only


@pytest.fixture(autouse=True, scope="session")
def _checkpoint_every_epoch():
    # The tests' runs take seconds, far below checkpoints.SHORT_RUN_S: they checkpoint every
    # epoch, as a long run does, so that resuming is tested at all. Session-wide: module
    # fixtures run studies too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CHECKPOINT_AFTER_S", "0")
        yield


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The PostgreSQL server to test against: a URL to a database on it, as a user who may
    CREATE DATABASE, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server: set {PG_ENV}=postgresql+psycopg://USER@HOST:PORT/DB (.ci/run starts one)")
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):  # SQLAlchemy's default would be psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_server_url) -> str:
    """A fresh database on the server, dropped after the test (connections and all)."""
    name = f"ablate_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request, db_url) -> str:
    """The test runs on each backend: a SQLite file, then a PostgreSQL database."""
    return db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def any_store(any_db_url):
    s = Store.open(any_db_url)
    yield s
    s.close()


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@contextlib.contextmanager
def one_thread():
    """Torch at one intra-op thread, here and in the worker processes this test spawns.

    Two runs compare to the last bit only at one thread count: a float sum split over other
    threads rounds otherwise. Small nets gain nothing from threads on two shared cores anyway.
    """
    import torch

    before, saved = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def race(fn, n: int = 4) -> list[str]:
    """Run ``fn(i)`` for i in 0..n-1 in threads started together; return their errors.

    An exception (an assert included) inside a thread would otherwise vanish with it.
    """
    errors: list[str] = []

    def guarded(i: int) -> None:
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
