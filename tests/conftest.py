"""Shared fixtures: a fresh database per test, run from a scratch directory."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from ablate.store import Store


@pytest.fixture(autouse=True)
def _scratch_dir(tmp_path, monkeypatch):
    # Every command defaults to ./results.db and ./reports: keep them out of the repo,
    # and keep the user's environment from steering the tests.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATE_DB", raising=False)
    monkeypatch.delenv("ABLATE_DATA", raising=False)


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    yield s
    s.close()


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


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
