"""Runs a study's pending points over the devices it is given.

One worker per device slot trains points through the shared trainer; the main process is
the only writer of the database. Workers send events (epoch metrics, heartbeats, results)
back over a queue, so a worker never holds a database connection.

With one CPU device the worker is a thread (no process start-up, same code path); with
CUDA devices, one spawned process per device.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

import ablate
from ablate import data as datasets
from ablate.config import ConfigError, from_dict
from ablate.store import HEARTBEAT_S
from ablate.train import Hooks, train



class DeviceError(ConfigError):
    pass


def parse_devices(spec: str | None) -> list[str]:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:0,cuda:1`` -> device names, checked against the machine."""
    spec = (spec or "auto").strip()
    n_cuda = torch.cuda.device_count()
    if spec == "auto":
        return [f"cuda:{i}" for i in range(n_cuda)] or ["cpu"]
    if spec == "cpu":
        return ["cpu"]
    accepted = "auto, cpu, cuda or a list such as cuda:0,cuda:1"
    if spec == "cuda":
        if not n_cuda:
            raise DeviceError(f"--device cuda: no CUDA device on this machine; accepted: {accepted}")
        return [f"cuda:{i}" for i in range(n_cuda)]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    for d in devices:
        if not d.startswith("cuda:") or not d[5:].isdigit():
            raise DeviceError(f"--device: unknown device '{d}'; accepted: {accepted}")
        if int(d[5:]) >= n_cuda:
            raise DeviceError(f"--device: '{d}' does not exist here ({n_cuda} CUDA devices)")
    return devices


# ---------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class Task:
    run_id: int
    config: dict[str, Any]
    label: str


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "ablate": ablate.__version__}


def _error_text(e: BaseException) -> str:
    """The message and where it came from: the innermost frame of the traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


def worker_loop(wid: int, device: str, data_source: str | None, tasks, events, stop, preloaded=None) -> None:
    """Train tasks from ``tasks`` until a None arrives, reporting on ``events``."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    cache: dict[str, datasets.Dataset] = {}
    current: list[int | None] = [None]

    def beat():
        while not stop.is_set() or current[0] is not None:
            time.sleep(HEARTBEAT_S)
            if current[0] is not None:
                events.put(("beat", wid, current[0]))

    threading.Thread(target=beat, daemon=True).start()
    while True:
        task = tasks.get()
        if task is None:
            return
        current[0] = task.run_id
        try:
            cfg = from_dict(task.config)
            name = cfg.data.dataset
            if name not in cache:
                raw = (preloaded or {}).get(name) or datasets.load("synthetic" if name == "synthetic" else data_source)
                cache[name] = raw.to(device)
            hooks = Hooks(
                epoch=lambda epoch, m, rid=task.run_id: events.put(("epoch", wid, rid, epoch, m)),
                should_stop=stop.is_set,
            )
            result = train(cfg, cache[name], device, hooks)
            events.put(("done", wid, task.run_id, result.status, result.metrics, result.wall_s, _versions()))
        except Exception as e:  # one point's failure is a result; the study goes on
            events.put(("failed", wid, task.run_id, _error_text(e)))
        finally:
            current[0] = None


# ------------------------------------------------------------------- the main loop


class Reporter(Protocol):
    def started(self, total: int, skipped: int, workers: list[str]) -> None: ...
    def claimed(self, worker: int, label: str, epochs: int) -> None: ...
    def epoch(self, worker: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def finished(self, worker: int, label: str, status: str, detail: str) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)  # status -> runs this invocation ended
    interrupted: bool = False

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


