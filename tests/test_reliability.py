"""Reliability, for real: runners killed with SIGKILL at chosen moments, several runners on
one database, readers polling while they write. On the CPU with the synthetic smoke study.

Each killed study is run again and must end with every point complete exactly once, and
every resumed point with the numbers of a run that was never interrupted. The moments are
reached by polling the database (read-only, as a by-stander would) or, where polling is
too coarse, held open by ``ABLATE_TEST_PAUSE`` (see ``ablate.checkpoints.test_pause``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.status import study_status
from ablate.store import Store
from tests.conftest import one_thread as single_thread

SETTINGS = ("--epochs", "3", "--set", "train_subset=256", "--set", "model.width=8")  # 4 points x 3 short epochs
COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
WAIT_S = 240  # generous: a loaded 2-core CI machine takes seconds just to import torch


# ---------------------------------------------------------------------- helpers


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ABLATE_")}
    # A runner that dies of a signal prints every thread's stack into its log.
    # ABLATE_CHECKPOINT_AFTER_S: a tiny run checkpoints every epoch, as a long one does.
    out.update(OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1", ABLATE_CHECKPOINT_AFTER_S="0", **extra)
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread everywhere: runners beside each other on two cores stay fast, and numbers
    compare to the last bit only at one thread count (the reruns run in-process)."""
    with single_thread():
        yield


def start(
    cwd: Path, db: Path, *args: str, study: str = "smoke", pause: str | None = None, log: str = "run"
) -> subprocess.Popen:
    """``python -m ablate run`` in a session of its own, so its whole process group can be killed."""
    out = open(cwd / f"{log}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "ablate", "run", study, "--db", str(db), "--device", "cpu", *args],
        cwd=cwd,
        env=env(**({"ABLATE_TEST_PAUSE": pause} if pause else {})),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def output(proc: subprocess.Popen, cwd: Path, log: str = "run") -> str:
    proc.wait(timeout=WAIT_S)
    return (cwd / f"{log}.log").read_text()


def read_runs(db: Path) -> list[dict]:
    """The runs table, read-only; [] before the runner has made it."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    except sqlite3.Error:
        return []


def wait_for(what: str, cond, proc: subprocess.Popen | None = None, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the runner exited ({proc.returncode}) before {what}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def curves(db: Path) -> dict[str, dict[tuple[int, str], float]]:
    """Per point label, every compared metric at every epoch."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            f"SELECT r.label, m.step, m.name, m.value FROM metrics m JOIN runs r ON r.id = m.run_id "
            f"WHERE m.name IN ({','.join('?' * len(COMPARED))})",
            COMPARED,
        ).fetchall()
    out: dict[str, dict[tuple[int, str], float]] = {}
    for label, step, name, value in rows:
        out.setdefault(label, {})[(step, name)] = value
    return out


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def status_json(db: Path) -> dict:
    (study,) = json.loads(invoke("status", "--db", db, "--json"))["studies"]
    return study


def assert_complete_once_as_uninterrupted(db: Path, reference: dict) -> list[dict]:
    runs = read_runs(db)
    assert len(runs) == 4 and len({(r["config_hash"], r["seed"]) for r in runs}) == 4
    assert {r["status"] for r in runs} == {"complete"}
    assert all(r["epochs_done"] == 3 for r in runs)
    assert curves(db) == reference  # every epoch of every point, to the last bit
    leftovers = list((db.parent / "checkpoints" / db.stem).glob("*")) if (db.parent / "checkpoints").exists() else []
    assert leftovers == [], leftovers  # finished runs keep no checkpoint, no temporary file
    return runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread) -> dict:
    """The smoke study run once without interruption."""
    db = tmp_path_factory.mktemp("reference") / "ref.db"
    invoke("run", "smoke", "--db", db, "--device", "cpu", *SETTINGS)
    ref = curves(db)
    assert len(ref) == 4 and all(len(c) == 3 * len(COMPARED) for c in ref.values())
    return ref


# ------------------------------------------------------------------ kill points


def _running_after_an_epoch(db, ckpt):
    return any(r["status"] == "running" and r["epochs_done"] >= 1 for r in read_runs(db))


def _checkpoint_half_written(db, ckpt):
    # Epoch 1's checkpoint in place and epoch 2's on its way (held halfway by the pause).
    return list(ckpt.glob("run-1-*.pt")) and list(ckpt.glob("run-1-*.pt.*.tmp"))


def _one_point_done(db, ckpt):
    return any(r["status"] == "complete" for r in read_runs(db))


def _last_epoch_on_record(db, ckpt):
    return any(r["status"] == "running" and r["epochs_done"] == 3 for r in read_runs(db))


