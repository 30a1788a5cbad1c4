"""Reading never writes: status, report, export, compare and --dry-run read a database as it
is (on a read-only mount, older, empty, or newer and refused) and leave every byte alone."""

import json
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from ablate.store import SCHEMA_VERSION
from tests.conftest import file_digest
from tests.test_reliability_inputs import _as_someone_else, invoke, read_only_dir, smoke_db  # noqa: F401

ASSETS = Path(__file__).parent / "assets"
READERS = [
    ["status"],
    ["status", "smoke", "--json"],
    ["report"],
    ["export", "smoke", "--out", "-"],
    ["compare", "smoke", "--by", "model.depth"],
    ["run", "smoke", "--dry-run"],
]


def _listing(folder: Path) -> dict[str, str | None]:
    return {p.name: file_digest(p) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_a_database_on_a_read_only_mount_is_read(args, read_only_dir, smoke_db, tmp_path):  # noqa: F811
    db = read_only_dir / "results.db"
    shutil.copy(smoke_db, db)  # a database in WAL mode: SQLite wants a -shm file beside it
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Once as ourselves first, on a copy: `nobody` may not read the interpreter's own files
    # to import what the command imports late; the child forked below inherits the imports.
    shutil.copy(smoke_db, tmp_path / "warm.db")
    out = ["--out", tmp_path / "report"] if args == ["report"] else []
    assert invoke(*args, *out, "--db", tmp_path / "warm.db").exit_code == 0
    read_only_dir.chmod(0o555)
    before = _listing(read_only_dir)
    out = ["--out", tempfile.mkdtemp(prefix="ablate-reading-")] if args == ["report"] else []
    if out:
        os.chmod(out[1], 0o777)
    code, output = _as_someone_else([*args, *out, "--db", f"sqlite:///{db}"])
    assert code == 0, output
    assert "unable to open" not in output
    assert _listing(read_only_dir) == before


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_an_older_database_is_read_as_it_is(args, tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "v1.db"
    shutil.copy(ASSETS / "results-v1.db", db)
    before = _listing(folder)
    result = invoke(*args, "--db", db)
    assert result.exit_code in (0, 2), result.output  # 2: the v1 file has no smoke study to compare
    assert _listing(folder) == before  # no upgrade, no WAL switch, no log beside it
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (1,)


def test_an_older_database_reads_with_its_runs(tmp_path):
    db = tmp_path / "v1.db"
    shutil.copy(ASSETS / "results-v1.db", db)
    status = json.loads(invoke("status", "--db", db, "--json").output)
    counts = {s["name"]: s["counts"]["complete"] for s in status["studies"]}
    assert counts == {"legacy": 0, "smoke": 4}


def test_an_empty_file_reads_as_an_empty_database(tmp_path):
    db = tmp_path / "empty.db"
    db.touch()
    result = invoke("status", "--db", db)
    assert result.exit_code == 0 and "no runs" in result.output
    assert db.stat().st_size == 0 and sorted(os.listdir(tmp_path)) == ["empty.db"]


def test_a_refused_newer_database_keeps_no_log_beside_it(tmp_path, smoke_db):  # noqa: F811
    db = tmp_path / "newer.db"
    shutil.copy(smoke_db, db)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
        conn.commit()
    before = _listing(tmp_path)
    for args in (["status"], ["report", "--out", tmp_path / "r"], ["run", "smoke", "--dry-run"]):
        result = invoke(*args, "--db", db)
        assert result.exit_code == 2 and "newer than this ablate" in result.output, args
        assert _listing(tmp_path) == before, args
