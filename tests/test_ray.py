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
from typer.testing import CliRunner

from ablate import results
from ablate.cli import app
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.store import Store
from tests.conftest import file_digest
from tests.conftest import one_thread as single_thread

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


@pytest.fixture
def ray_not_joined():
    """Ray not joined in this process: a process already joined would not connect again,
    so the address under test would never be tried. An instance an earlier test started
    is shut down (``ray_cluster`` starts it again for a later test that needs it)."""
    if ray.is_initialized():
        ray.shutdown()
    yield


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"])
def test_an_address_that_answers_nothing_is_one_line_and_writes_nothing(tmp_path, address, ray_not_joined):
    Store.open(f"sqlite:///{tmp_path / 'results.db'}").close()
    before = file_digest(tmp_path / "results.db")
    result = CliRunner().invoke(app, ["run", "smoke", "--backend", "ray", "--address", address])
    assert result.exit_code == 2, result.output
    assert "--address" in result.output and len(result.output.strip().splitlines()) == 1
    assert file_digest(tmp_path / "results.db") == before


def test_a_cluster_that_accepts_and_never_answers_is_given_up_in_bounded_time(tmp_path, ray_not_joined):
    """ray.init retries such an address for minutes; the run gives up after --connect-timeout,
    in one line, before it creates the database."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel accepts; nobody ever reads or replies
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        result = CliRunner().invoke(
            app,
            [
                "run",
                "smoke",
                "--backend",
                "ray",
                "--address",
                address,
                "--connect-timeout",
                "2",
                "--db",
                tmp_path / "new.db",
            ],
        )
        took = time.monotonic() - began
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: --address {address}: no Ray cluster answered within 2 s (--connect-timeout to wait longer)"
    ]
    assert took < 60 and not (tmp_path / "new.db").exists()


def test_without_ray_the_backend_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(app, ["run", "smoke", "--backend", "ray"])
    assert result.exit_code == 2
    assert 'pip install "ablate[ray]"' in result.output


def _hold_after_epoch_1(hold: str):
    """A setup hook for each Ray worker: while the file ``hold`` exists, a task that has just
    reported its first epoch (its checkpoint is on disk by then) writes ``hold.PID`` and
    waits. A test can then kill it knowing it is alive and mid-point, with nothing racing it.
    A closure, so Ray ships it by value: the workers cannot import this test module."""

    def setup() -> None:
        import importlib.abc
        import importlib.util
        import os
        import sys
        import time

        def patch(ray_runner) -> None:
            put = ray_runner._HubEvents.put

            def put_then_hold(self, event: tuple) -> None:
                put(self, event)
                if event[0] == "epoch" and event[3] == 1 and os.path.exists(hold):
                    with open(f"{hold}.{os.getpid()}", "w"):
                        pass
                    while os.path.exists(hold):
                        time.sleep(0.05)

            ray_runner._HubEvents.put = put_then_hold

        class PatchOnImport(importlib.abc.MetaPathFinder):
            # Patched when the task imports it, not here: torch imported before Ray has set
            # the task's OMP_NUM_THREADS would take two threads, and other numbers.
            def find_spec(self, name, path, target=None):
                if name != "ablate.ray_runner":
                    return None
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(name)
                load = spec.loader.exec_module
                spec.loader.exec_module = lambda module: (load(module), patch(module))
                return spec

        sys.meta_path.insert(0, PatchOnImport())

    return setup


@pytest.fixture(scope="module")
def hold_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-hold") / "hold"


@pytest.fixture(scope="module", autouse=True)
def _ray_down_after_the_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_cluster(hold_file) -> Path:
    """A local two-CPU instance, started by the first test that needs it and kept for the
    next (starting Ray costs seconds). The runner finds it running and leaves it up; a Ray
    task gets one CPU, so one torch thread. ``address="local"`` always starts a new one:
    with no address Ray joins whatever /tmp/ray/ray_current_cluster names, a cluster that
    may have died long ago, or another user's. Yields the file that holds tasks after
    their first epoch (see ``_hold_after_epoch_1``)."""
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=80 * 2**20,
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": _hold_after_epoch_1(str(hold_file))},
        )
    yield hold_file


@pytest.fixture
def one_thread():
    """The local backend with the thread count of a one-CPU Ray task: on the CPU, float sums
    split over a different number of threads differ in the last bits."""
    with single_thread():
        yield


def curves(db: str, study: str):
    m = results.metrics(db=db, study=study)
    m = m[~m["name"].isin(TIMINGS)]
    return m.sort_values(["label", "seed", "step", "name"])[["label", "seed", "step", "name", "value"]].reset_index(
        drop=True
    )


def finals(db: str, study: str):
    r = results.runs(db=db, study=study)
    return r.sort_values(["label", "seed"])[
        ["label", "seed", "status", "test_acc", "test_loss", "train_loss"]
    ].reset_index(drop=True)


def test_smoke_on_ray_matches_the_local_backend(ray_cluster, one_thread, tmp_path):
    on_ray, local = f"sqlite:///{tmp_path / 'ray.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    small = ["model.width=8"]
    summary = run_study(
        "smoke", db=on_ray, reporter=QuietReporter(lambda _: None), sets=small, backend="ray", device="cpu"
    )
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
description = "two points, each killed after its first epoch"
seeds = 1
[base]
epochs = 3
batch_size = 64
data = { dataset = "synthetic" }
model = { name = "plain_cnn", width = 8, depth = 2 }
optimizer = { name = "sgd", lr = 0.05 }
[axes]
"model.activation" = ["relu", "gelu"]
"""