# name: (ABLATE_TEST_PAUSE, the moment to kill at)
KILL_POINTS = {
    "during a worker's epoch": (None, _running_after_an_epoch),
    "during a checkpoint write": ("checkpoint@2=600", _checkpoint_half_written),
    "between two points": ("between=600", _one_point_done),
    "after the last epoch, before the point is marked complete": ("finish=600", _last_epoch_on_record),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_the_whole_runner_then_run_again(point, tmp_path, reference):
    pause, moment = KILL_POINTS[point]
    db, ckpt = tmp_path / "k.db", tmp_path / "checkpoints" / "k"
    proc = start(tmp_path, db, *SETTINGS, pause=pause)
    wait_for(point, lambda: moment(db, ckpt), proc)
    kill_group(proc)

    before = read_runs(db)
    interrupted = [r["id"] for r in before if r["status"] == "running"]
    assert len(interrupted) == (0 if point == "between two points" else 1), before
    if point == "during a checkpoint write":
        import torch

        (whole,) = ckpt.glob("run-1-*.pt")  # run-ID-KEY.pt: KEY ties it to this database's run
        assert torch.load(whole, weights_only=True)["epoch"] == 1  # the previous one is whole
        assert list(ckpt.glob("run-1-*.pt.*.tmp"))
    if point.startswith("after the last epoch"):
        assert before[0]["epochs_done"] == 3  # the database is one epoch ahead of the checkpoint (2)
    # The next `ablate status` sees at once that the runner is gone: its process no longer exists.
    study = status_json(db)
    assert study["counts"]["stale"] == len(interrupted) and study["counts"]["running"] == 0
    assert [r["id"] for r in study["runs"] if r["status"] == "stale"] == interrupted
    assert all("is gone" in r["stale_reason"] for r in study["runs"] if r["status"] == "stale")

    out = invoke("run", "smoke", "--db", db, "--device", "cpu", *SETTINGS)
    assert all(f"re-queued run {i}" in out for i in interrupted)
    runs = assert_complete_once_as_uninterrupted(db, reference)
    assert [r["attempts"] for r in runs] == [1 + (r["id"] in interrupted) for r in runs]
    for r in runs:
        if r["id"] in interrupted:
            assert "re-queued: its runner (process" in r["notes"]


def test_kill_one_worker_process_it_is_restarted_and_the_point_resumes(tmp_path, reference, monkeypatch):
    """With process workers (as on CUDA), SIGKILL to one worker in the middle of a point. The
    first worker is held halfway through its epoch-2 checkpoint, so the kill lands mid-point."""
    lines: list[str] = []
    killed: list[int] = []
    monkeypatch.setenv("ABLATE_TEST_PAUSE", "checkpoint@2=600")

    class KillAWorker(QuietReporter):
        def epoch(self, worker, label, epoch, metrics):
            if not killed:
                os.environ.pop("ABLATE_TEST_PAUSE")  # the worker that replaces it runs freely
                (child,) = [c for c in mp.active_children() if c.name.startswith("ablate-worker")]
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    db = tmp_path / "w.db"
    summary = run_study(
        "smoke",
        db=str(db),
        reporter=KillAWorker(lines.append),
        device="cpu",
        epochs=3,
        sets=list(SETTINGS[3::2]),
        processes=True,
    )
    assert killed and summary.ok and summary.counts == {"complete": 4}
    assert any("died (exit code -9)" in line and "resumes from its checkpoint" in line for line in lines), lines
    assert any("resuming from epoch 1" in line for line in lines), lines
    runs = assert_complete_once_as_uninterrupted(db, reference)
    assert [r["attempts"] for r in runs] == [2, 1, 1, 1]
    assert "worker 0 (cpu) died (exit code -9); re-queued" in runs[0]["notes"]


def _workers_of(pid: int) -> list[int]:
    """The spawned worker processes among a process's children (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker")
def test_kill_the_main_process_alone_its_worker_exits_and_the_point_resumes(tmp_path, reference):
    from ablate.store import pid_alive

    db, ckpt = tmp_path / "m.db", tmp_path / "checkpoints" / "m"
    code = (
        "from ablate.run import run_study; "
        f"run_study('smoke', db={str(db)!r}, device='cpu', epochs=3, sets={list(SETTINGS[3::2])!r}, processes=True)"
    )
    with open(tmp_path / "main.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env(ABLATE_TEST_PAUSE="checkpoint@2=600"),
            start_new_session=True,
        )
    wait_for("the worker in its epoch-2 checkpoint", lambda: _checkpoint_half_written(db, ckpt), proc)
    workers = _workers_of(proc.pid)
    assert len(workers) == 1
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: its worker is orphaned
    proc.wait(timeout=30)
    wait_for("the orphaned worker to exit", lambda: not pid_alive(workers[0]), timeout=60)
    out = invoke("run", "smoke", "--db", db, "--device", "cpu", *SETTINGS)
    assert "re-queued run 1" in out and "resuming from epoch 1" in out
    runs = assert_complete_once_as_uninterrupted(db, reference)
    assert [r["attempts"] for r in runs] == [2, 1, 1, 1]


def test_ctrl_c_twice_in_a_terminal_stops_at_once_and_leaves_points_pending(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it."""
    db = tmp_path / "c.db"
    proc = start(tmp_path, db, *SETTINGS)
    wait_for("an epoch", lambda: _running_after_an_epoch(db, None), proc)
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=WAIT_S) == 130
    log = (tmp_path / "run.log").read_text()
    # Which message shows depends on whether the worker finished its step before the second press.
    assert ("stopped at once" in log or "stopping after the current step" in log) and "Traceback" not in log
    runs = read_runs(db)  # (test_reliability_failures resumes such a study and compares)
    assert "running" not in {r["status"] for r in runs} and "pending" in {r["status"] for r in runs}
    assert runs[0]["epochs_done"] >= 1 and list((tmp_path / "checkpoints" / "c").glob("run-1-*.pt"))


