"""Runs a study's pending points over the devices it is given.

One worker (``ablate.worker``) per device slot trains points through the shared trainer;
the main process is the only writer of the database. Workers send events (epochs, probes,
artifacts, notes, heartbeats, results) back, so a worker never holds a database connection.
Events are tuples ``(kind, worker, run_id, *payload)`` of plain, picklable values. A worker
is handed a group of points: one, or with ``--fuse`` up to N points of one fusion group
(``ablate.fusion``), each claimed here on its own.

With one CPU device the worker is a thread (no process start-up, same code path); with
CUDA devices, one spawned process per device, each with pipes of its own: a worker killed
mid-message damages only its own pipes. A dead worker is restarted and its point resumed.

Crash safety, in short:

- a point is claimed in a transaction before it trains (``Store.claim``), and every later
  write names the claim, so a point taken over by another runner is never written twice;
- the worker beats every ``HEARTBEAT_S`` from its own thread, and the run records host and
  pid, so the next ``ablate run`` or ``ablate status`` knows a run whose runner is gone;
- after every epoch but the last the worker writes a checkpoint (model, optimizer,
  schedule, RNG states) atomically beside the database; a re-queued point resumes from it
  and ends, on the CPU, with the numbers of a run that never stopped;
- Ctrl-C sets a flag (no exception can cut a write in half): the first stops the workers
  after their current step, the second stops at once; unfinished points go back to pending.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from ablate import data as datasets
from ablate.checkpoints import checkpoint_key, checkpoint_path, remove_checkpoint, test_pause
from ablate.config import ConfigError
from ablate.task import Task
from ablate.worker import _first_line, _forward, _process_main, _TaskPipe, _versions, worker_loop

MAX_WORKER_DEATHS = 3  # a device slot whose worker dies this often in a row is given up


class DeviceError(ConfigError):
    pass


def device_record(device: str) -> str:
    """What a run records of its device: a CUDA device's name beside its index ("cuda:0
    (NVIDIA H200)"), so a figure's caption can say what trained it; else the device as given."""
    if device.startswith("cuda") and torch.cuda.is_available():
        try:
            return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except (RuntimeError, AssertionError, ValueError):
            return device
    return device


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


# ------------------------------------------------------------------- the main loop


class Reporter(Protocol):
    def started(self, total: int, skipped: int, workers: list[str]) -> None: ...
    def claimed(self, worker: int, label: str, epochs: int) -> None: ...
    # ``label``: the run's point and seed; a worker training a fused group trains several runs.
    def epoch(self, worker: int, label: str, epoch: int, metrics: dict[str, float]) -> None: ...
    def finished(self, worker: int, label: str, status: str, detail: str) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)  # status -> runs this invocation ended
    interrupted: bool = False
    out_of_time: bool = False  # the deadline passed: the workers stopped after their step
    errors: list[str] = field(default_factory=list)  # trouble that is no point's result (workers given up)

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


@dataclass
class _Slot:
    wid: int
    device: str
    handle: threading.Thread | Any  # a thread or a spawned process
    inbox: Any  # .put(task | None)
    cancel: Any  # shared int: the id of a run to give up
    forwarder: threading.Thread | None = None
    deaths: int = 0  # in a row, without a finished point between
    retired: bool = False


