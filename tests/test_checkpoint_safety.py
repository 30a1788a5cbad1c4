"""Checkpoints that cannot be removed, that belong to another database, or that claim more
epochs than the run has (issue 14, items 5 to 7): none crashes a runner or is believed."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import ablate.scheduler
import ablate.worker
from ablate.checkpoints import CHECKPOINT_AFTER_ENV, SHORT_RUN_S, checkpoint_after_s, load_checkpoint
from ablate.cli import app
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.store import Store
from ablate.task import Task

FAST = ("--device", "cpu", "--set", "train_subset=64", "--set", "model.width=4")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# -------------------------------------------------- 5: a checkpoint that cannot be removed


def test_a_checkpoint_that_cannot_be_removed_is_noted_and_the_runner_goes_on(tmp_path, monkeypatch):
    real = ablate.worker.load_checkpoint
    blocked = []

    def a_directory_in_the_way(path, task):
        # Where the checkpoint goes, a non-empty directory: unreadable, unwritable, unremovable.
        path.mkdir(parents=True, exist_ok=True)
        (path / "keep").write_text("x")
        blocked.append(path)
        return real(path, task)

    monkeypatch.setattr(ablate.worker, "load_checkpoint", a_directory_in_the_way)
    lines: list[str] = []
    db = f"sqlite:///{tmp_path / 'results.db'}"
    summary = run_study(
        "smoke",
        db=db,
        reporter=QuietReporter(lines.append),
        device="cpu",
        epochs=3,
        sets=["train_subset=64", "model.width=4"],
    )
    assert summary.ok and summary.counts == {"complete": 4}, lines
    assert len(blocked) == 4 and all(p.is_dir() for p in blocked)
    text = "\n".join(lines)
    assert "cannot remove checkpoint" in text and "starting from scratch" in text

    # The next run sweeps the checkpoints of finished runs: the same directories, no crash.
    monkeypatch.setattr(ablate.worker, "load_checkpoint", real)
    lines.clear()
    summary = run_study(
        "smoke",
        db=db,
        reporter=QuietReporter(lines.append),
        device="cpu",
        epochs=3,
        sets=["train_subset=64", "model.width=4"],
    )
    assert summary.ok and summary.skipped == 4
    assert "cannot remove checkpoint" in "\n".join(lines)


# ------------------------------------------------- 6: two databases, one checkpoint folder


def test_two_databases_beside_each_other_never_share_a_checkpoint(tmp_path):
    # results.db and results.sqlite both default to checkpoints/results/.
    first = invoke("run", "smoke", "--db", tmp_path / "results.db", "--epochs", "2", "--keep-checkpoints", *FAST)
    assert first.exit_code == 0, first.output
    folder = tmp_path / "checkpoints" / "results"
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert len(kept) == 4
    second = invoke("run", "smoke", "--db", tmp_path / "results.sqlite", "--epochs", "2", *FAST)
    assert second.exit_code == 0, second.output
    assert "resuming" not in second.output  # the same run ids and configs, but another database's runs
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept  # the first database's, untouched


def test_a_run_projected_shorter_than_the_threshold_writes_no_checkpoint(tmp_path, monkeypatch):
    # The default threshold (30 s): the smoke study's 2 tiny epochs take about a second each.
    monkeypatch.delenv(CHECKPOINT_AFTER_ENV)
    assert checkpoint_after_s() == SHORT_RUN_S == 30.0
    out = invoke("run", "smoke", "--db", tmp_path / "s.db", "--epochs", "2", "--keep-checkpoints", *FAST)
    assert out.exit_code == 0, out.output
    folder = tmp_path / "checkpoints" / "s"
    assert not folder.exists() or not any(folder.iterdir())
    monkeypatch.setenv(CHECKPOINT_AFTER_ENV, "soon")
    with pytest.raises(ValueError, match="ABLATE_CHECKPOINT_AFTER_S must be a number of seconds >= 0, got 'soon'"):
        checkpoint_after_s()


def test_a_checkpoint_made_for_another_database_is_not_loaded(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 1, "meta": {"run_id": 1, "config_hash": "h", "seed": 0, "key": "another"}}, path)
    task = Task(1, 1, {"epochs": 3}, "p", "h", 0, str(path), checkpoint_key="mine")
    state, why = load_checkpoint(path, task)
    assert state is None and "another database" in why


# ------------------------------------------------------- 7: a checkpoint past the end


@pytest.mark.parametrize("epoch, accepted", [(2, True), (3, False), (7, False)])
def test_a_checkpoint_must_be_below_the_runs_epochs(tmp_path, epoch, accepted):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": epoch, "meta": {"run_id": 1, "config_hash": "h", "seed": 0, "key": "k"}}, path)
    task = Task(1, 1, {"epochs": 3}, "p", "h", 0, str(path), checkpoint_key="k")
    state, why = load_checkpoint(path, task)
    assert (state is not None) == accepted, why
    if not accepted:
        assert f"epoch {epoch}" in why and "3 epochs" in why and "from scratch" in why


def test_a_forged_finished_checkpoint_records_nothing_untrained(tmp_path):
    """The adversary's case end to end: a checkpoint at the run's last epoch, with forged
    numbers, left where a pending run looks for it."""
    db = tmp_path / "k.db"
    assert invoke("run", "smoke", "--db", db, "--epochs", "2", "--keep-checkpoints", *FAST).exit_code == 0
    (ckpt,) = (tmp_path / "checkpoints" / "k").glob("run-1*.pt")
    state = torch.load(ckpt, weights_only=True)
    state["epoch"] = 2
    state["metrics"] = {**state["metrics"], "test_acc": 0.99, "train_acc": 0.99}
    torch.save(state, ckpt)
    store = Store.open(str(db))
    store.release(1, note="test: back to pending")
    store.close()
    out = invoke("run", "smoke", "--db", db, "--epochs", "2", *FAST)
    assert out.exit_code == 0, out.output
    assert "starting from scratch" in out.output and "resuming" not in out.output
    store = Store.open(str(db), create=False)
    try:
        (run,) = [r for r in store.runs("smoke") if r["id"] == 1]
        assert run["status"] == "complete" and run["test_acc"] != 0.99
    finally:
        store.close()
