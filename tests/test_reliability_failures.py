"""Failures are results too: a point that raises, runs out of memory, diverges, or is
interrupted with Ctrl-C; checkpoints that are corrupt or hostile. In-process, through the CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ablate.scheduler
import ablate.worker
from ablate.cli import app
from ablate.store import Store
from ablate.train import RunResult

SETTINGS = ("--epochs", "2", "--set", "train_subset=256", "--set", "model.width=8")
COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
real_train = ablate.worker.train


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def smoke(db, *extra):
    return invoke("run", "smoke", "--db", db, "--device", "cpu", *SETTINGS, *extra)


def status(db) -> dict:
    (study,) = json.loads(invoke("status", "--db", db, "--json").output)["studies"]
    return study


def curves(db: Path) -> dict:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            f"SELECT r.label, m.step, m.name, m.value FROM metrics m JOIN runs r ON r.id = m.run_id "
            f"WHERE m.name IN ({','.join('?' * len(COMPARED))})",
            COMPARED,
        ).fetchall()
    out: dict = {}
    for label, step, name, value in rows:
        out.setdefault(label, {})[(step, name)] = value
    return out


def label(cfg) -> str:
    return f"depth={cfg.model.args['depth']} activation={cfg.model.args['activation']}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    db = tmp_path_factory.mktemp("ref") / "ref.db"
    assert smoke(db).exit_code == 0
    return curves(db)


# ------------------------------------------------------------ errors in a point


def test_a_point_that_raises_fails_with_where_and_retry_failed_trains_it_again(tmp_path, monkeypatch, reference):
    def bad_combination(cfg, *args, **kwargs):
        if label(cfg) == "depth=2 activation=gelu":
            raise ValueError("this combination of depth and activation is not supported")
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(ablate.worker, "train", bad_combination)
    db = tmp_path / "f.db"
    result = smoke(db)
    assert result.exit_code == 1 and "[failed] depth=2 activation=gelu seed=0 ValueError" in result.output
    study = status(db)
    assert study["counts"]["complete"] == 3 and study["counts"]["failed"] == 1
    (failed,) = [r for r in study["runs"] if r["status"] == "failed"]
    assert "ValueError: this combination" in failed["error"] and "test_reliability_failures.py" in failed["error"]
    table = invoke("status", "--db", db).output
    assert f"run {failed['id']}" in table and "ValueError: this combination" in table and "--retry-failed" in table

    monkeypatch.setattr(ablate.worker, "train", real_train)
    again = smoke(db)
    assert again.exit_code == 0 and "0 trained" in again.output and "1 failed before (not retried" in again.output
    retried = smoke(db, "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert "1 trained (1 complete)" in retried.output and "1 failed before and retried" in retried.output
    run = next(r for r in status(db)["runs"] if r["id"] == failed["id"])
    assert run["status"] == "complete" and run["error"] is None and run["attempts"] == 2
    assert "failed (ValueError: this combination" in run["notes"]
    assert curves(db) == reference


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
    ],
)
def test_out_of_memory_is_retried_once_at_half_the_batch_size(tmp_path, monkeypatch, error):
    sizes = []

    def oom_at_64(cfg, *args, **kwargs):
        sizes.append(cfg.batch_size)
        if label(cfg) == "depth=1 activation=relu" and cfg.batch_size == 64:
            raise error
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(ablate.worker, "train", oom_at_64)
    db = tmp_path / "oom.db"
    result = smoke(db)
    assert result.exit_code == 0, result.output
    assert sizes == [64, 32, 64, 64, 64]
    first, *others = status(db)["runs"]
    assert first["status"] == "complete" and first["epochs_done"] == 2
    assert (
        "out of memory at batch size 64" in first["notes"] and "retried from scratch at batch size 32" in first["notes"]
    )
    assert all(r["notes"] is None for r in others)
    assert "out of memory at batch size 64" in result.output


def test_out_of_memory_twice_fails_the_point_and_the_study_goes_on(tmp_path, monkeypatch):
    def always_oom(cfg, *args, **kwargs):
        if label(cfg) == "depth=1 activation=gelu":
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory at batch {cfg.batch_size}")
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(ablate.worker, "train", always_oom)
    db = tmp_path / "oom2.db"
    assert smoke(db).exit_code == 1
    runs = {r["label"]: r for r in status(db)["runs"]}
    gelu = runs["depth=1 activation=gelu"]
    assert gelu["status"] == "failed" and "OutOfMemoryError: CUDA out of memory at batch 32" in gelu["error"]
    assert "retried from scratch at batch size 32" in gelu["notes"]
    assert sum(r["status"] == "complete" for r in runs.values()) == 3


def test_a_diverged_point_is_a_result_and_never_retried(tmp_path, monkeypatch):
    def diverge(cfg, data, device, hooks=None, resume=None):
        if label(cfg) == "depth=2 activation=relu":
            hooks.epoch(1, {"train_loss": float("nan")})
            return RunResult("diverged", 1, {"train_loss": float("nan")})
        return real_train(cfg, data, device, hooks, resume)

    monkeypatch.setattr(ablate.worker, "train", diverge)
    db = tmp_path / "d.db"
    assert smoke(db).exit_code == 0
    assert status(db)["counts"]["diverged"] == 1
    again = smoke(db, "--retry-failed")
    assert again.exit_code == 0 and "0 trained" in again.output and "4 already done" in again.output
    assert status(db)["counts"]["diverged"] == 1


# ----------------------------------------------------------------------- Ctrl-C


def _ctrl_c_at(presses: int, monkeypatch) -> dict:
    """Wrap the trainer: after a few steps of the first point's second epoch, press Ctrl-C
    ``presses`` times (the signal goes to the main thread, as a terminal's would)."""
    seen = {"steps": 0, "after": 0, "stopped": None}

    def with_ctrl_c(cfg, data, device, hooks=None, resume=None):
        if label(cfg) != "depth=1 activation=relu" or seen["stopped"] is not None:
            return real_train(cfg, data, device, hooks, resume)
        epochs = []
        inner = hooks.should_stop

        def should_stop():
            seen["steps"] += 1
            if epochs and seen["after"] == 0 and seen["steps"] >= 6:
                for _ in range(presses):
                    os.kill(os.getpid(), signal.SIGINT)
                seen["after"] = 1
            elif seen["after"]:
                seen["after"] += 1
            return inner()

        def on_epoch(epoch, metrics):
            epochs.append(epoch)
            real_epoch(epoch, metrics)

        real_epoch = hooks.epoch
        hooks.epoch, hooks.should_stop = on_epoch, should_stop
        result = real_train(cfg, data, device, hooks, resume)
        seen["stopped"] = result.status
        return result

    monkeypatch.setattr(ablate.worker, "train", with_ctrl_c)
    return seen


def test_first_ctrl_c_stops_after_the_current_step_and_the_next_run_resumes(tmp_path, monkeypatch, reference):
    seen = _ctrl_c_at(1, monkeypatch)
    db = tmp_path / "c.db"
    result = smoke(db)
    assert result.exit_code == 130 and "stopping after the current step" in result.output
    assert seen["stopped"] == "stopped" and seen["after"] <= 3  # the worker stopped within a step or two
    runs = status(db)["runs"]
    assert [r["status"] for r in runs] == ["pending"] * 4  # nothing half-done, nothing lost
    assert runs[0]["epochs_done"] == 1 and list((tmp_path / "checkpoints" / "c").glob("run-1-*.pt"))
    monkeypatch.setattr(ablate.worker, "train", real_train)
    again = smoke(db)
    assert again.exit_code == 0 and "resuming from epoch 1" in again.output
    assert curves(db) == reference


def test_second_ctrl_c_stops_at_once(tmp_path, monkeypatch, reference):
    _ctrl_c_at(2, monkeypatch)
    db = tmp_path / "cc.db"
    result = smoke(db)
    assert result.exit_code == 130
    assert {r["status"] for r in status(db)["runs"]} == {"pending"}
    monkeypatch.setattr(ablate.worker, "train", real_train)
    assert smoke(db).exit_code == 0
    assert curves(db) == reference


# ------------------------------------------------------------------ checkpoints


class _Hostile:
    """Unpickling this would create a file: a checkpoint must never be able to run code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> Path:
    """A finished study whose checkpoints were kept."""
    where = tmp_path_factory.mktemp("kept")
    db = where / "k.db"
    assert smoke(db, "--keep-checkpoints").exit_code == 0
    folder = where / "checkpoints" / "k"
    # run-ID-KEY.pt, KEY tying each to its run in this database
    assert sorted(p.name.split("-")[1] for p in folder.iterdir()) == ["1", "2", "3", "4"]
    return where


def _kept_then_pending(tmp_path, kept) -> Path:
    """A copy of ``kept`` with its first run put back to pending: the next run resumes it
    from its checkpoint (epoch 1 of 2)."""
    shutil.copy(kept / "k.db", tmp_path / "k.db")
    shutil.copytree(kept / "checkpoints", tmp_path / "checkpoints")
    store = Store.open(str(tmp_path / "k.db"))
    store.release(1, note="test: back to pending")
    store.close()
    return tmp_path / "checkpoints" / "k"


def test_a_kept_checkpoint_resumes_its_run(tmp_path, kept, reference):
    _kept_then_pending(tmp_path, kept)
    out = smoke(tmp_path / "k.db")
    assert out.exit_code == 0 and "resuming from epoch 1" in out.output and "1 trained" in out.output
    assert curves(tmp_path / "k.db") == reference
    assert not list((tmp_path / "checkpoints" / "k").glob("run-1-*.pt"))  # removed once the run is done


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another run's", "hostile pickle"])
def test_a_bad_checkpoint_means_from_scratch_never_a_crash(tmp_path, damage, kept, reference):
    folder = _kept_then_pending(tmp_path, kept)
    (ckpt,) = folder.glob("run-1-*.pt")
    marker = tmp_path / "code-ran"
    if damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "another run's":
        ckpt.write_bytes(next(folder.glob("run-2-*.pt")).read_bytes())
    else:
        state = torch.load(ckpt, weights_only=True)
        state["meta"]["history"] = _Hostile(str(marker))
        with open(ckpt, "wb") as f:
            torch.save(state, f, pickle_module=pickle)
    out = smoke(tmp_path / "k.db")
    assert out.exit_code == 0, out.output
    assert "starting from scratch" in out.output and "resuming" not in out.output
    assert not marker.exists()
    assert curves(tmp_path / "k.db") == reference
    run = status(tmp_path / "k.db")["runs"][0]
    assert run["status"] == "complete" and "starting from scratch" in run["notes"]


# ------------------------------------------------------ what the worker reports


def test_probes_and_artifacts_reach_the_database(tmp_path):
    db = tmp_path / "p.db"
    out = smoke(db, "--set", "probes.kernels=true", "--set", "probes.grad_norm_every=2")
    assert out.exit_code == 0, out.output
    store = Store.open(str(db))
    try:
        ids = [r["id"] for r in store.runs()]
        names = {name for _, _, name, _ in store.metrics(ids)}
        arrays = store.artifacts(ids)
    finally:
        store.close()
    assert names - set(COMPARED) - {"params", "epoch_time", "images_per_s"}  # probe scalars
    assert {(run_id, name) for run_id, name, *_ in arrays} == {(i, "kernels.conv1") for i in ids}
    _, _, data, dtype, shape = arrays[0]
    assert dtype == "float32" and len(data) == 4 * int(torch.tensor(shape).prod())


def test_heartbeats_come_from_the_worker_inside_a_long_epoch(tmp_path, monkeypatch):
    """The main loop hears nothing for a whole (slow) epoch, yet the run keeps beating."""
    import time

    import ablate.store.db

    beats = []
    real_heartbeat = ablate.store.db.Store.heartbeat
    monkeypatch.setattr(ablate.worker, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(
        ablate.store.db.Store,
        "heartbeat",
        lambda self, run_id, token=None: beats.append(run_id) or real_heartbeat(self, run_id, token),
    )

    def slow(cfg, data, device, hooks=None, resume=None):
        inner = hooks.should_stop
        hooks.should_stop = lambda: time.sleep(0.1) or inner()
        return real_train(cfg, data, device, hooks, resume)

    monkeypatch.setattr(ablate.worker, "train", slow)
    db = tmp_path / "h.db"
    result = invoke("run", "smoke", "--db", db, "--device", "cpu", "--epochs", "1", "--set", "train_subset=256")
    assert result.exit_code == 0
    assert {1, 2, 3, 4} <= set(beats) and len(beats) >= 8


def test_a_run_taken_over_by_another_runner_is_given_up_and_never_written_twice(tmp_path, monkeypatch):
    """Another runner judges our first point stale (say, after minutes of silence) and claims
    it: our runner's next write is refused, it stops that point and goes on with the rest."""
    db = tmp_path / "t.db"
    other = {}

    def taken_over(cfg, data, device, hooks=None, resume=None):
        if label(cfg) == "depth=1 activation=relu" and not other:
            inner = hooks.checkpoint

            def checkpoint(state):
                inner(state)
                store = Store.open(str(db))
                sid = store.studies()[0]["id"]
                assert store.requeue_stale(sid, older_than_s=-1, host="another-host")
                other["claim"] = store.claim(sid, "cuda:0", "another-host", 4242)
                store.close()

            hooks.checkpoint = checkpoint
        return real_train(cfg, data, device, hooks, resume)

    monkeypatch.setattr(ablate.worker, "train", taken_over)
    result = smoke(db)
    assert result.exit_code == 0, result.output
    assert "taken over by another runner; giving it up" in result.output
    assert "3 trained (3 complete)" in result.output
    runs = status(db)["runs"]
    first = runs[0]
    assert (first["status"], first["host"], first["attempts"], first["epochs_done"]) == (
        "running",
        "another-host",
        2,
        0,
    )
    store = Store.open(str(db))
    assert store.metrics([first["id"]]) == []  # nothing of ours landed after the takeover
    store.close()
    assert [r["status"] for r in runs[1:]] == ["complete"] * 3
