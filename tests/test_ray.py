"""``--backend ray``: grid points as Ray tasks on a local two-CPU Ray instance.

The runner stays the only writer of the database, so the checks are the local backend's:
the same numbers for the same seeds, every point complete exactly once when a worker is
killed mid-point, and a second run that trains nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ablate import results
from ablate.cli import app
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.store import Store
from tests.conftest import file_digest

ray = pytest.importorskip("ray")

# What differs between two runs of the same point by design: how fast it went.
TIMINGS = ["epoch_time", "images_per_s"]


def test_bad_ray_inputs_are_one_line_errors_that_write_nothing(tmp_path):
    cli = CliRunner()
    for args, message in [
        (["--backend", "slurm"], "unknown backend 'slurm'"),
        (["--backend", "ray", "--device", "cuda:0"], "accepted: auto, cpu, cuda"),
        (["--per-gpu", "0"], "--per-gpu must be a positive integer"),
    ]:
        result = cli.invoke(app, ["run", "smoke", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results.db").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"])
def test_an_address_that_answers_nothing_is_one_line_and_writes_nothing(tmp_path, address):
    assert not ray.is_initialized()  # this file's first tests: a joined process would not connect again
    Store.open(f"sqlite:///{tmp_path / 'results.db'}").close()
    before = file_digest(tmp_path / "results.db")
    result = CliRunner().invoke(app, ["run", "smoke", "--backend", "ray", "--address", address])
    assert result.exit_code == 2, result.output
    assert "--address" in result.output and len(result.output.strip().splitlines()) == 1
    assert file_digest(tmp_path / "results.db") == before


def test_without_ray_the_backend_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(app, ["run", "smoke", "--backend", "ray"])
    assert result.exit_code == 2
    assert 'pip install "ablate[ray]"' in result.output


@pytest.fixture(scope="module")
def ray_cluster():
    """One local instance for the module: starting Ray costs seconds. The runner finds it
    running and leaves it up; a Ray task gets one CPU, so one torch thread."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    """The local backend with the thread count of a one-CPU Ray task: on the CPU, float sums
    split over a different number of threads differ in the last bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def curves(db: str, study: str):
    m = results.metrics(db=db, study=study)
    m = m[~m["name"].isin(TIMINGS)]
    return m.sort_values(["label", "seed", "step", "name"])[["label", "seed", "step", "name", "value"]].reset_index(drop=True)


def finals(db: str, study: str):
    r = results.runs(db=db, study=study)
    return r.sort_values(["label", "seed"])[["label", "seed", "status", "test_acc", "test_loss", "train_loss"]].reset_index(drop=True)


def test_smoke_on_ray_matches_the_local_backend(ray_cluster, one_thread, tmp_path):
    on_ray, local = f"sqlite:///{tmp_path / 'ray.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    small = ["model.width=8"]
    summary = run_study("smoke", db=on_ray, reporter=QuietReporter(lambda _: None), sets=small, backend="ray",
                        device="cpu")
    assert summary.ok and summary.counts == {"complete": 4}
    run_study("smoke", db=local, reporter=QuietReporter(lambda _: None), sets=small, device="cpu")
    assert finals(on_ray, "smoke").equals(finals(local, "smoke"))
    assert curves(on_ray, "smoke").equals(curves(local, "smoke"))
    store = Store.open(on_ray, create=False)
    try:
        assert {r["device"] for r in store.runs("smoke")} == {"ray:cpu"}
    finally:
        store.close()


def test_ray_tasks_train_fused_groups_as_the_local_backend_does(ray_cluster, one_thread, tmp_path):
    on_ray, local = f"sqlite:///{tmp_path / 'ray.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    options = dict(sets=["model.width=8", "train_subset=256"], epochs=1, seeds=2, fuse=2, device="cpu")
    summary = run_study("smoke", db=on_ray, reporter=QuietReporter(lambda _: None), backend="ray", **options)
    assert summary.ok and summary.counts == {"complete": 8}
    run_study("smoke", db=local, reporter=QuietReporter(lambda _: None), **options)
    assert curves(on_ray, "smoke").equals(curves(local, "smoke"))  # same groups, same numbers
    store = Store.open(on_ray, create=False)
    try:
        assert all("trained fused" in r["notes"] for r in store.runs("smoke"))
    finally:
        store.close()


def test_the_cli_runs_on_ray_and_a_second_run_trains_nothing(ray_cluster):
    cli = CliRunner()
    first = cli.invoke(app, ["run", "smoke", "--backend", "ray", "--set", "model.width=8"])
    assert first.exit_code == 0, first.output
    assert "smoke: 4 trained (4 complete), 0 already done" in first.output
    again = cli.invoke(app, ["run", "smoke", "--backend", "ray", "--set", "model.width=8"])
    assert again.exit_code == 0, again.output
    assert "smoke: 0 trained (none), 4 already done" in again.output


LONG_STUDY = """
description = "two points long enough to kill a worker in the middle of one"
seeds = 1
[base]
epochs = 4
batch_size = 64
data = { dataset = "synthetic" }
model = { name = "plain_cnn", width = 8, depth = 2 }
optimizer = { name = "sgd", lr = 0.05 }
[axes]
"model.activation" = ["relu", "gelu"]
"""


def _ray_task_pids() -> list[int]:
    """Processes running our task: Ray titles a worker after the task it runs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::train_point"):
            pids.append(int(entry.name))
    return pids


def _epochs_recorded(db: str) -> int:
    store = Store.open(db, create=False)
    try:
        return max((r["epochs_done"] or 0 for r in store.runs("long")), default=0)
    finally:
        store.close()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's workers through /proc")
def test_a_worker_killed_mid_point_still_ends_with_every_point_complete_once(ray_cluster, one_thread, tmp_path):
    study = tmp_path / "long.toml"
    study.write_text(LONG_STUDY)
    db, reference = f"sqlite:///{tmp_path / 'ray.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    said: list[str] = []
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", run_study(
        str(study), db=db, reporter=QuietReporter(said.append), backend="ray", device="cpu")))
    runner.start()
    deadline = time.monotonic() + 120
    while (not Path(tmp_path / "ray.db").exists() or _epochs_recorded(db) < 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = _ray_task_pids()
    assert killed, "no Ray task running after the first epoch"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    runner.join(timeout=300)
    assert not runner.is_alive()
    summary = outcome["summary"]
    assert summary.ok and summary.counts == {"complete": 2}, said
    assert any("resuming from epoch" in line for line in said), said  # Ray's retry found the checkpoint

    # Resumed from the checkpoint, each killed point ends with the numbers of a run that was
    # never stopped: nothing counted twice, nothing missing.
    run_study(str(study), db=reference, reporter=QuietReporter(lambda _: None), device="cpu")
    assert finals(db, "long").equals(finals(reference, "long"))
    assert curves(db, "long").equals(curves(reference, "long"))
    again = run_study(str(study), db=db, reporter=QuietReporter(lambda _: None), backend="ray", device="cpu")
    assert again.counts == {} and again.skipped == 2
