"""What `ablate run` says while it works (issue 14, item 14): what it is loading, a line per
epoch naming the point and its seed off a terminal, steps within an epoch on one, its wall
time and the next command at the end, and after an interrupt what is left and how to resume."""

from __future__ import annotations

import re

from typer.testing import CliRunner

import ablate.scheduler
import ablate.worker
from ablate.cli import app
from ablate.config import from_dict
from ablate.run import run_study
from ablate.scheduler import QuietReporter

FAST = ("--device", "cpu", "--set", "train_subset=64", "--set", "model.width=4")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_run_says_what_it_loads_then_each_epoch_with_its_seed_and_what_next(tmp_path, monkeypatch):
    import ablate.cli.run

    monkeypatch.setattr(ablate.cli.run, "_on_terminal", lambda: True)  # the loading line is for a terminal
    result = invoke("run", "smoke", "--db", tmp_path / "r.db", "--epochs", "2", "--seeds", "2", *FAST)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("smoke: loading") and "data" in lines[0]
    epochs = [line for line in lines if re.match(r"depth=\d activation=\w+ seed=\d: epoch \d/2", line)]
    assert len(epochs) == 4 * 2 * 2  # 4 points x 2 seeds x 2 epochs
    assert any(line.startswith("depth=2 activation=gelu seed=1: epoch 2/2") and "test acc" in line for line in epochs)
    assert re.search(r"smoke: 8 trained \(8 complete\), 0 already done, in [\d.]+ s", result.output)
    # the report of another database goes beside it (r/), never over the default's reports/
    assert lines[-1] == (
        f"next: `ablate report --figure 0 --db {tmp_path / 'r.db'} --epochs 2 --set train_subset=64 "
        f"--set model.width=4 --out {tmp_path / 'r'}`"
    )


def test_steps_within_an_epoch_reach_the_reporter(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate.worker, "PROGRESS_S", 0.0)  # every step, not one a second
    seen: list[tuple] = []

    class Steps(QuietReporter):
        def step(self, worker, epoch, step, steps):
            seen.append((epoch, step, steps))

    summary = run_study(
        "smoke",
        db=f"sqlite:///{tmp_path / 'r.db'}",
        reporter=Steps(lambda _: None),
        device="cpu",
        epochs=2,
        sets=["train_subset=64", "model.width=4", "batch_size=16"],
    )
    assert summary.ok
    assert {(e, s, n) for e, s, n in seen if e == 1} >= {(1, s, 4) for s in range(1, 5)}
    assert all(1 <= s <= n == 4 and e in (1, 2) for e, s, n in seen)


def test_steps_per_epoch_is_what_the_trainer_takes():
    from ablate.train import steps_per_epoch

    cfg = from_dict({"train_subset": 1000, "batch_size": 128})
    assert steps_per_epoch(cfg, 2000) == 7  # the ragged last batch is dropped
    assert steps_per_epoch(cfg, 500) == 3
    assert steps_per_epoch(from_dict({"batch_size": 4096}), 2000) == 1  # a batch no larger than the data


def test_the_live_display_shows_the_step(tmp_path):
    from io import StringIO

    from rich.console import Console

    from ablate.cli.live import LiveReporter

    console = Console(file=StringIO(), width=120, force_terminal=True)
    live = LiveReporter(console)
    live.started(4, 0, ["cpu"])
    live.claimed(0, "depth=1 seed=0", 3)
    live.step(0, 1, 120, 390)
    live.live.stop()
    console.print(live._render())
    text = console.file.getvalue()
    assert "1/3" in text and "step 120/390" in text


def test_an_interrupt_says_how_many_points_are_left_and_the_command_that_resumes_them(tmp_path, monkeypatch):
    from tests.test_reliability_failures import _ctrl_c_at, smoke

    _ctrl_c_at(1, monkeypatch)
    db = tmp_path / "c.db"
    result = smoke(db)
    assert result.exit_code == 130, result.output
    assert (
        "interrupted: 4 point(s) left pending; `ablate run smoke --db "
        f"{db} --epochs 2 --set train_subset=256 --set model.width=8` resumes them"
    ) in result.output
