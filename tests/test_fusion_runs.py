"""Fused groups through the runner and the CLI: every member is its own run in the database
(its own claim, epochs, checkpoint, status), a diverging member ends alone, a killed group
resumes, an OOM halves the group, and ``--dry-run`` and ``--fuse`` say what they do.

The tolerance is test_fusion.py's (and README.md's)."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ablate.scheduler
import ablate.worker
from ablate.cli import app
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.store import Store
from tests.conftest import file_digest
from tests.conftest import one_thread as single_thread
from tests.test_fusion import ACC_IMAGES, LOSS_TOL
from tests.test_reliability import kill_group, read_runs, start, wait_for

COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")

STUDY = """
description = "one small point, three learning rates (the middle one diverges)"
seeds = 1
[base]
epochs = 3
batch_size = 64
train_subset = 256
data = {{ dataset = "synthetic", aug = {{ crop_padding = 2, flip = true }} }}
model = {{ name = "plain_cnn", depth = 2, width = 8 }}
optimizer = {{ name = "sgd", lr = 0.05, momentum = 0.0, weight_decay = 0.0 }}
[axes]
"optimizer.lr" = {lrs}
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """In-process and spawned runners at one thread: numbers compare to the last bit then."""
    with single_thread():
        yield


def study_file(where: Path, lrs=(0.05, 0.1, 0.2)) -> str:
    path = where / "lrs.toml"
    path.write_text(STUDY.format(lrs=list(lrs)))
    return str(path)


def curves(db: Path) -> dict:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            f"SELECT r.label, r.seed, m.step, m.name, m.value FROM metrics m JOIN runs r ON r.id = m.run_id "
            f"WHERE m.name IN ({','.join('?' * len(COMPARED))})",
            COMPARED,
        ).fetchall()
    out: dict = {}
    for label, seed, step, name, value in rows:
        out.setdefault((label, seed), {})[(step, name)] = value
    return out


def assert_close(fused: dict, alone: dict, n_train: int = 256, n_test: int = 500) -> None:
    """Every epoch of every run within the stated tolerance (None: a non-finite loss, on record as NULL)."""
    assert fused.keys() == alone.keys()
    for run in alone:
        assert fused[run].keys() == alone[run].keys(), run
        for (step, name), value in alone[run].items():
            got = fused[run][(step, name)]
            if value is None or got is None:
                assert value is got is None
            elif name.endswith("loss"):
                assert abs(got - value) <= LOSS_TOL, (run, step, name, got, value)
            elif name.endswith("acc"):
                n = n_train if name == "train_acc" else n_test
                assert abs(got - value) * n <= ACC_IMAGES + 1e-9, (run, step, name, got, value)
            else:
                assert got == value


def quiet() -> QuietReporter:
    return QuietReporter(lambda _: None)


def test_each_member_is_its_own_run_and_a_diverging_one_ends_alone(tmp_path):
    study = study_file(tmp_path, lrs=(0.05, 1e12, 0.1))
    fused, alone = tmp_path / "fused.db", tmp_path / "alone.db"
    said: list[str] = []
    summary = run_study(study, db=str(fused), reporter=QuietReporter(said.append), device="cpu", fuse=3)
    assert summary.ok and summary.counts == {"complete": 2, "diverged": 1}, said
    run_study(study, db=str(alone), reporter=quiet(), device="cpu", fuse=1)
    runs = {r["label"]: r for r in read_runs(fused)}
    lone = {r["label"]: r for r in read_runs(alone)}
    assert [runs[k]["status"] for k in ("lr=0.05", "lr=1000000000000.0", "lr=0.1")] == [
        "complete",
        "diverged",
        "complete",
    ]
    assert runs["lr=1000000000000.0"]["epochs_done"] == lone["lr=1000000000000.0"]["epochs_done"] < 3
    for r in runs.values():  # claimed once each, and on record as fused with its mates
        others = sorted(o["id"] for o in runs.values() if o["id"] != r["id"])
        assert r["attempts"] == 1 and r["notes"] == f"attempt 1: trained fused with run(s) {others[0]}, {others[1]}"
        assert r["device"] == "cpu" and r["wall_s"] > 0
    for r in lone.values():
        assert r["notes"] is None
    assert_close(curves(fused), curves(alone))
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))  # every member removed its own


