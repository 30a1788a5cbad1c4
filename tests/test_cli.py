"""Every command through typer's CliRunner: the smoke study end to end, and bad input."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from tests.conftest import file_digest

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def smoke(db_url, *extra):
    return invoke("run", "smoke", "--db", db_url, "--device", "cpu", *extra)


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory):
    """One smoke study shared by the read-only tests below."""
    url = f"sqlite:///{tmp_path_factory.mktemp('smoke') / 'smoke.db'}"
    result = smoke(url)
    assert result.exit_code == 0, result.output
    return url


def test_run_smoke_records_every_point(smoke_db):
    status = json.loads(invoke("status", "--db", smoke_db, "--json").output)
    (study,) = status["studies"]
    assert study["name"] == "smoke" and study["counts"]["complete"] == 4
    for run in study["runs"]:
        assert run["status"] == "complete" and run["epochs_done"] == 2
        assert 0.0 <= run["test_acc"] <= 1.0 and run["config"]["data"]["dataset"] == "synthetic"
        assert {"id", "seed", "config_hash", "config"} <= set(run)


def test_rerun_trains_nothing(smoke_db):
    result = smoke(smoke_db)
    assert result.exit_code == 0
    assert "0 trained" in result.output and "4 already done" in result.output


def test_dry_run_shows_points_and_writes_nothing(smoke_db, tmp_path):
    result = invoke("run", "smoke", "--db", smoke_db, "--dry-run", "--seeds", "2")
    assert result.exit_code == 0
    assert "8 points on synthetic: 4 done, 4 to train" in result.output
    fresh = tmp_path / "fresh.db"
    assert invoke("run", "smoke", "--db", f"sqlite:///{fresh}", "--dry-run").exit_code == 0
    assert not fresh.exists()


def test_report_writes_figure_numbers_and_readme(smoke_db, tmp_path):
    out = tmp_path / "rep"
    result = invoke("report", "--db", smoke_db, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "figure-00.png").stat().st_size > 1000
    assert (out / "figure-00.csv").read_text().count("\n") >= 4
    readme = (out / "README.md").read_text()
    assert "Figure 0" in readme and "95% CI" in readme
    # Studies without runs name the command that would fill them.
    assert "ablate run depth" in readme and "ablate run depth" in result.output
    assert not (out / "figure-04.png").exists()


def test_report_one_figure(smoke_db, tmp_path):
    out = tmp_path / "one"
    assert invoke("report", "--db", smoke_db, "--out", out, "--figure", "0").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "figure-00.csv", "figure-00.png"]


def test_status_table_and_filter(smoke_db):
    result = invoke("status", "--db", smoke_db)
    assert result.exit_code == 0 and "smoke" in result.output
    unknown = invoke("status", "nothing", "--db", smoke_db, "--json")  # as export and compare: exit 2
    assert unknown.exit_code == 2 and unknown.output.startswith("error: unknown study 'nothing'")


def test_overrides_and_epochs_make_new_points(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    result = smoke(url, "--epochs", "1", "--set", "optimizer.lr=0.02", "--set", "train_subset=128")
    assert result.exit_code == 0, result.output
    runs = json.loads(invoke("status", "--db", url, "--json").output)["studies"][0]["runs"]
    assert all(r["epochs_done"] == 1 and r["config"]["optimizer"]["lr"] == 0.02 for r in runs)


def test_env_var_stands_for_db(tmp_path, monkeypatch, smoke_db):
    monkeypatch.setenv("ABLATE_DB", smoke_db)
    status = json.loads(invoke("status", "--json").output)
    assert status["studies"][0]["name"] == "smoke"


def test_a_failing_point_exits_1_and_the_others_complete(tmp_path, monkeypatch):
    import ablate.worker

    real = ablate.worker.train

    def flaky(cfg, *args, **kwargs):
        if cfg.model.args["depth"] == 2 and cfg.model.args["activation"] == "gelu":
            raise RuntimeError("boom")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(ablate.worker, "train", flaky)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    result = smoke(url, "--epochs", "1")
    assert result.exit_code == 1
    study = json.loads(invoke("status", "--db", url, "--json").output)["studies"][0]
    assert study["counts"]["complete"] == 3 and study["counts"]["failed"] == 1
    (failed,) = [r for r in study["runs"] if r["status"] == "failed"]
    assert "RuntimeError: boom" in failed["error"] and "test_cli.py" in failed["error"]


def test_studies_and_models_listings():
    studies = json.loads(invoke("studies", "--json").output)
    depth = next(s for s in studies if s["name"] == "depth")
    assert depth["axes"] == {"model.depth": list(range(1, 9))} and depth["points"] == 8 and depth["figures"] == [4, 5]
    assert "kernel" in invoke("studies").output
    models = json.loads(invoke("models", "--json").output)
    assert {"name", "params"} <= set(models[0]) and "plain_cnn" in [m["name"] for m in models]


def test_run_help_lists_studies_and_study_help_shows_axes():
    listing = invoke("run", "--help").output
    for name in ("smoke", "depth", "kernel", "channels", "activation", "dropout"):
        assert name in listing
    help_ = invoke("run", "depth", "--help").output
    assert "model.depth" in help_ and "--seeds" in help_ and "--set" in help_


def test_a_long_axis_is_listed_by_its_ends_and_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    lrs = [round(0.001 * i, 3) for i in range(1, 1001)]
    (tmp_path / "studies" / "sweep.toml").write_text(
        f'description = "a long sweep"\n[base]\nmodel = {{ name = "plain_cnn" }}\n[axes]\n"optimizer.lr" = {lrs}\n'
    )
    listing = CliRunner().invoke(app, ["studies"], env={"COLUMNS": "250"}).output  # a table wide enough for the row
    for output in (listing, invoke("run", "sweep", "--help").output):
        (row,) = [line for line in output.splitlines() if "(1,000 values)" in line]
        assert "[0.001, 0.002, 0.003, ..., 0.999, 1.0]" in row and "0.5," not in row
    (sweep,) = [s for s in json.loads(invoke("studies", "--json").output) if s["name"] == "sweep"]
    assert sweep["axes"]["optimizer.lr"] == lrs  # the JSON keeps every value


def test_a_study_file_by_path(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(
        'description = "one point"\nfigures = []\n[base]\nepochs = 1\nbatch_size = 64\n'
        'train_subset = 128\ndata = { dataset = "synthetic" }\nmodel = { name = "plain_cnn", depth = 1, width = 4 }\n'
    )
    url = f"sqlite:///{tmp_path / 'p.db'}"
    result = invoke("run", path, "--db", url, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads(invoke("status", "--db", url, "--json").output)["studies"][0]["name"] == "tiny"


# ------------------------------------------------------------------------ bad input


def _bad_inputs(tmp_path):
    bad_study = tmp_path / "broken.toml"
    bad_study.write_text("description = 'x'\n[base]\noptimizer = { lrr = 0.1 }\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    return {
        "unknown study": (["run", "nosuch"], "unknown study 'nosuch'"),
        "invalid study file": (["run", bad_study], "line 3"),
        "unknown key": (["run", "smoke", "--set", "optimizer.lrr=1"], "optimizer.lrr"),
        "wrong type": (["run", "smoke", "--set", "epochs=many"], "epochs must be an integer"),
        "negative lr": (["run", "smoke", "--set", "optimizer.lr=-1"], "optimizer.lr must be >0"),
        "zero epochs": (["run", "smoke", "--epochs", "0"], "epochs must be >= 1"),
        "set without =": (["run", "smoke", "--set", "epochs"], "KEY=VALUE"),
        "missing data dir": (["run", "depth", "--data", tmp_path / "nope"], "nope"),
        "data dir without layout": (["run", "depth", "--data", empty], "no CIFAR-10 layout"),
        "bad device": (["run", "smoke", "--device", "tpu"], "unknown device 'tpu'"),
        "no cuda": (["run", "smoke", "--device", "cuda:7"], "cuda:7"),
        "figure 99": (["report", "--figure", "99"], "no figure 99"),
    }


BAD_CASES = [
    "unknown study",
    "invalid study file",
    "unknown key",
    "wrong type",
    "negative lr",
    "zero epochs",
    "set without =",
    "missing data dir",
    "data dir without layout",
    "bad device",
    "no cuda",
    "figure 99",
]


def test_every_bad_case_is_listed(tmp_path):
    assert sorted(_bad_inputs(tmp_path)) == sorted(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, smoke_db, tmp_path):
    args, fragment = _bad_inputs(tmp_path)[case]
    path = tmp_path / "existing.db"
    path.write_bytes(open(smoke_db.removeprefix("sqlite:///"), "rb").read())
    before = file_digest(path)
    result = invoke(*args, "--db", f"sqlite:///{path}")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert "Traceback" not in result.output
    assert file_digest(path) == before


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p / "no" / "dir" / "x.db", "does not exist"),
        (lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt", "not a SQLite database"),
    ],
)
def test_bad_database_is_refused(tmp_path, make, fragment):
    target = make(tmp_path)
    before = file_digest(target)
    result = invoke("run", "smoke", "--db", f"sqlite:///{target}")
    assert result.exit_code == 2 and fragment in result.output
    assert file_digest(target) == before


def test_a_newer_database_is_refused(tmp_path, smoke_db):
    path = tmp_path / "newer.db"
    path.write_bytes(open(smoke_db.removeprefix("sqlite:///"), "rb").read())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    before = file_digest(path)
    for args in (["status"], ["report"], ["run", "smoke"]):
        result = invoke(*args, "--db", f"sqlite:///{path}")
        assert result.exit_code == 2 and "newer than this ablate" in result.output
    assert file_digest(path) == before
