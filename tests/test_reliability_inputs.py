"""Bad input never damages anything: each case gets one line naming the thing at fault and
what would be accepted, exit code 2, no traceback, and the database byte-for-byte as it was."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ablate.cli import app
from ablate.store import SCHEMA_VERSION
from tests.conftest import file_digest


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "smoke.db"
    result = invoke("run", "smoke", "--db", path, "--device", "cpu", "--epochs", "1", "--set", "train_subset=128")
    assert result.exit_code == 0, result.output
    return path


def _batches(root: Path, n: int = 20) -> Path:
    """A tiny but well-formed cifar-10-batches-py/ folder."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)
    )
    return folder


def _cases(tmp: Path, db: Path) -> dict[str, tuple[list, list[str]]]:
    """name -> (arguments, fragments the one line must hold: the culprit and what is accepted)."""
    broken = tmp / "broken.toml"
    broken.write_text("description = 'x'\n[base]\noptimizer = { lrr = 0.1 }\n")
    not_toml = tmp / "not_toml.toml"
    not_toml.write_text("description = 'x'\n[base\nepochs = 1\n")
    empty = tmp / "empty"
    empty.mkdir()
    truncated = tmp / "truncated"
    batch = _batches(truncated) / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-100])
    corrupted = tmp / "corrupted"
    batch = _batches(corrupted) / "data_batch_2"
    batch.write_bytes(b"\x80\x02" + os.urandom(3000) + b".")  # ends like a pickle, holds garbage
    good = tmp / "good"
    _batches(good)
    notes = tmp / "notes.txt"
    notes.write_text("my notes, not a database\n")
    newer = tmp / "newer.db"
    shutil.copy(db, newer)
    with closing(sqlite3.connect(newer)) as conn:  # closed: its log is folded into the file now
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        conn.commit()
    url = f"sqlite:///{db}"
    return {
        "unknown study": (["run", "nosuch", "--db", url], ["unknown study 'nosuch'", "smoke"]),
        "study file, invalid key": (["run", broken, "--db", url], ["broken.toml", "line 3", "lrr"]),
        "study file, invalid TOML": (["run", not_toml, "--db", url], ["not_toml.toml", "line 2"]),
        "--set unknown key": (["run", "smoke", "--set", "optimizer.lrr=1", "--db", url], ["optimizer.lrr"]),
        "--set wrong type": (
            ["run", "smoke", "--set", "epochs=many", "--db", url],
            ["epochs must be an integer", "many"],
        ),
        "--set negative learning rate": (
            ["run", "smoke", "--set", "optimizer.lr=-1", "--db", url],
            ["optimizer.lr must be >0"],
        ),
        "--epochs 0": (["run", "smoke", "--epochs", "0", "--db", url], ["epochs must be >= 1"]),
        "--set without =": (["run", "smoke", "--set", "epochs", "--db", url], ["KEY=VALUE"]),
        "--device unknown": (["run", "smoke", "--device", "tpu", "--db", url], ["'tpu'", "accepted"]),
        "data dir missing": (
            ["run", "depth", "--data", tmp / "nope", "--db", url],
            ["nope", "does not exist", "expected"],
        ),
        "data dir without a layout": (
            ["run", "depth", "--data", empty, "--db", url],
            ["empty", "no CIFAR-10 layout", "expected"],
        ),
        "data batch file truncated": (
            ["run", "depth", "--data", truncated, "--db", url],
            ["data_batch_3", "truncated"],
        ),
        "data batch file corrupted": (
            ["run", "depth", "--data", corrupted, "--device", "cpu", "--db", url],
            ["data_batch_2", "corrupted"],
        ),
        "database directory missing": (
            ["run", "smoke", "--data", good, "--db", f"sqlite:///{tmp}/no/such/x.db"],
            ["no/such", "does not exist"],
        ),
        "database not a database": (
            ["run", "smoke", "--db", f"sqlite:///{notes}"],
            ["notes.txt", "not a SQLite database"],
        ),
        "--checkpoints not a folder": (
            ["run", "smoke", "--checkpoints", notes / "ckpt", "--db", url],
            ["notes.txt", "not a folder", "--checkpoints"],
        ),
        "database of a newer ablate": (
            ["run", "smoke", "--db", f"sqlite:///{newer}"],
            ["newer.db", "newer than this ablate"],
        ),
        "status, database of a newer ablate": (["status", "--db", f"sqlite:///{newer}"], ["newer than this ablate"]),
        "report, database of a newer ablate": (["report", "--db", f"sqlite:///{newer}"], ["newer than this ablate"]),
        "report --figure that does not exist": (
            ["report", "--figure", "99", "--db", url],
            ["no figure 99", "figures: 0"],
        ),
    }