@contextmanager
def _sigint_ignored():
    """A spawned child inherits an ignored SIGINT, so Ctrl-C cannot kill it while it starts."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Runner:
    """Drives the workers for one study; ``store`` is the only database handle."""

    def __init__(
        self,
        store,
        study_id: int,
        devices: list[str],
        data_source: str | None,
        reporter: Reporter,
        preloaded: dict[str, datasets.Dataset] | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        keep_checkpoints: bool = False,
        processes: bool | None = None,
        groups: list[list[int]] | None = None,
        fuse: int = 1,
        compile: bool = False,
    ):
        """``groups``: run ids that may train fused (``ablate.fusion.group``); a worker is given
        up to ``fuse`` pending runs of one group at a time. ``compile``: see ``worker_loop``."""
        self.store, self.study_id, self.devices = store, study_id, devices
        self._records: dict[str, str] = {}  # device -> what its runs record (device_record)
        self.fuse, self.compile = fuse, compile
        self._mates = {rid: g for g in (groups or []) for rid in g}
        self.data_source, self.reporter, self.preloaded = data_source, reporter, preloaded
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.keep_checkpoints = keep_checkpoints
        # Threads for one CPU device; processes otherwise (or when asked, as tests do).
        self.processes = (devices != ["cpu"]) if processes is None else processes
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._ctx = mp.get_context("spawn")
        self._events: queue.Queue = queue.Queue()
        self._stop = self._ctx.RawValue("b", 0)
        self._interrupts = 0
        self._slots: list[_Slot] = []
        self._lost: set[int] = set()  # runs another runner took over: their word is ignored
        self._deaths: Counter[int] = Counter()  # run id -> workers that died training it

    # ----------------------------------------------------------------- workers

    def _start(self, wid: int, device: str) -> _Slot:
        cancel = self._ctx.RawValue("q", 0)
        if not self.processes:
            inbox: queue.Queue = queue.Queue()
            args = (
                wid,
                device,
                self.data_source,
                inbox,
                self._events,
                self._stop,
                cancel,
                self.preloaded,
                False,
                self.compile,
            )
            t = threading.Thread(target=worker_loop, args=args, daemon=True, name=f"ablate-worker-{wid}")
            t.start()
            return _Slot(wid, device, t, inbox, cancel)
        task_r, task_w = self._ctx.Pipe(duplex=False)
        event_r, event_w = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(
            target=_process_main,
            daemon=True,
            name=f"ablate-worker-{wid}",
            args=(wid, device, self.data_source, task_r, event_w, self._stop, cancel, self.compile),
        )
        with _sigint_ignored():
            p.start()
        task_r.close()  # the child has its own copies; ours would keep EOF from arriving
        event_w.close()
        fwd = threading.Thread(target=_forward, args=(event_r, self._events), daemon=True, name=f"ablate-forward-{wid}")
        fwd.start()
        return _Slot(wid, device, p, _TaskPipe(task_w), cancel, fwd)

    def _shutdown(self) -> None:
        for slot in self._slots:
            slot.inbox.put(None)
        for slot in self._slots:
            if isinstance(slot.handle, threading.Thread):
                # Let it finish unwinding (freeing its model and tensors) before the process
                # exits: torch torn down under a running thread can abort the interpreter.
                # It stops at its next step, so a short wait is enough; a stuck one stays a
                # daemon and goes with the process.
                slot.handle.join(timeout=10)
                continue
            slot.handle.join(timeout=5)
            if slot.handle.is_alive():
                slot.handle.terminate()
                slot.handle.join(timeout=5)

    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigint(signum, frame):  # only flags: no exception lands in the middle of a write
            self._interrupts += 1
            self._stop.value = 1  # the workers see it after their current step

        return signal.signal(signal.SIGINT, on_sigint)

    # ---------------------------------------------------------------- the loop

    def run(self, run_ids: set[int], total: int, skipped: int, deadline: float | None = None) -> Outcome:
        """Train ``run_ids`` until done, a Ctrl-C, or ``deadline`` (``time.monotonic()``):
        then the workers stop after their current step and the points go back to pending."""
        outcome = Outcome()
        busy: dict[int, dict[int, Task]] = {}  # worker -> its group: run id -> task
        previous = self._install_sigint()
        try:
            self._slots = [self._start(wid, device) for wid, device in enumerate(self.devices)]
            self.reporter.started(total, skipped, self.devices)
            last_check = time.monotonic()
            told = False
            while self._interrupts < 2:
                if self._interrupts == 1 and not told:
                    self._stop.value, outcome.interrupted, told = 1, True, True
                    self.reporter.message("stopping after the current step; Ctrl-C again to stop at once")
                if deadline is not None and not outcome.out_of_time and time.monotonic() >= deadline:
                    self._stop.value, outcome.out_of_time = 1, True
                    self.reporter.message(
                        "the time budget is spent: stopping after the current step; "
                        "the unfinished points stay pending, to resume"
                    )
                if not self._stop.value:
                    self._dispatch(run_ids, busy)
                    if not busy and any(not s.retired and not s.handle.is_alive() for s in self._slots):
                        self._check_workers(busy, outcome)  # an idle worker died: restart it first
                        self._dispatch(run_ids, busy)
                if not busy:
                    break
                try:
                    self._handle(self._events.get(timeout=0.25), busy, outcome)
                except queue.Empty:
                    pass
                if time.monotonic() - last_check >= 1.0:
                    self._check_workers(busy, outcome)
                    last_check = time.monotonic()
            if self._interrupts:
                outcome.interrupted = True
            if self._interrupts >= 2:
                unfinished = sum(map(len, busy.values()))
                self.reporter.message(f"stopped at once; {unfinished} unfinished point(s) go back to pending")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self._stop.value = 1
            for task in [t for group in busy.values() for t in group.values()]:  # back to pending, to resume
                if task.run_id not in self._lost:
                    self._quietly(self.store.release, task.run_id, task.token)
            self._shutdown()
        return outcome

    def _quietly(self, fn, *args, **kwargs) -> None:
        """For the clean-up after an error: what fails here must not hide that error."""
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.reporter.message(
                f"could not put a run back in the queue ({_first_line(e)}); "
                "the next ablate run finds it stale and re-queues it"
            )

    def _claim_group(self, device: str, run_ids: set[int]) -> list:
        """The oldest pending run, and up to ``fuse - 1`` pending runs of its group; each
        member is claimed on its own, as a lone run is."""
        if device not in self._records:
            self._records[device] = device_record(device)
        device = self._records[device]
        claim = self.store.claim(self.study_id, device, self.host, self.pid, only=run_ids)
        if claim is None:
            return []
        claims = [claim]
        mates = {r for r in self._mates.get(claim.run_id, ()) if r in run_ids} - {claim.run_id}
        while mates and len(claims) < self.fuse:
            more = self.store.claim(self.study_id, device, self.host, self.pid, only=mates)
            if more is None:
                break
            claims.append(more)
            mates.discard(more.run_id)
        return claims

    def _dispatch(self, run_ids: set[int], busy: dict[int, dict[int, Task]]) -> None:
        for slot in self._slots:
            if slot.retired or slot.wid in busy or not slot.handle.is_alive():
                continue
            claims = self._claim_group(slot.device, run_ids)
            if not claims:
                return
            group = []
            for claim in claims:
                key = checkpoint_key(claim.run_id, claim.created_at)
                path = checkpoint_path(self.checkpoint_dir, claim.run_id, key) if self.checkpoint_dir else None
                group.append(
                    Task(
                        claim.run_id,
                        claim.token,
                        claim.config,
                        claim.label,
                        claim.config_hash,
                        claim.seed,
                        str(path) if path else None,
                        claim.data_fp,
                        key,
                    )
                )
            busy[slot.wid] = {t.run_id: t for t in group}
            slot.cancel.value = 0
            slot.inbox.put(group)
            label = f"{claims[0].label} seed={claims[0].seed}" + (
                f" (+{len(claims) - 1} fused)" if len(claims) > 1 else ""
            )
            self.reporter.claimed(slot.wid, label, claims[0].config.get("epochs", 0))

    def _handle(self, event: tuple, busy: dict[int, dict[int, Task]], outcome: Outcome) -> None:
        kind, wid, run_id, *rest = event
        task = busy.get(wid, {}).get(run_id)
        if task is None:
            return  # late word of a point this runner already gave back
        if kind in ("done", "failed"):
            del busy[wid][run_id]
            if not busy[wid]:
                del busy[wid]
            self._slots[wid].deaths = 0
            if run_id not in self._lost:
                self._end(wid, task, kind, rest, outcome)
            return
        if run_id in self._lost:
            return
        store, token = self.store, task.token
        ok = True
        if kind == "beat":
            ok = store.heartbeat(run_id, token)
        elif kind == "resumed":
            epoch, history = rest
            ok = store.resume(run_id, epoch, history, token)
            if epoch and ok:
                self.reporter.message(f"{task.label}: resuming from epoch {epoch}")
                self.reporter.epoch(wid, _name(task), epoch, history[-1][1])
        elif kind == "epoch":
            epoch, metrics = rest
            ok = store.record_epoch(run_id, epoch, metrics, token)
            self.reporter.epoch(wid, _name(task), epoch, metrics)
        elif kind == "probe":
            step, values = rest
            ok = store.record_metrics(run_id, step, values, token)
        elif kind == "artifact":
            name, data, dtype, shape = rest
            ok = store.put_artifact(run_id, name, data, dtype, shape, token)
        elif kind == "note":
            (note,) = rest
            ok = store.add_note(run_id, note, token)
            self.reporter.message(f"{task.label}: {note}")
        elif kind == "message":
            self.reporter.message(f"{task.label}: {rest[0]}")
        elif kind == "fused":  # on record, not on screen: every member of every group says it
            (ids,) = rest
            mates = ", ".join(str(i) for i in ids if i != run_id)
            ok = store.add_note(run_id, f"attempt {token}: trained fused with run(s) {mates}", token)
        elif kind == "step":  # progress within an epoch: for the display only
            if hasattr(self.reporter, "step"):
                self.reporter.step(wid, *rest)
        if not ok:
            self._lose(wid, task)

    def _lose(self, wid: int, task: Task) -> None:
        """Another runner re-queued this point (it found ours silent) and may train it now:
        give it up; the claim check has kept and keeps our writes out."""
        self._lost.add(task.run_id)
        self._slots[wid].cancel.value = task.run_id
        self.reporter.message(f"{task.label}: taken over by another runner; giving it up")

    def _end(self, wid: int, task: Task, kind: str, rest: list, outcome: Outcome) -> None:
        run_id, token = task.run_id, task.token
        if kind == "failed":
            (error,) = rest
            if self.store.finish(run_id, "failed", error=error, versions=_versions(), token=token):
                self._drop_checkpoint(task)
                outcome.add("failed")
                self.reporter.finished(wid, _name(task), "failed", error)
            return
        status, metrics, wall_s, versions = rest
        if status == "stopped":
            self.store.release(run_id, token)  # keeps its checkpoint: the next run resumes it
            return
        test_pause("finish")
        if self.store.finish(run_id, status, metrics, wall_s, versions=versions, token=token):
            self._drop_checkpoint(task)
            outcome.add(status)
            acc = metrics.get("test_acc")
            self.reporter.finished(wid, _name(task), status, f"test acc {acc:.4f}" if acc is not None else "")
        test_pause("between")

    def _drop_checkpoint(self, task: Task) -> None:
        if task.checkpoint is not None and not self.keep_checkpoints:
            why = remove_checkpoint(Path(task.checkpoint))
            if why:
                self.reporter.message(f"{task.label}: {why}")

    def _check_workers(self, busy: dict[int, dict[int, Task]], outcome: Outcome) -> None:
        """A worker that died (killed, out of host memory, a segfault) is restarted, and its
        point re-queued to resume from its checkpoint; a point that kills two workers fails."""
        for i, slot in enumerate(self._slots):
            if slot.retired or slot.handle.is_alive():
                continue
            if slot.forwarder is not None:  # what it said before it died comes first
                slot.forwarder.join(timeout=5)
                self._drain(busy, outcome)
            code = getattr(slot.handle, "exitcode", None)
            what = f"worker {slot.wid} ({slot.device}) died" + (f" (exit code {code})" if code is not None else "")
            for task in busy.pop(slot.wid, {}).values():
                if task.run_id in self._lost:
                    continue
                self._deaths[task.run_id] += 1
                if self._deaths[task.run_id] >= 2:
                    error = f"{what}; the second worker to die training this point"
                    if self.store.finish(task.run_id, "failed", error=error, versions=_versions(), token=task.token):
                        self._drop_checkpoint(task)
                        outcome.add("failed")
                        self.reporter.finished(slot.wid, _name(task), "failed", error)
                else:
                    self.store.release(task.run_id, task.token, note=f"attempt {task.token}: {what}; re-queued")
                    self.reporter.message(f"{what} while training {task.label}; the point resumes from its checkpoint")
            slot.deaths += 1
            if slot.deaths >= MAX_WORKER_DEATHS:
                slot.retired = True
                error = f"{what}, {slot.deaths} times in a row; {slot.device} is given up"
                outcome.errors.append(error)
                self.reporter.message(error)
                continue
            self.reporter.message(f"{what}; starting a new one")
            new = self._start(slot.wid, slot.device)
            new.deaths = slot.deaths
            self._slots[i] = new

    def _drain(self, busy: dict[int, dict[int, Task]], outcome: Outcome) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle(event, busy, outcome)


def _name(task: Task) -> str:
    return f"{task.label} seed={task.seed}"


class QuietReporter:
    """Prints a line per epoch and per finished point, each naming the point and its seed;
    for pipes, logs and tests."""

    def __init__(self, echo: Callable[[str], None] = print):
        self.echo = echo
        self.epochs: dict[int, int] = {}  # worker -> the epochs of what it trains

    def started(self, total, skipped, workers):
        self.echo(f"{total} points to train on {', '.join(workers)}; {skipped} already done")

    def claimed(self, worker, label, epochs):
        self.epochs[worker] = epochs

    def epoch(self, worker, label, epoch, metrics):
        acc = metrics.get("test_acc")
        self.echo(
            f"{label}: epoch {epoch}/{self.epochs.get(worker, '?')}"
            + (f" test acc {acc:.4f}" if acc is not None else "")
        )

    def finished(self, worker, label, status, detail):
        self.echo(f"[{status}] {label} {detail}".rstrip())

    def message(self, text):
        self.echo(text)