# ------------------------------------------------------------- several runners


class Poller:
    """Reads the database the way `ablate status` and `ablate report` do, while runners write."""

    def __init__(self, db: Path, cwd: Path):
        self.db, self.cwd, self.reads, self.cli, self.errors = db, cwd, 0, 0, []

    def read(self) -> None:
        try:
            store = Store.open(str(self.db), create=False)
            try:
                studies = study_status(store)
            finally:
                store.close()
            self.reads += 1
            if any(s["counts"]["stale"] for s in studies):  # live runners are never stale
                self.errors.append(f"stale while running: {studies}")
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            self.errors.append(repr(e))

    def cli_status(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "ablate", "status", "--db", str(self.db), "--json"],
            cwd=self.cwd,
            env=env(),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        if done.returncode != 0:
            self.errors.append(done.stdout + done.stderr)
        else:
            json.loads(done.stdout)
            self.cli += 1

    def cli_report(self) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ablate",
                "report",
                "--db",
                str(self.db),
                "--out",
                str(self.cwd / "report"),
                "--figure",
                "0",
            ],
            cwd=self.cwd,
            env=env(),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        if done.returncode != 0:
            self.errors.append(done.stdout + done.stderr)
        else:
            self.cli += 1

    def while_running(self, procs: list[subprocess.Popen], report: bool = False) -> None:
        """In-process reads all along; the commands themselves once the runners write (each
        costs the seconds of a Python start that the runners beside it would miss)."""
        commands = [self.cli_status] + ([self.cli_report] if report else [])
        while any(p.poll() is None for p in procs):
            self.read()
            if commands and any(r["epochs_done"] for r in read_runs(self.db)):
                commands.pop(0)()
            time.sleep(0.2)


def _assert_no_lock_errors(outputs: list[str]) -> None:
    for out in outputs:
        low = out.lower()
        assert "locked" not in low and "busy" not in low and "traceback" not in low, out


def _trained(out: str) -> int:
    """N of the closing line 'STUDY: N trained (...)'."""
    (line,) = [line for line in out.splitlines() if " trained (" in line]
    return int(line.split(": ", 1)[1].split(" trained", 1)[0])


def test_two_runners_on_one_study_train_each_point_once(tmp_path):
    db = tmp_path / "two.db"
    args = ("--seeds", "2", "--epochs", "1", "--set", "train_subset=256", "--set", "model.width=8")
    procs = [start(tmp_path, db, *args, log=f"r{i}") for i in range(2)]
    poller = Poller(db, tmp_path)
    poller.while_running(procs, report=True)
    outs = [output(p, tmp_path, f"r{i}") for i, p in enumerate(procs)]
    assert [p.returncode for p in procs] == [0, 0], outs
    _assert_no_lock_errors(outs)
    runs = read_runs(db)
    assert len(runs) == 8 and {r["status"] for r in runs} == {"complete"}
    assert {r["attempts"] for r in runs} == {1}  # claimed once each: never trained twice
    assert sum(_trained(o) for o in outs) == 8  # between them, each point once
    assert poller.errors == [] and poller.reads > 0 and poller.cli > 0


def test_three_runners_two_studies_one_database(tmp_path):
    db = tmp_path / "three.db"
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(
        'description = "two points beside the smoke study"\nfigures = []\nseeds = 2\n[base]\nepochs = 1\n'
        'batch_size = 64\ntrain_subset = 256\ndata = { dataset = "synthetic" }\n'
        'model = { name = "plain_cnn", depth = 1, width = 8 }\n'
    )
    smoke = ("--seeds", "2", "--epochs", "1", "--set", "train_subset=256", "--set", "model.width=8")
    procs = [
        start(tmp_path, db, *smoke, log="s0"),
        start(tmp_path, db, *smoke, log="s1"),
        start(tmp_path, db, study=str(tiny), log="t0"),
    ]
    poller = Poller(db, tmp_path)
    poller.while_running(procs)
    outs = [output(p, tmp_path, log) for p, log in zip(procs, ("s0", "s1", "t0"))]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    _assert_no_lock_errors(outs)
    runs = read_runs(db)
    assert len(runs) == 10 and {r["status"] for r in runs} == {"complete"} and {r["attempts"] for r in runs} == {1}
    assert sum(_trained(o) for o in outs[:2]) == 8
    assert "tiny: 2 trained" in outs[2]
    assert poller.errors == [] and poller.reads > 0