CASES = [
    "unknown study",
    "study file, invalid key",
    "study file, invalid TOML",
    "--set unknown key",
    "--set wrong type",
    "--set negative learning rate",
    "--epochs 0",
    "--set without =",
    "--device unknown",
    "data dir missing",
    "data dir without a layout",
    "data batch file truncated",
    "data batch file corrupted",
    "database directory missing",
    "database not a database",
    "--checkpoints not a folder",
    "database of a newer ablate",
    "status, database of a newer ablate",
    "report, database of a newer ablate",
    "report --figure that does not exist",
]
GUARDED = {  # the file each case must leave as it was, besides the shared smoke database
    "database not a database": "notes.txt",
    "--checkpoints not a folder": "notes.txt",
    "database of a newer ablate": "newer.db",
    "status, database of a newer ablate": "newer.db",
    "report, database of a newer ablate": "newer.db",
}


def test_every_case_is_listed(tmp_path, smoke_db):
    assert sorted(_cases(tmp_path, smoke_db)) == sorted(CASES)


def _assert_refused(result_code: int, output: str, fragments: list[str]) -> None:
    assert result_code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in output


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, tmp_path, smoke_db):
    db = tmp_path / "results.db"
    shutil.copy(smoke_db, db)
    args, fragments = _cases(tmp_path, db)[case]
    guarded = [db] + ([tmp_path / GUARDED[case]] if case in GUARDED else [])
    before = [file_digest(p) for p in guarded]
    result = invoke(*args)
    _assert_refused(result.exit_code, result.output, fragments)
    assert [file_digest(p) for p in guarded] == before
    assert not (tmp_path / "no").exists() and not (tmp_path / "checkpoints").exists()


# ------------------------------------------------- a database that does not exist yet


NEW_DB_CASES = {  # arguments after `run smoke --db new.db`, and what the one line must name
    "--device unknown": (["--device", "tpu"], ["'tpu'", "accepted"]),
    "--per-gpu 0": (["--per-gpu", "0"], ["--per-gpu must be a positive integer"]),
    "--backend unknown": (["--backend", "slurm"], ["unknown backend 'slurm'"]),
    "--set unknown key": (["--set", "optimizer.lrr=1"], ["optimizer.lrr"]),
    "--checkpoints not a folder": (["--checkpoints", "notes.txt/ckpt"], ["notes.txt", "not a folder", "--checkpoints"]),
}


@pytest.mark.parametrize("case", NEW_DB_CASES)
def test_bad_input_for_a_new_database_creates_nothing(case, tmp_path):
    # The local backend: no Ray needed. Nothing may be left behind, not even an empty database.
    (tmp_path / "notes.txt").write_text("my notes\n")
    args, fragments = NEW_DB_CASES[case]
    result = invoke("run", "smoke", "--db", "new.db", "--device", "cpu", *args)
    _assert_refused(result.exit_code, result.output, fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_run_study_refuses_a_bad_checkpoint_folder_before_creating_the_database(tmp_path):
    from ablate.config import ConfigError
    from ablate.run import run_study

    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(ConfigError, match="not a folder"):
        run_study("smoke", db=str(tmp_path / "new.db"), device="cpu", checkpoints=tmp_path / "notes.txt" / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------ read-only places


def _as_someone_else(args: list[str]) -> tuple[int, str]:
    """Run the command as a user who may not write the directory (root may write anything,
    so as root the command runs in a child process that drops to `nobody`)."""
    if os.geteuid() != 0:
        result = invoke(*args)
        return result.exit_code, result.output
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            # torch's OpenMP pool does not survive a fork of a process that used it: one
            # thread, or the child can hang in its first parallel op (the plan reads data).
            torch.set_num_threads(1)
            os.chdir("/")  # the test's own directory is root's alone
            os.setgid(65534)
            os.setuid(65534)
            result = invoke(*args)
            os.write(write, json.dumps([result.exit_code, result.output]).encode())
        except BaseException as e:  # noqa: BLE001 - reported to the parent as the output
            os.write(write, json.dumps([-1, repr(e)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    code, output = json.loads(data)
    return code, output


@pytest.fixture
def read_only_dir():
    """A directory its user (or `nobody`, when the tests run as root) can read, not write."""
    path = Path(tempfile.mkdtemp(prefix="ablate-ro-"))
    yield path
    path.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("existing", [True, False], ids=["existing database", "new database"])
def test_a_database_in_a_read_only_directory_is_refused(existing, read_only_dir, smoke_db):
    db = read_only_dir / "results.db"
    if existing:
        shutil.copy(smoke_db, db)
        db.chmod(0o666)  # the file itself is writable: only the directory is not
    read_only_dir.chmod(0o555 if os.geteuid() != 0 else 0o755)
    before = file_digest(db)
    code, output = _as_someone_else(["run", "smoke", "--device", "cpu", "--db", f"sqlite:///{db}"])
    _assert_refused(code, output, [str(read_only_dir), "read-only"])
    assert file_digest(db) == before
    assert sorted(p.name for p in read_only_dir.iterdir()) == (["results.db"] if existing else [])