def test_a_killed_fused_group_resumes_fused_or_alone_with_the_numbers_of_an_unbroken_run(tmp_path):
    study = study_file(tmp_path)
    reference = tmp_path / "ref.db"
    run_study(study, db=str(reference), reporter=quiet(), device="cpu", fuse=3)
    expected = curves(reference)

    db, ckpt = tmp_path / "k.db", tmp_path / "checkpoints" / "k"
    proc = start(tmp_path, db, "--fuse", "3", study=study)
    wait_for(
        "every member past epoch 1",
        lambda: (lambda rs: len(rs) == 3 and all(r["status"] == "running" and r["epochs_done"] >= 1 for r in rs))(
            read_runs(db)
        ),
        proc,
    )
    kill_group(proc)
    assert {r["status"] for r in read_runs(db)} == {"running"}
    assert sorted(p.name.split("-")[1] for p in ckpt.glob("*.pt")) == ["1", "2", "3"]  # run-ID-KEY.pt
    shutil.copytree(tmp_path / "checkpoints", tmp_path / "kept")
    for suffix in ("", "-wal", "-shm"):  # killed: the last writes may still be in the WAL
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", tmp_path / f"alone.db{suffix}")
    shutil.copytree(tmp_path / "kept" / "k", tmp_path / "checkpoints" / "alone")

    said: list[str] = []
    again = run_study(study, db=str(db), reporter=QuietReporter(said.append), device="cpu", fuse=3)
    assert again.counts == {"complete": 3}, said
    assert sum("resuming from epoch" in line for line in said) == 3, said
    assert curves(db) == expected  # fused again from the same checkpoints: to the last bit
    assert all(r["attempts"] == 2 for r in read_runs(db))

    alone = tmp_path / "alone.db"  # the same killed group, each member resumed on its own
    run_study(study, db=str(alone), reporter=quiet(), device="cpu", fuse=1)
    assert {r["status"] for r in read_runs(alone)} == {"complete"}
    assert_close(curves(alone), expected)
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))


def test_members_resuming_from_different_epochs_train_apart(tmp_path):
    study = study_file(tmp_path, lrs=(0.05, 0.1))
    db = tmp_path / "r.db"
    run_study(study, db=str(db), reporter=quiet(), device="cpu", fuse=1, keep_checkpoints=True)
    finished = curves(db)
    folder = tmp_path / "checkpoints" / "r"
    (next(folder.glob("run-2-*.pt"))).unlink()  # run 1 resumes from epoch 2, run 2 starts over
    store = Store.open(str(db))
    store.release(1, note="test: back to pending")
    store.release(2, note="test: back to pending")
    store.close()
    said: list[str] = []
    summary = run_study(study, db=str(db), reporter=QuietReporter(said.append), device="cpu", fuse=2)
    assert summary.counts == {"complete": 2}
    assert any("lr=0.05: resuming from epoch 2" in line for line in said), said
    assert all("trained fused" not in (r["notes"] or "") for r in read_runs(db))
    assert curves(db) == finished  # each alone, as before


