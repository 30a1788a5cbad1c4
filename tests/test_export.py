"""``ablate export`` and ``results.runs`` / ``results.metrics``: one table, three formats."""

import importlib.abc
import io
import json
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from ablate import results
from ablate.cli import app
from tests.test_compare import fill

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def filled(store, db_url):
    cfg = {"model": {"name": "plain_cnn", "depth": 1, "kernel_size": [3, 5]}, "optimizer": {"lr": 0.05}}
    deeper = {**cfg, "model": {**cfg["model"], "depth": 2}}
    fill(store, "depth", {"model.depth": [1, 2]}, [(cfg, 0, 0.61), (cfg, 1, 0.63), (deeper, 0, 0.7)])
    fill(store, "other", {}, [(cfg, 0, 0.5)])
    return db_url


def read(path, fmt):
    if fmt == "json":
        return pd.DataFrame(json.loads(path.read_text()))
    return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)


def test_runs_have_dotted_config_columns_and_fractions(filled):
    runs = results.runs(filled, study="depth")
    assert len(runs) == 3 and set(runs["study"]) == {"depth"}
    assert {
        "run_id",
        "seed",
        "status",
        "test_acc",
        "test_loss",
        "model.depth",
        "model.kernel_size.1",
        "optimizer.lr",
    } <= set(runs.columns)
    assert sorted(runs["test_acc"]) == [0.61, 0.63, 0.7] and set(runs["status"]) == {"complete"}
    assert len(results.runs(filled)) == 4


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_each_format_round_trips_with_the_columns_of_results_runs(filled, tmp_path, fmt):
    result = invoke("export", "depth", "--format", fmt, "--db", filled)
    assert result.exit_code == 0, result.output
    path = tmp_path / f"depth.{fmt}"  # the default name, in the working directory
    assert f"3 runs -> depth.{fmt}" in result.stdout
    back = read(path, fmt)
    expected = results.runs(filled, study="depth")
    assert list(back.columns) == list(expected.columns)
    assert list(back["model.depth"]) == [1, 1, 2] and list(back["test_acc"]) == [0.61, 0.63, 0.7]
    assert list(back["run_id"]) == list(expected["run_id"])
    assert back["error"].isna().all()  # missing stays missing: empty in csv, null in json, None in parquet


def test_json_is_records_with_null(filled, tmp_path):
    assert invoke("export", "depth", "--format", "json", "--out", tmp_path / "r.json", "--db", filled).exit_code == 0
    records = json.loads((tmp_path / "r.json").read_text())
    assert isinstance(records, list) and records[0]["error"] is None and records[0]["model.depth"] == 1


def test_out_dash_writes_to_standard_output(filled):
    result = invoke("export", "depth", "--out", "-", "--db", filled)
    assert result.exit_code == 0
    back = pd.read_csv(io.StringIO(result.stdout))
    assert len(back) == 3 and list(back.columns) == list(results.runs(filled, study="depth").columns)
    binary = invoke("export", "--format", "parquet", "--out", "-", "--db", filled)
    assert len(pd.read_parquet(io.BytesIO(binary.stdout_bytes))) == 4


def test_metrics_is_the_long_table_with_each_runs_identity(filled, tmp_path):
    result = invoke("export", "depth", "--metrics", "--db", filled)
    assert result.exit_code == 0, result.output
    back = pd.read_csv(tmp_path / "depth-metrics.csv")
    assert list(back.columns) == results.LONG_METRIC_COLUMNS
    assert len(back) == 3 * 2 and set(back["name"]) == {"test_acc", "train_loss"}
    assert set(back["study"]) == {"depth"} and set(back["seed"]) == {0, 1} and back["label"].notna().all()
    frame = results.metrics(filled, study="depth", names=["test_acc"])
    assert list(frame.columns) == results.LONG_METRIC_COLUMNS and list(frame["value"]) == [0.61, 0.63, 0.7]
    assert results.metrics(filled, study="depth", names="test_acc").equals(frame)


def test_every_run_without_a_study(filled, tmp_path):
    assert invoke("export", "--db", filled).exit_code == 0
    assert set(pd.read_csv(tmp_path / "runs.csv")["study"]) == {"depth", "other"}
    assert invoke("export", "--metrics", "--db", filled).exit_code == 0
    assert (tmp_path / "metrics.csv").exists()


def _one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr


def test_unknown_study_lists_the_studies_and_writes_nothing(filled, tmp_path):
    _one_line_error(invoke("export", "dept", "--db", filled), "unknown study 'dept'; studies in")
    assert "depth, other" in invoke("export", "dept", "--db", filled).stderr
    assert not (tmp_path / "dept.csv").exists()
    with pytest.raises(results.UnknownStudy):
        results.runs(filled, study="dept")


def test_missing_or_empty_database_is_refused(tmp_path):
    # a missing file opens as an empty database (status and report show "no runs"); export says so
    _one_line_error(invoke("export", "--db", tmp_path / "none.db"), "no runs in sqlite:///")
    _one_line_error(invoke("export", "depth", "--db", tmp_path / "none.db"), "none.db holds no studies yet")
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "runs.csv").exists()


def test_parquet_without_pyarrow_names_the_extra(filled, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ModuleNotFoundError
    _one_line_error(invoke("export", "depth", "--format", "parquet", "--db", filled), 'pip install -e ".[parquet]"')
    assert not (tmp_path / "depth.parquet").exists()


def test_parquet_with_a_pyarrow_that_fails_to_import_says_why(filled, tmp_path, monkeypatch):
    # e.g. a pyarrow built for NumPy 2 beside NumPy 1: installed, so "install it" would mislead
    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pyarrow":
                raise ImportError("pyarrow requires NumPy 2.0 or newer, found 1.24.4")

    monkeypatch.delitem(sys.modules, "pyarrow", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    result = invoke("export", "depth", "--format", "parquet", "--db", filled)
    _one_line_error(result, "pyarrow is installed but does not import: pyarrow requires NumPy 2.0")
    assert "pip install" not in result.output
    assert not (tmp_path / "depth.parquet").exists()


def test_out_in_a_missing_directory(filled, tmp_path):
    _one_line_error(invoke("export", "depth", "--out", tmp_path / "no" / "x.csv", "--db", filled), "does not exist")