def _held_pids(hold: Path) -> list[int]:
    return [int(p.suffix[1:]) for p in hold.parent.glob(f"{hold.name}.*")]


def test_a_worker_killed_mid_point_still_ends_with_every_point_complete_once(ray_cluster, one_thread, tmp_path):
    hold = ray_cluster
    study = tmp_path / "long.toml"
    study.write_text(LONG_STUDY)
    db, reference = f"sqlite:///{tmp_path / 'ray.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    said: list[str] = []
    outcome: dict = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault(
            "summary", run_study(str(study), db=db, reporter=QuietReporter(said.append), backend="ray", device="cpu")
        )
    )
    hold.touch()
    try:
        runner.start()
        # Both points run at once (two CPUs) and each stops after its first epoch while
        # `hold` exists: both are alive, mid-point, when they are killed.
        deadline = time.monotonic() + 120
        while len(_held_pids(hold)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        held = _held_pids(hold)
        assert len(held) == 2, f"tasks held after their first epoch: {held}; {said}"
        for pid in held:
            os.kill(pid, signal.SIGKILL)
    finally:
        hold.unlink()
        for pid in _held_pids(hold):
            hold.with_name(f"{hold.name}.{pid}").unlink()
    runner.join(timeout=300)
    assert not runner.is_alive()
    summary = outcome["summary"]
    assert summary.ok and summary.counts == {"complete": 2}, said
    resumed = [line for line in said if "resuming from epoch 1" in line]
    assert len(resumed) == 2, said  # Ray's retry of each found its checkpoint

    # Resumed from the checkpoint, each killed point ends with the numbers of a run that was
    # never stopped: nothing counted twice, nothing missing.
    run_study(str(study), db=reference, reporter=QuietReporter(lambda _: None), device="cpu")
    assert finals(db, "long").equals(finals(reference, "long"))
    assert curves(db, "long").equals(curves(reference, "long"))
    again = run_study(str(study), db=db, reporter=QuietReporter(lambda _: None), backend="ray", device="cpu")
    assert again.counts == {} and again.skipped == 2


def test_a_cluster_recorded_on_this_machine_counts_only_while_it_answers(tmp_path, monkeypatch):
    """Ray's record of the local cluster outlives a cluster that died; ray.init() would then
    wait minutes on the dead address instead of starting a new instance."""
    import socket

    from ablate.ray_runner import _this_machines_cluster

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    assert _this_machines_cluster() is None  # nothing recorded
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        port = live.getsockname()[1]
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
        assert _this_machines_cluster() == f"127.0.0.1:{port}"
    assert _this_machines_cluster() is None  # the same record, nobody answering


def test_a_node_that_dies_mid_study_loses_nothing_and_the_study_ends_in_the_same_call(
    tmp_path, monkeypatch, ray_not_joined
):
    """A head and a worker node, one CPU each, all on 127.0.0.1: the worker node is removed
    while both points are mid-run. The coordinating actor lives on the driver's node, so
    Ray's retry of the lost point's task resumes it on the head, and the call ends with both
    points complete once."""
    import sqlite3

    from ray.cluster_utils import Cluster

    # Loopback only: Ray would otherwise give every node the machine's network address.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # for the nodes' and the probe's processes
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)  # read at import
    study = tmp_path / "long.toml"
    study.write_text(LONG_STUDY.replace("epochs = 3", "epochs = 5"))
    path = tmp_path / "ray.db"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert cluster.address.startswith("127.0.0.1:")
        said: list[str] = []
        outcome: dict = {}
        runner = threading.Thread(
            target=lambda: outcome.setdefault(
                "summary",
                run_study(
                    str(study),
                    db=f"sqlite:///{path}",
                    reporter=QuietReporter(said.append),
                    backend="ray",
                    device="cpu",
                    address=cluster.address,
                ),
            )
        )
        runner.start()
        deadline, removed = time.monotonic() + 240, False
        while runner.is_alive() and time.monotonic() < deadline and not removed:
            time.sleep(0.2)
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
                    rows = con.execute("select status, epochs_done from runs").fetchall()
            except sqlite3.Error:  # not created yet
                continue
            if any(epochs >= 2 for _, epochs in rows):
                assert [status for status, _ in rows] == ["running", "running"], rows  # one on each node
                cluster.remove_node(worker, allow_graceful=False)
                removed = True
        assert removed, said
        runner.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not runner.is_alive(), said
    finally:
        cluster.shutdown()
    summary = outcome["summary"]
    assert summary.ok and summary.counts == {"complete": 2}, said
    assert [line for line in said if "resuming from epoch" in line], said  # the lost point went on from its checkpoint
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        assert con.execute("select status, epochs_done from runs").fetchall() == [("complete", 5)] * 2


def test_ray_workers_get_the_plugin_files(ray_cluster, tmp_path):
    """The Ray task processes never imported the user's model: the runner ships its source."""
    from tests.test_plugins import ASSET, write_study

    (tmp_path / "raynet.py").write_text(ASSET.read_text().replace("def tinynet", "def raynet"))
    study = write_study(tmp_path, plugins_=("raynet.py",), model="raynet")
    db = f"sqlite:///{tmp_path / 'ray.db'}"
    summary = run_study(str(study), db=db, reporter=QuietReporter(lambda _: None), backend="ray", device="cpu")
    assert summary.ok and summary.counts == {"complete": 2}, summary.errors
    store = Store.open(db, create=False)
    try:
        assert {r["device"] for r in store.runs()} == {"ray:cpu"}
        assert all(r["code_version"].startswith("raynet.py:") for r in store.runs())
    finally:
        store.close()