def test_out_of_memory_halves_the_group_before_the_batch(tmp_path, monkeypatch):
    sizes: list[tuple[int, int]] = []
    real = ablate.worker.train_group

    def oom_at_four(cfgs, *args, **kwargs):
        sizes.append((len(cfgs), cfgs[0].batch_size))
        if len(cfgs) == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(ablate.worker, "train_group", oom_at_four)
    study = study_file(tmp_path, lrs=(0.05, 0.1, 0.2, 0.3))
    db = tmp_path / "o.db"
    said: list[str] = []
    summary = run_study(study, db=str(db), reporter=QuietReporter(said.append), device="cpu", fuse=4)
    assert summary.ok and summary.counts == {"complete": 4}, said
    assert sizes == [(4, 64), (2, 64), (2, 64)]
    for r in read_runs(db):
        assert "out of memory with 4 runs fused" in r["notes"] and "in groups of 2 and 2" in r["notes"]
        assert r["epochs_done"] == 3
    monkeypatch.setattr(ablate.worker, "train_group", real)
    alone = tmp_path / "a.db"
    run_study(study, db=str(alone), reporter=quiet(), device="cpu", fuse=1)
    assert_close(curves(db), curves(alone))


def test_a_group_that_fails_otherwise_trains_each_member_alone(tmp_path, monkeypatch):
    def broken(cfgs, *args, **kwargs):
        raise RuntimeError("a kernel this device lacks")

    monkeypatch.setattr(ablate.worker, "train_group", broken)
    study = study_file(tmp_path, lrs=(0.05, 0.1))
    db = tmp_path / "b.db"
    summary = run_study(study, db=str(db), reporter=quiet(), device="cpu", fuse=2)
    assert summary.ok and summary.counts == {"complete": 2}
    for r in read_runs(db):
        assert "fused training failed (RuntimeError: a kernel this device lacks)" in r["notes"]
        assert "each run retried alone" in r["notes"]


# ------------------------------------------------------------------------- CLI


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_dry_run_shows_the_groups_it_would_form(tmp_path):
    result = invoke("run", "smoke", "--db", tmp_path / "d.db", "--dry-run", "--seeds", "3", "--fuse", "2")
    assert result.exit_code == 0, result.output
    assert "group" in result.output
    # 4 points x 3 seeds; a point's seeds fuse (2 at most), the points' shapes differ.
    assert "12 points on synthetic: 0 done, 12 to train, in 8 groups (4 fused, of 2, 2, 2, 2)" in result.output
    rows = [line for line in result.output.splitlines() if "depth=1 activation=relu" in line]
    assert [row.split("│")[-2].strip() for row in rows] == ["1", "1", "2"]
    off = invoke("run", "smoke", "--db", tmp_path / "d.db", "--dry-run", "--seeds", "3", "--fuse", "1")
    assert "12 points on synthetic: 0 done, 12 to train\n" in off.output
    dropout = invoke(
        "run",
        "smoke",
        "--db",
        tmp_path / "d.db",
        "--dry-run",
        "--seeds",
        "3",
        "--fuse",
        "3",
        "--set",
        "model.dropout=0.2",
    )
    assert "12 points on synthetic: 0 done, 12 to train\n" in dropout.output  # dropout never fuses
    assert not (tmp_path / "d.db").exists()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_fuse_is_a_one_line_error_that_writes_nothing(tmp_path, value):
    Store.open(str(tmp_path / "e.db")).close()
    before = file_digest(tmp_path / "e.db")
    result = invoke("run", "smoke", "--db", tmp_path / "e.db", f"--fuse={value}")
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"error: --fuse takes a positive integer (1 turns fusion off) or auto, got '{value}'"
    )
    assert file_digest(tmp_path / "e.db") == before


def test_fuse_on_the_command_line_trains_fused_and_per_gpu_packs_groups(tmp_path):
    study = study_file(tmp_path, lrs=(0.05, 0.1))
    result = invoke(
        "run",
        study,
        "--db",
        tmp_path / "c.db",
        "--device",
        "cpu",
        "--seeds",
        "2",
        "--fuse",
        "2",
        "--per-gpu",
        "2",
        "--epochs",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "lrs: 4 trained (4 complete)" in result.output
    runs = read_runs(tmp_path / "c.db")
    assert all("trained fused" in r["notes"] for r in runs) and {r["attempts"] for r in runs} == {1}
