"""The live display of a running study: overall progress and one line per worker."""

from __future__ import annotations

import sys

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class LiveReporter:
    """A progress bar with points done / total and ETA, and per worker its point, epoch and
    last test accuracy. Finished points scroll above the live area."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]points"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = None
        self.workers: dict[int, dict] = {}
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def _render(self):
        table = Table("worker", "device", "point", "epoch", "test acc", box=None)
        for wid, w in sorted(self.workers.items()):
            table.add_row(str(wid), w["device"], w.get("label", "-"), w.get("epoch", "-"), w.get("acc", "-"))
        return Group(self.progress, table)

    def _refresh(self):
        self.live.update(self._render())

    def started(self, total, skipped, workers):
        self.console.print(f"{total} points to train on {', '.join(workers)}; {skipped} already done")
        self.task = self.progress.add_task("points", total=total)
        self.workers = {i: {"device": d} for i, d in enumerate(workers)}
        self.live.start()

    def claimed(self, worker, label, epochs):
        self.workers[worker].update(label=label, epochs=epochs, epoch=f"0/{epochs}", acc="-")
        self._refresh()

    def step(self, worker, epoch, step, steps):
        w = self.workers[worker]
        w["epoch"] = f"{epoch}/{w.get('epochs', '?')} step {step}/{steps}"
        self._refresh()

    def epoch(self, worker, label, epoch, metrics):
        w = self.workers[worker]
        w["epoch"] = f"{epoch}/{w.get('epochs', '?')}"
        if metrics.get("test_acc") is not None:
            w["acc"] = f"{metrics['test_acc']:.4f}"
        self._refresh()

    def finished(self, worker, label, status, detail):
        self.progress.advance(self.task)
        self.workers[worker].update(label="-", epoch="-", acc="-")
        self.console.print(f"[{status}] {label} {detail}".rstrip(), markup=False, highlight=False)
        self._refresh()
        if self.progress.finished:
            self.live.stop()

    def message(self, text):
        self.console.print(text)

    def __del__(self):
        self.live.stop()


def reporter_for():
    """Live display on a terminal, one plain line per point elsewhere (CI logs, pipes)."""
    from ablate.scheduler import QuietReporter

    if sys.stdout.isatty():
        return LiveReporter(Console())
    return QuietReporter()