class Runner:
    """Drives the workers for one study; ``store`` is the only database handle."""

    def __init__(self, store, study_id: int, devices: list[str], data_source: str | None,
                 reporter: Reporter, preloaded: dict[str, datasets.Dataset] | None = None):
        self.store, self.study_id, self.devices = store, study_id, devices
        self.data_source, self.reporter, self.preloaded = data_source, reporter, preloaded
        self.host, self.pid = socket.gethostname(), os.getpid()

    def run(self, run_ids: set[int], total: int, skipped: int) -> Outcome:
        outcome = Outcome()
        threaded = self.devices == ["cpu"]
        ctx = mp.get_context("spawn")
        events = queue.Queue() if threaded else ctx.Queue()
        stop = threading.Event() if threaded else ctx.Event()
        inboxes, workers = [], []
        for wid, device in enumerate(self.devices):
            inbox = queue.Queue() if threaded else ctx.Queue()
            args = (wid, device, self.data_source, inbox, events, stop)
            if threaded:
                w = threading.Thread(target=worker_loop, args=(*args, self.preloaded), daemon=True)
            else:
                w = ctx.Process(target=worker_loop, args=args, daemon=True)
            w.start()
            inboxes.append(inbox)
            workers.append(w)
        self.reporter.started(total, skipped, self.devices)
        busy: dict[int, Task] = {}
        interrupts = 0
        while True:
            try:
                if not stop.is_set():
                    self._dispatch(run_ids, busy, inboxes)
                if not busy:
                    break
                self._handle(events.get(timeout=1.0), busy, outcome)
            except queue.Empty:
                self._check_alive(workers, busy, outcome)
            except KeyboardInterrupt:
                interrupts += 1
                stop.set()
                outcome.interrupted = True
                if interrupts == 1 and busy:
                    self.reporter.message("stopping after the current step; Ctrl-C again to stop at once")
                    continue
                break
        for run_id in [t.run_id for t in busy.values()]:
            self.store.release(run_id)  # interrupted points go back to pending
        for inbox in inboxes:
            inbox.put(None)
        for w in workers:
            if isinstance(w, threading.Thread):
                continue  # a daemon thread stops at its next step or with the process
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
        return outcome

    def _dispatch(self, run_ids: set[int], busy: dict[int, Task], inboxes) -> None:
        for wid, device in enumerate(self.devices):
            if wid in busy:
                continue
            claim = self.store.claim(self.study_id, device, self.host, self.pid, only=run_ids)
            if claim is None:
                return
            task = Task(claim.run_id, claim.config, claim.label)
            busy[wid] = task
            inboxes[wid].put(task)
            self.reporter.claimed(wid, claim.label, claim.config.get("epochs", 0))

    def _handle(self, event: tuple, busy: dict[int, Task], outcome: Outcome) -> None:
        kind, wid, run_id, *rest = event
        if kind == "beat":
            self.store.heartbeat(run_id)
        elif kind == "epoch":
            epoch, metrics = rest
            self.store.record_epoch(run_id, epoch, metrics)
            self.reporter.epoch(wid, epoch, metrics)
        elif kind == "done":
            status, metrics, wall_s, versions = rest
            task = busy.pop(wid)
            if status == "stopped":
                self.store.release(run_id)
                return
            self.store.finish(run_id, status, metrics, wall_s, versions=versions)
            outcome.add(status)
            acc = metrics.get("test_acc")
            self.reporter.finished(wid, task.label, status, f"test acc {acc:.4f}" if acc is not None else "")
        elif kind == "failed":
            (error,) = rest
            task = busy.pop(wid)
            self.store.finish(run_id, "failed", error=error, versions=_versions())
            outcome.add("failed")
            self.reporter.finished(wid, task.label, "failed", error)

    def _check_alive(self, workers, busy: dict[int, Task], outcome: Outcome) -> None:
        """A worker process that died (killed, segfault) fails its point instead of hanging."""
        for wid, w in enumerate(workers):
            if wid in busy and not w.is_alive():
                task = busy.pop(wid)
                code = getattr(w, "exitcode", None)
                self.store.finish(task.run_id, "failed", error=f"worker process died (exit code {code})")
                outcome.add("failed")
                self.reporter.finished(wid, task.label, "failed", "worker process died")


class QuietReporter:
    """Prints one line per finished point; for pipes, logs and tests."""

    def __init__(self, echo: Callable[[str], None] = print):
        self.echo = echo

    def started(self, total, skipped, workers):
        self.echo(f"{total} points to train on {', '.join(workers)}; {skipped} already done")

    def claimed(self, worker, label, epochs):
        pass

    def epoch(self, worker, epoch, metrics):
        pass

    def finished(self, worker, label, status, detail):
        self.echo(f"[{status}] {label} {detail}".rstrip())

    def message(self, text):
        self.echo(text)
