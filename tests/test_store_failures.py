"""A damaged database and a full disk (issue 14, item 9): one line, never a traceback; a
damaged database is reported as damaged and nothing is written to it; a full disk is the
environment's fault (exit 1), and the points it interrupted resume."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import ablate.store.db
from ablate.cli import app
from tests.conftest import file_digest

FAST = ("--device", "cpu", "--set", "train_subset=64", "--set", "model.width=4")
PAGE = 4096


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_lines(output: str) -> list[str]:
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("failures") / "smoke.db"
    result = invoke("run", "smoke", "--db", path, "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(path)) as conn:  # the log folded in: every page in the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _damaged(smoke_db: Path, tmp_path: Path) -> Path:
    """A copy with the page holding the metrics' names overwritten with junk."""
    db = tmp_path / "damaged.db"
    shutil.copy(smoke_db, db)
    data = bytearray(db.read_bytes())
    page = next(i for i in range(1, len(data) // PAGE) if b"train_loss" in data[i * PAGE : (i + 1) * PAGE])
    data[page * PAGE : (page + 1) * PAGE] = bytes((i * 37 + 11) % 256 for i in range(PAGE))
    db.write_bytes(bytes(data))
    return db


@pytest.mark.parametrize(
    "command",
    [  # run checks before its first write; the others meet the damaged page
        ["run", "smoke", "--epochs", "2", *FAST],
        ["export", "smoke", "--metrics", "--out", "-"],
        ["report", "--out", "rep"],
    ],
)
def test_a_damaged_database_is_reported_as_damaged_and_left_alone(command, smoke_db, tmp_path):
    db = _damaged(smoke_db, tmp_path)
    before = file_digest(db)
    result = invoke(*command, "--db", db)
    (line,) = error_lines(result.output)
    assert result.exit_code == 2, result.output
    assert "damaged.db" in line and "damaged" in line.replace("damaged.db", "") and "integrity_check: " in line
    assert "***" not in line  # the finding, not integrity_check's header line
    assert line.endswith("nothing was written to it: restore it from a copy, or give another --db")
    assert file_digest(db) == before
    assert not list(tmp_path.glob("checkpoints/**/*.pt"))


def test_a_damaged_databases_line_gives_the_finding_after_the_header_or_a_question_mark(db_url):
    store = ablate.store.db.Store.open(db_url)
    try:
        header = "*** in database main ***\nPage 11: btreeInitPage() returns error code 11"
        assert store._damaged(header).startswith(
            f"database '{store.url}' is damaged (integrity_check: Page 11: btreeInitPage() returns error code 11); "
        )
        assert f"database '{store.url}' is damaged (integrity_check: ?); " in store._damaged("")
    finally:
        store.close()


def _full_after(pages: int, monkeypatch):
    """Every connection of the store may grow the file to ``pages`` pages, and no further:
    SQLite then says what it says on a full disk (SQLITE_FULL)."""
    real = ablate.store.db._sqlite_connect

    def connect(dbapi_conn, record):
        real(dbapi_conn, record)
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    monkeypatch.setattr(ablate.store.db, "_sqlite_connect", connect)


def _pages(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA page_count").fetchone()[0]


@pytest.mark.parametrize("where", ["add_runs", "record_epoch"])
def test_a_full_disk_is_one_line_exit_1_and_the_run_resumes(where, smoke_db, tmp_path, monkeypatch):
    db = tmp_path / "full.db"
    shutil.copy(smoke_db, db)
    settings = ["--epochs", "8", *FAST]  # another variant: four new runs to record and train
    if where == "record_epoch":  # the runs recorded first, then no room for anything more
        import ablate.run
        from ablate.config import to_dict
        from ablate.store import NewRun

        real_execute = ablate.run.execute

        def record_then_fill(store, plan_, *args, **kwargs):
            study_id = store.sync_study(plan_.study.name, plan_.study.description, ablate.run._study_spec(plan_.study))
            store.add_runs(
                study_id,
                [
                    NewRun(
                        p.config_hash,
                        p.seed,
                        to_dict(p.config),
                        p.label,
                        plan_.identity(p).fingerprint,
                        plan_.identity(p).name,
                    )
                    for p in plan_.points
                ],
            )
            pages = _pages(db)
            sa.event.listen(store.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA max_page_count={pages}"))
            store.engine.dispose()  # connections made from now on get the limit
            return real_execute(store, plan_, *args, **kwargs)

        monkeypatch.setattr(ablate.run, "execute", record_then_fill)
    else:
        _full_after(_pages(db), monkeypatch)
    result = invoke("run", "smoke", "--db", db, *settings)
    (line,) = error_lines(result.output)
    assert result.exit_code == 1, result.output
    assert "full" in line and "full.db" in line
    monkeypatch.undo()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = invoke("run", "smoke", "--db", db, *settings)
    assert again.exit_code == 0, again.output
