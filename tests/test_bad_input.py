"""Bad input found by an adversarial pass (issue 14): each is refused in one line with exit
code 2, before anything is written, and the database stays byte-for-byte as it was."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.config import ConfigError, from_dict, set_key, to_dict, RunConfig
from ablate.studies import StudyError, parse
from tests.conftest import file_digest

ASSETS = Path(__file__).parent / "assets"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_refused(result, *fragments: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def schema_and_journal(db: Path) -> tuple[int, str]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT version FROM schema_version").fetchone()[0], \
            conn.execute("PRAGMA journal_mode").fetchone()[0]


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad-input") / "smoke.db"
    result = invoke("run", "smoke", "--db", path, "--device", "cpu", "--epochs", "1", "--set", "train_subset=64",
                    "--set", "model.width=4")
    assert result.exit_code == 0, result.output
    return path


def write_batches(root: Path, labels=None, n: int = 20) -> Path:
    """A tiny cifar-10-batches-py/ folder; ``labels`` replaces every batch's labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n)) if labels is None else labels}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2))
    return root


# ------------------------------------------------- 1: every check before the first write


def test_a_bad_checkpoint_folder_leaves_an_old_database_unmigrated(tmp_path):
    db = tmp_path / "v1.db"
    shutil.copy(ASSETS / "results-v1.db", db)
    (tmp_path / "f").write_text("")
    before = file_digest(db)
    assert_refused(invoke("run", "smoke", "--db", db, "--checkpoints", tmp_path / "f" / "x"), "/f' is not a folder")
    assert file_digest(db) == before
    assert schema_and_journal(db) == (1, "delete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "v1.db"]


def test_data_that_fails_to_load_creates_no_database(tmp_path):
    write_batches(tmp_path / "d99", labels=[99] * 20)
    result = invoke("run", "depth", "--db", tmp_path / "new.db", "--data", tmp_path / "d99", "--epochs", "1")
    assert_refused(result, "labels outside 0..9")
    assert not (tmp_path / "new.db").exists()


# ---------------------------------------------------------------- 2: NaN and infinity

NON_FINITE = [
    ("optimizer.lr", "nan"), ("optimizer.momentum", "nan"), ("optimizer.weight_decay", "nan"),
    ("loss.label_smoothing", "nan"), ("data.aug.jitter", "nan"), ("data.aug.rotate", "nan"),
    ("schedule.gamma", "nan"), ("schedule.peak_at", "nan"), ("averaging.decay", "nan"),
    ("optimizer.betas", "[nan, nan]"), ("schedule.warmup_epochs", "inf"), ("optimizer.weight_decay", "-inf"),
    ("switch.optimizer.lr", "inf"),
]


@pytest.mark.parametrize("key, text", NON_FINITE)
def test_non_finite_numbers_are_refused(key, text):
    from ablate.config import parse_value

    with pytest.raises(ConfigError, match=rf"{key}(\.0)? must be a finite number"):
        from_dict(set_key(to_dict(RunConfig()), key, parse_value(text)))


def test_nan_on_the_command_line_records_nothing(smoke_db, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    before = file_digest(db)
    assert_refused(invoke("run", "smoke", "--db", db, "--set", "optimizer.lr=nan"), "optimizer.lr must be a finite number")
    assert file_digest(db) == before


@pytest.mark.parametrize("value, fragment", [("0", "model.width must be >= 1, got 0"), ("-3", "model.width must be >= 1, got -3")])
def test_model_arguments_are_range_checked(value, fragment, smoke_db, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    before = file_digest(db)
    assert_refused(invoke("run", "smoke", "--db", db, "--set", f"model.width={value}"), fragment)
    assert file_digest(db) == before


@pytest.mark.parametrize("model, key, value", [
    ("plain_cnn", "dropout", 1.0), ("plain_cnn", "kernel_size", [3, 0]), ("plain_cnn", "channels", [8, -1, 8]),
    ("densenet", "compression", 0.0), ("speednet", "whiten_eps", float("nan")), ("resnet", "stages", 0),
])
def test_every_model_argument_has_a_range(model, key, value):
    from ablate.models import resolve_args

    with pytest.raises(ConfigError, match=f"model.{key}"):
        resolve_args(model, {key: value})


def test_study_file_with_nan_is_refused():
    with pytest.raises(StudyError, match="optimizer.lr must be a finite number"):
        parse("[base]\noptimizer = { lr = nan }\n")
