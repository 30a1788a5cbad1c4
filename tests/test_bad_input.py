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
from ablate.config import ConfigError, RunConfig, from_dict, set_key, to_dict
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
        return conn.execute("SELECT version FROM schema_version").fetchone()[0], conn.execute(
            "PRAGMA journal_mode"
        ).fetchone()[0]


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad-input") / "smoke.db"
    result = invoke(
        "run",
        "smoke",
        "--db",
        path,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--set",
        "train_subset=64",
        "--set",
        "model.width=4",
    )
    assert result.exit_code == 0, result.output
    return path


def write_batches(root: Path, labels=None, n: int = 20) -> Path:
    """A tiny cifar-10-batches-py/ folder; ``labels`` replaces every batch's labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)) if labels is None else labels,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)
    )
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
    ("optimizer.lr", "nan"),
    ("optimizer.momentum", "nan"),
    ("optimizer.weight_decay", "nan"),
    ("loss.label_smoothing", "nan"),
    ("data.aug.jitter", "nan"),
    ("data.aug.rotate", "nan"),
    ("schedule.gamma", "nan"),
    ("schedule.peak_at", "nan"),
    ("averaging.decay", "nan"),
    ("optimizer.betas", "[nan, nan]"),
    ("schedule.warmup_epochs", "inf"),
    ("optimizer.weight_decay", "-inf"),
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
    assert_refused(
        invoke("run", "smoke", "--db", db, "--set", "optimizer.lr=nan"), "optimizer.lr must be a finite number"
    )
    assert file_digest(db) == before


@pytest.mark.parametrize(
    "value, fragment", [("0", "model.width must be >= 1, got 0"), ("-3", "model.width must be >= 1, got -3")]
)
def test_model_arguments_are_range_checked(value, fragment, smoke_db, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    before = file_digest(db)
    assert_refused(invoke("run", "smoke", "--db", db, "--set", f"model.width={value}"), fragment)
    assert file_digest(db) == before


@pytest.mark.parametrize(
    "model, key, value",
    [
        ("plain_cnn", "dropout", 1.0),
        ("plain_cnn", "kernel_size", [3, 0]),
        ("plain_cnn", "channels", [8, -1, 8]),
        ("densenet", "compression", 0.0),
        ("speednet", "whiten_eps", float("nan")),
        ("resnet", "stages", 0),
    ],
)
def test_every_model_argument_has_a_range(model, key, value):
    from ablate.models import resolve_args

    with pytest.raises(ConfigError, match=f"model.{key}"):
        resolve_args(model, {key: value})


def test_study_file_with_nan_is_refused():
    with pytest.raises(StudyError, match="optimizer.lr must be a finite number"):
        parse("[base]\noptimizer = { lr = nan }\n")


# ----------------------------------------------------------- 3: grids too large to hold


def _huge_study(folder: Path, seeds: int = 1) -> Path:
    """10^6 grid points: two axes of 1,000 learning rates and 1,000 weight decays."""
    folder.mkdir(exist_ok=True)
    lrs = ", ".join(f"{0.001 * (i + 1):.3f}" for i in range(1000))
    wds = ", ".join(f"{1e-6 * (i + 1):.6g}" for i in range(1000))
    path = folder / "huge.toml"
    path.write_text(
        f"description = 'huge'\nseeds = {seeds}\n[base]\nepochs = 1\ndata = {{ dataset = 'synthetic' }}\n"
        f"[axes]\n'optimizer.lr' = [{lrs}]\n'optimizer.weight_decay' = [{wds}]\n"
    )
    return path


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    _huge_study(tmp_path / "studies")
    result = invoke("run", "huge", "--db", tmp_path / "r.db", "--dry-run")
    assert_refused(result, "1,000,000", "more than the limit of 10,000", "--max-points")
    assert not (tmp_path / "r.db").exists()


def test_a_billion_seeds_is_refused(smoke_db, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    before = file_digest(db)
    assert_refused(invoke("run", "smoke", "--db", db, "--seeds", "1000000000"), "4,000,000,000", "--max-points")
    path = tmp_path / "many.toml"
    path.write_text(
        (ASSETS.parent.parent / "studies" / "smoke.toml").read_text().replace("seeds = 1", "seeds = 1000000000")
    )
    assert_refused(invoke("run", path, "--db", db), "4,000,000,000", "--max-points")
    assert file_digest(db) == before


def test_max_points_raises_the_limit(tmp_path):
    result = invoke("run", "smoke", "--db", tmp_path / "r.db", "--seeds", "3", "--max-points", "11", "--dry-run")
    assert_refused(result, "12 runs", "limit of 11")
    result = invoke("run", "smoke", "--db", tmp_path / "r.db", "--seeds", "3", "--max-points", "12", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "12 points on synthetic" in result.output


def test_listing_studies_never_expands_a_grid(tmp_path, monkeypatch):
    import ablate.studies

    _huge_study(tmp_path / "studies", seeds=1000000000)

    def refuse(*args, **kwargs):
        raise AssertionError("a listing expanded a grid")

    monkeypatch.setattr(ablate.studies, "expand", refuse)
    result = invoke("studies", "--json")
    assert result.exit_code == 0, result.output
    assert '"points": 1000000' in result.output
    for args in (["run", "--help"], ["run", "huge", "--help"]):
        result = invoke(*args)
        assert result.exit_code == 0 and "huge" in result.output, result.output


def test_a_bad_axis_value_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("description = 'x'\n[base]\nepochs = 1\n[axes]\n'optimizer.lr' = [0.1, -1.0]\n")
    assert_refused(
        invoke("run", path, "--db", tmp_path / "r.db", "--dry-run"),
        "bad.toml (line 5)",
        "optimizer.lr must be >0",
        "got -1.0",
    )


# ------------------------------------------------ 9: study files that are not UTF-8


def test_a_study_file_that_is_not_utf8_is_one_line_and_breaks_no_other(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "latin.toml").write_bytes("description = 'caf\xe9'\n".encode("latin-1"))
    assert_refused(invoke("run", "latin", "--db", tmp_path / "r.db"), "latin.toml", "not UTF-8")
    result = invoke("run", "--help")
    assert result.exit_code == 0 and "smoke" in result.output and "latin" in result.output, result.output
    result = invoke("studies")
    assert result.exit_code == 0 and "smoke" in result.output, result.output
    assert "latin.toml" in result.output and "not UTF-8" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------- 4: a study file taking over another's name

SMOKE = (Path(__file__).parent.parent / "studies" / "smoke.toml").read_text()
FAST = ("--device", "cpu", "--epochs", "1", "--set", "train_subset=64", "--set", "model.width=4")


def test_a_file_that_takes_over_a_study_name_is_refused(smoke_db, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    x = tmp_path / "x.toml"
    x.write_text('name = "smoke"\n' + SMOKE.replace('"model.depth" = [1, 2]', '"model.depth" = [3]'))
    depth = tmp_path / "sub" / "smoke.toml"  # a file named after the study, passed by path
    depth.parent.mkdir()
    depth.write_text(SMOKE.replace("width = 16", "width = 8"))
    before = file_digest(db)
    for path in (x, depth):
        line = assert_refused(
            invoke("run", path, "--db", db, *FAST), "study 'smoke'", "--replace-study", "another name"
        )
        assert path.name in line
        assert file_digest(db) == before
    result = invoke("compare", "smoke", "--by", "model.depth", "--db", db)
    assert result.exit_code == 0, result.output


def test_replace_study_makes_the_file_the_study_definition(smoke_db, tmp_path):
    from ablate.store import Store

    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    x = tmp_path / "x.toml"
    x.write_text('name = "smoke"\n' + SMOKE.replace('"model.depth" = [1, 2]', '"model.depth" = [3]'))
    result = invoke("run", x, "--db", db, "--replace-study", *FAST)
    assert result.exit_code == 0, result.output
    store = Store.open(str(db), create=False)
    try:
        (smoke,) = [s for s in store.studies() if s["name"] == "smoke"]
        assert smoke["spec"]["axes"]["model.depth"] == [3]
        assert len(store.runs("smoke")) == 6  # the four before stay, as another variant
    finally:
        store.close()


def test_a_new_description_or_claim_is_not_another_study(smoke_db, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(smoke_db, db)
    edited = tmp_path / "smoke.toml"
    edited.write_text(
        SMOKE.replace("CI smoke test", "The smoke test") + '\n[[claims]]\nsection = "x"\ntext = "deeper is better"\n'
        'check = "best"\naxis = "model.depth"\nvalue = 2\n'
    )
    result = invoke("run", edited, "--db", db, *FAST)
    assert result.exit_code == 0, result.output


def test_builtin_smoke_runs_against_a_database_from_before_the_claims(tmp_path):
    db = tmp_path / "v2.db"
    shutil.copy(ASSETS / "results-v2.db", db)
    result = invoke("run", "smoke", "--db", db, "--dry-run")
    assert result.exit_code == 0, result.output
    result = invoke("run", "smoke", "--db", db, *FAST)
    assert result.exit_code == 0, result.output


# --------------------------------------------------- 9: data that used to give tracebacks


def test_a_label_too_large_for_an_integer(tmp_path):
    write_batches(tmp_path / "big", labels=[10**30] * 20)
    assert_refused(
        invoke("run", "depth", "--db", tmp_path / "r.db", "--data", tmp_path / "big", "--dry-run"),
        "data_batch_1",
        "labels",
    )
    assert not (tmp_path / "r.db").exists()


def test_a_small_pickle_that_would_expand_to_gigabytes(tmp_path):
    root = write_batches(tmp_path / "bomb")
    row = [0] * 3072
    bomb = {b"data": [row] * 300_000, b"labels": [0] * 300_000}  # one row, referenced 300,000 times: 0.9 GB
    path = root / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps(bomb, protocol=2))
    assert path.stat().st_size < 2_000_000
    line = assert_refused(
        invoke("run", "depth", "--db", tmp_path / "r.db", "--data", root, "--dry-run"), "data_batch_1"
    )
    assert "300,000" in line


def test_a_data_path_of_an_unknown_user(tmp_path):
    assert_refused(
        invoke("run", "depth", "--db", tmp_path / "r.db", "--data", "~nosuchuser14/x", "--dry-run"),
        "~nosuchuser14/x",
        "no user",
    )


def test_a_bad_override_is_not_blamed_on_the_study_file(tmp_path):
    line = assert_refused(
        invoke("run", "smoke", "--db", tmp_path / "r.db", "--set", "model.width=0", "--dry-run"),
        "model.width must be >= 1, got 0",
    )
    assert "smoke.toml" not in line
