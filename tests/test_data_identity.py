"""The data is part of a run's identity: a fingerprint of the decoded arrays, not of a path."""

import json
import shutil

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ablate import data
from ablate.cli import app
from ablate.task import Task
from ablate.worker import worker_loop
from tests.test_data import write_batches, write_folders

runner = CliRunner()
# A one-point study on CIFAR-10 files: fast on the tiny batches write_batches makes.
STUDY = """
description = "one point"
[base]
epochs = 1
batch_size = 4
model = { name = "plain_cnn", depth = 1, width = 4 }
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_the_fingerprint_is_of_the_arrays_not_the_path(tmp_path):
    write_batches(tmp_path / "a", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    write_batches(tmp_path / "c", seed=2)
    a, b, c = (data.load(tmp_path / p) for p in ("a", "elsewhere/b", "c"))
    assert data.fingerprint(a) == data.fingerprint(b) != data.fingerprint(c)
    assert len(data.fingerprint(a)) == 16
    a.test_y[0] = (a.test_y[0] + 1) % 3  # one label of the test set is another data set
    a.fingerprint = None
    assert data.fingerprint(a) != data.fingerprint(b)
    moved = b.to("cpu")
    assert moved.fingerprint == data.fingerprint(b)  # carried, not recomputed


def test_names_say_what_the_data_is(tmp_path):
    write_batches(tmp_path / "mycopy", seed=1)
    ds = data.load(tmp_path / "mycopy")
    # Named for what it is: the layout, classes, size and images, never "CIFAR-10" on its say-so.
    assert data.identify(tmp_path / "mycopy", ds).name == "python batches 'mycopy': 3 classes, 32x32, 20 / 4 images"
    assert data.identify("synthetic", data.synthetic()).name == "synthetic"
    data.KNOWN[data.fingerprint(ds)] = "a copy this test knows"
    try:
        assert data.identify(tmp_path / "mycopy", ds).name == "a copy this test knows"
    finally:
        del data.KNOWN[data.fingerprint(ds)]


def test_runs_on_two_data_sets_are_two_points_and_one_copy_anywhere_is_one(tmp_path):
    (tmp_path / "one.toml").write_text(STUDY)
    write_batches(tmp_path / "a", seed=1)
    write_batches(tmp_path / "c", seed=2)
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    db = tmp_path / "r.db"
    for source, trained in (("a", 1), ("c", 1), ("moved", 0), ("a", 0)):
        result = invoke("run", tmp_path / "one.toml", "--db", db, "--data", tmp_path / source, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert f"one: {trained} trained" in result.output, (source, result.output)
    status = json.loads(invoke("status", "one", "--db", db, "--json").output)
    runs = status["studies"][0]["runs"]
    assert len(runs) == 2 and runs[0]["config_hash"] == runs[1]["config_hash"]
    variants = status["studies"][0]["variants"]
    assert len(variants) == 2 and all("python batches" in v["data"] for v in variants)
    assert {v["data_fp"] for v in variants} == {data.fingerprint(data.load(tmp_path / s)) for s in "ac"}


def test_an_image_edited_in_place_is_new_data_and_the_run_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "one.toml").write_text(STUDY)
    write_folders(tmp_path / "small")
    db = tmp_path / "r.db"
    args = ("run", tmp_path / "one.toml", "--db", db, "--data", tmp_path / "small", "--device", "cpu")
    assert "one: 1 trained" in invoke(*args).output
    image = tmp_path / "small" / "train" / "ant" / "00.png"
    Image.fromarray(255 - np.asarray(Image.open(image).convert("RGB"))).save(image)  # same path, same count
    planned = invoke(*args, "--seeds", 2, "--dry-run")
    assert f"data in {tmp_path / 'small'} changed since this study's last run on it: new fingerprint" in planned.output
    result = invoke(*args, "--seeds", 2)
    assert "changed since this study's last run on it" in result.output
    assert "one: 2 trained" in result.output and "0 already done" in result.output, result.output
    variants = json.loads(invoke("status", "one", "--db", db, "--json").output)["studies"][0]["variants"]
    assert len({v["data_fp"] for v in variants}) == 2
    assert "changed since" not in invoke(*args, "--seeds", 2).output  # said once: the last runs are on it now


def test_a_worker_refuses_data_other_than_the_planned(tmp_path):
    """A Ray worker reads its own copy at the --data path: it must be the planned one."""
    events, tasks = [], [Task(1, 1, {"epochs": 1, "data": {"dataset": "synthetic"}}, "p", data_fp="0" * 16), None]

    class Box:
        value = 0

    worker_loop(
        0,
        "cpu",
        None,
        type("Q", (), {"get": lambda self: tasks.pop(0)})(),
        type("E", (), {"put": lambda self, e: events.append(e)})(),
        Box(),
        Box(),
        preloaded={"synthetic": data.synthetic(64, 16)},
    )
    (failed,) = [e for e in events if e[0] == "failed"]
    assert "is not the data the run was planned on (0000000000000000)" in failed[3]
    assert not any(e[0] in ("epoch", "done") for e in events)
