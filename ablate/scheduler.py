"""Runs a study's pending points over the devices it is given.

One worker per device slot trains points through the shared trainer; the main process is
the only writer of the database. Workers send events (epochs, probes, artifacts, notes,
heartbeats, results) back, so a worker never holds a database connection. Events are
tuples ``(kind, worker, run_id, *payload)`` of plain, picklable values.

A worker is handed a group of points: one, or with ``--fuse`` up to N points of one fusion
group (``ablate.fusion``), each claimed on its own. Those that start from the same epoch
train as one fused step (``ablate.train.train_group``); every event still names one run,
and each member ends on its own. Out of memory, a group is split in two halves (from the
members' last checkpoints) before a lone run's batch is halved; any other failure of a
fused group retries each member alone.

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

import hashlib
import io
import multiprocessing as mp
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

import ablate
from ablate import data as datasets
from ablate.config import ConfigError, RunConfig, from_dict
from ablate.store import HEARTBEAT_S
from ablate.train import Hooks, RunResult, steps_per_epoch, train, train_group

MAX_WORKER_DEATHS = 3  # a device slot whose worker dies this often in a row is given up
PROGRESS_S = 1.0  # a worker reports its step within an epoch at most this often
TEST_PAUSE_ENV = "ABLATE_TEST_PAUSE"


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


def _test_pause(stage: str, epoch: int | None = None) -> None:
    """Sleep where ``ABLATE_TEST_PAUSE`` says, so the reliability tests can kill a runner at
    a chosen moment: ``stage=seconds`` or ``stage@epoch=seconds``, comma-separated. Stages:
    ``checkpoint`` (halfway through writing a checkpoint file), ``finish`` (a point's last
    epoch recorded, the point not yet marked done), ``between`` (a point done, the next not
    yet claimed). Unset, as it always is outside the tests, it costs one dict lookup."""
    spec = os.environ.get(TEST_PAUSE_ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, seconds = item.partition("=")
        name, _, at = where.strip().partition("@")
        if name == stage and (not at or (epoch is not None and int(at) == epoch)):
            time.sleep(float(seconds))


# ------------------------------------------------------------------- checkpoints


def checkpoint_key(run_id: int, created_at: datetime | None) -> str:
    """What ties a checkpoint to one run of one database: its id and the moment its row was
    made (kept in the database, so it survives the database being moved). Two databases
    side by side, or one folder given to both, never load or remove each other's."""
    stamp = created_at.isoformat() if created_at is not None else ""
    return hashlib.sha256(f"{run_id}|{stamp}".encode()).hexdigest()[:12]


def checkpoint_path(directory: str | Path, run_id: int, key: str = "") -> Path:
    return Path(directory) / (f"run-{run_id}-{key}.pt" if key else f"run-{run_id}.pt")


def remove_checkpoint(path: Path) -> str | None:
    """The checkpoint and any temporary file an interrupted write left beside it. Returns
    why one could not be removed (a directory in the way, no permission), or None: a
    leftover file is noted, never a reason to stop a runner."""
    try:
        for p in (path, *path.parent.glob(f"{path.name}.*.tmp")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    except OSError as e:
        return f"cannot remove checkpoint {path} ({_first_line(e)}); remove it by hand"
    return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file beside it, flushed to disk, renamed over the old
    one. A crash at any point leaves the previous checkpoint or the new one, never half."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            _test_pause("checkpoint", state.get("epoch"))
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself survive the machine going away
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: Path, task: Task) -> tuple[dict[str, Any] | None, str | None]:
    """The state to resume ``task`` from, or None with the reason it starts from scratch.

    Loads tensors and plain containers only (``weights_only``): a checkpoint file never
    runs code. One that is unreadable or made for another run is ignored, not fatal."""
    if not path.exists():
        return None, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        meta = state["meta"]
        if (meta["run_id"], meta["config_hash"], meta["seed"]) != (task.run_id, task.config_hash, task.seed):
            return None, f"checkpoint {path} was made for another run; starting from scratch"
        if meta.get("key", "") != task.checkpoint_key:
            return None, f"checkpoint {path} was made for a run of another database; starting from scratch"
        if not isinstance(state["epoch"], int) or state["epoch"] < 1:
            raise ValueError(f"epoch {state['epoch']!r}")
        epochs = task.config.get("epochs", 0)
        if state["epoch"] >= epochs:  # a finished run keeps no checkpoint: this one is forged or foreign
            return None, (f"checkpoint {path} is at epoch {state['epoch']}, not below the run's {epochs} epochs; "
                          "starting from scratch")
        return state, None
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, train from scratch
        return None, f"checkpoint {path} is unreadable ({_first_line(e)}); starting from scratch"


# ---------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class Task:
    run_id: int
    token: int  # the claim's number: the store refuses writes of a claim that was superseded
    config: dict[str, Any]
    label: str
    config_hash: str = ""
    seed: int = 0
    checkpoint: str | None = None  # this run's checkpoint file; None: no checkpoints
    data_fp: str | None = None  # the data it was planned on; the worker's must be the same
    checkpoint_key: str = ""  # checkpoint_key(): a checkpoint made under another is not loaded


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "ablate": ablate.__version__}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _error_text(e: BaseException) -> str:
    """The message and where it came from: the innermost frame of the traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


def _free_device_memory(device: str) -> None:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker_loop(wid: int, device: str, data_source: str | None, tasks, events, stop, cancel,
                preloaded: dict[str, datasets.Dataset] | None = None, watch_parent: bool = False,
                compile: bool = False) -> None:
    """Train groups of tasks from ``tasks`` (a list each) until a None arrives, reporting on
    ``events``. A group of several trains fused where it may (``ablate.train.train_group``).

    ``stop`` (shared, set by Ctrl-C) stops every run after its current step; ``cancel``
    holds the id of a run this worker must give up (another runner took it over). A
    process worker (``watch_parent``) exits when the runner that started it is gone.
    ``compile``: torch.compile the training step (CUDA only).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    parent = mp.parent_process() if watch_parent else None
    cache: dict[str, datasets.Dataset] = {}
    current: list[list[int]] = [[]]
    done = threading.Event()

    def beat() -> None:
        # Its own thread, so a run beats inside a long epoch and while its data loads.
        last = time.monotonic()
        while not done.wait(min(1.0, HEARTBEAT_S)):
            if parent is not None and not parent.is_alive():
                os._exit(3)  # orphaned: the runner was killed, and nobody reads our events
            if current[0] and time.monotonic() - last >= HEARTBEAT_S:
                for run_id in current[0]:  # a group's members all beat, those waiting their turn too
                    events.put(("beat", wid, run_id))
                last = time.monotonic()

    def dataset(name: str) -> datasets.Dataset:
        if name not in cache:
            raw = (preloaded or {}).get(name) or datasets.load("synthetic" if name == "synthetic" else data_source)
            datasets.fingerprint(raw)  # on the host copy, once; to() carries it
            cache[name] = raw.to(device)
        return cache[name]

    def should_stop(run_id: int) -> bool:
        return bool(stop.value) or cancel.value == run_id

    threading.Thread(target=beat, daemon=True, name=f"ablate-beat-{wid}").start()
    try:
        while True:
            group = tasks.get()
            if group is None:
                return
            if isinstance(group, Task):  # one task alone is a group of one
                group = [group]
            current[0] = [t.run_id for t in group]
            try:
                _run_group(wid, device, group, dataset, events, should_stop, compile)
            except Exception as e:  # one group's failure is a result; the study goes on
                for task in group:  # the runner ignores word of members it has already closed
                    events.put(("failed", wid, task.run_id, _error_text(e)))
            finally:
                current[0] = []
    finally:
        done.set()


@dataclass
class _Member:
    """One task of a group, as its worker sees it: its config and where it resumes from."""

    task: Task
    cfg: RunConfig
    path: Path | None
    state: dict[str, Any] | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    halved: bool = False  # its batch size is half the config's, after running out of memory
    ended: bool = False  # its result has been sent

    @property
    def start(self) -> tuple[int, int]:
        """Members fuse only with members that start at the same epoch and batch size."""
        return (self.state["epoch"] if self.state else 0, self.cfg.batch_size)


def _prepare(wid: int, task: Task, events) -> _Member:
    """The task's checkpoint read (or found unusable), and the runner told where it starts."""
    rid = task.run_id
    m = _Member(task, from_dict(task.config), Path(task.checkpoint) if task.checkpoint else None)
    why = None
    if m.path is not None:
        for tmp in m.path.parent.glob(f"{m.path.name}.*.tmp"):  # left by a write that was cut short
            tmp.unlink(missing_ok=True)
        m.state, why = load_checkpoint(m.path, task)
    if why:
        events.put(("note", wid, rid, why))
    if m.state is not None and m.state["meta"].get("batch_size") != m.cfg.batch_size:
        if m.state["meta"].get("batch_size") == m.cfg.batch_size // 2:  # an earlier attempt ran out of memory
            m.cfg, m.halved = replace(m.cfg, batch_size=m.cfg.batch_size // 2), True
        else:
            m.state = None
            events.put(("note", wid, rid, f"checkpoint {m.path} has another batch size; starting from scratch"))
    if m.state is not None:
        m.history = [(int(e), dict(mt)) for e, mt in m.state["meta"]["history"]] + [(m.state["epoch"], dict(m.state["metrics"]))]
    events.put(("resumed", wid, rid, m.state["epoch"] if m.state else 0, m.history))
    return m


def _run_group(wid: int, device: str, group: list[Task], dataset: Callable[[str], datasets.Dataset], events,
               should_stop: Callable[[int], bool], compile: bool = False) -> None:
    data = dataset(from_dict(group[0].config).data.dataset)  # one fusion group: one data set
    fit = []
    for task in group:
        if task.data_fp is not None and data.fingerprint != task.data_fp:
            # A worker on another machine (Ray) read another copy at the same --data path.
            error = (f"DataError: this worker's data (fingerprint {data.fingerprint}) is not the data the run "
                     f"was planned on ({task.data_fp}); give every machine the same copy")
            events.put(("failed", wid, task.run_id, error))
        else:
            fit.append(task)
    members = [_prepare(wid, task, events) for task in fit]
    parts: dict[tuple[int, int], list[_Member]] = {}
    for m in members:  # a member that resumes from another epoch trains apart
        parts.setdefault(m.start, []).append(m)
    for part in parts.values():
        _train(wid, device, part, data, events, should_stop, compile)


def _train(wid, device, members: list[_Member], data, events, should_stop, compile) -> None:
    """Train the members fused; out of memory, in two halves; any other failure, each alone."""
    if len(members) == 1:
        m = members[0]
        try:
            _run_alone(wid, device, m, data, events, should_stop, compile)
        except Exception as e:  # this member's failure is its result; its mates go on
            m.ended = True
            events.put(("failed", wid, m.task.run_id, _error_text(e)))
        return
    ids = [m.task.run_id for m in members]
    for m in members:
        events.put(("fused", wid, m.task.run_id, ids))
    try:
        _attempt(wid, device, members, data, events, should_stop, [False], compile)
        return
    except Exception as e:
        oom, why = _is_oom(e), _first_line(e)
    # Outside the except block: the traceback, and the tensors its frames hold, are gone.
    _free_device_memory(device)
    left = [m for m in members if not m.ended]
    if oom:
        half = (len(left) + 1) // 2
        parts = [left[:half], left[half:]]
        note = (f"out of memory with {len(members)} runs fused ({why}); retried from the last checkpoint "
                f"in groups of {len(parts[0])} and {len(parts[1])}")
    else:
        parts = [[m] for m in left]
        note = f"fused training failed ({why}); each run retried alone from its last checkpoint"
    for m in left:
        events.put(("note", wid, m.task.run_id, note))
    again = [_prepare(wid, m.task, events) for m in left]
    by_id = {m.task.run_id: m for m in again}
    for part in parts:
        if part:
            _train(wid, device, [by_id[m.task.run_id] for m in part], data, events, should_stop, compile)


def _run_alone(wid, device, m: _Member, data, events, should_stop, compile) -> None:
    rid = m.task.run_id
    while True:
        progressed = [False]
        retry_note = None
        try:
            _attempt(wid, device, [m], data, events, should_stop, progressed, compile)
            return
        except Exception as e:
            if _is_oom(e) and not m.halved and m.cfg.batch_size > 1:
                half = m.cfg.batch_size // 2
                retry_note = (f"out of memory at batch size {m.cfg.batch_size} ({_first_line(e)}); "
                              f"retried from scratch at batch size {half}")
                m.cfg, m.halved = replace(m.cfg, batch_size=half), True
            elif m.state is not None and not progressed[0] and not _is_oom(e):
                retry_note = f"cannot resume from checkpoint {m.path} ({_first_line(e)}); starting from scratch"
            else:
                raise
        # Outside the except block: the traceback, and the tensors its frames hold, are gone.
        _free_device_memory(device)
        events.put(("note", wid, rid, retry_note))
        if m.path is not None:
            why = remove_checkpoint(m.path)
            if why:
                events.put(("message", wid, rid, why))
        m.state, m.history = None, []
        events.put(("resumed", wid, rid, 0, []))


def _attempt(wid, device, members: list[_Member], data, events, should_stop, progressed, compile) -> None:
    steps = steps_per_epoch(members[0].cfg, len(data.train_y))
    hooks = [_hooks(wid, m, events, should_stop, progressed, steps) for m in members]
    options = {"compile": True} if compile else {}
    if len(members) == 1:
        m = members[0]
        results = [train(m.cfg, data, device, hooks[0], resume=m.state, **options)]
    else:
        results = train_group([m.cfg for m in members], data, device, hooks, [m.state for m in members], **options)
    for m, h, result in zip(members, hooks, results):
        if not m.ended:  # a trainer that returns without calling the hook
            h.end(result)


def _hooks(wid: int, m: _Member, events, should_stop: Callable[[int], bool], progressed: list[bool],
           steps: int) -> Hooks:
    task, rid = m.task, m.task.run_id
    seen = list(m.history)
    # Steps within the epoch, counted where the trainer asks whether to stop (after every step).
    tick = {"epoch": (m.state["epoch"] if m.state else 0) + 1, "step": 0, "at": time.monotonic()}

    def stop_after_step() -> bool:
        tick["step"] += 1
        if time.monotonic() - tick["at"] >= PROGRESS_S:
            events.put(("step", wid, rid, tick["epoch"], tick["step"], steps))
            tick["at"] = time.monotonic()
        return should_stop(rid)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        progressed[0] = True
        seen.append((epoch, dict(metrics)))
        tick.update(epoch=epoch + 1, step=0)
        events.put(("epoch", wid, rid, epoch, dict(metrics)))

    def on_checkpoint(snapshot: dict[str, Any]) -> None:
        progressed[0] = True
        # The epoch this snapshot ends is reported right after it, so `seen` stops one short.
        snapshot["meta"] = {
            "run_id": rid, "config_hash": task.config_hash, "seed": task.seed, "key": task.checkpoint_key,
            "batch_size": m.cfg.batch_size, "history": [[e, mt] for e, mt in seen],
        }
        try:
            save_checkpoint(m.path, snapshot)
        except OSError as e:
            events.put(("message", wid, rid, f"cannot write checkpoint {m.path} ({_first_line(e)}); "
                                              "the run goes on, but cannot resume from this epoch"))

    def on_probe(step: int, values: dict[str, float]) -> None:
        progressed[0] = True
        events.put(("probe", wid, rid, int(step), {k: float(v) for k, v in values.items()}))

    def on_artifact(name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        events.put(("artifact", wid, rid, name, array.tobytes(), str(array.dtype), list(array.shape)))

    def on_end(result: RunResult) -> None:
        m.ended = True
        events.put(("done", wid, rid, result.status, result.metrics, result.wall_s, _versions()))

    return Hooks(epoch=on_epoch, probe=on_probe, artifact=on_artifact,
                 checkpoint=on_checkpoint if m.path is not None else None,
                 should_stop=stop_after_step, end=on_end)


class _PipeEvents:
    """A process worker's side of its event pipe: two threads (training, beat) send on it."""

    def __init__(self, conn):
        self.conn, self.lock = conn, threading.Lock()

    def put(self, event: tuple) -> None:
        with self.lock:
            self.conn.send(event)


class _PipeTasks:
    def __init__(self, conn):
        self.conn = conn

    def get(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):  # the runner is gone
            return None


def _process_main(wid, device, data_source, task_conn, event_conn, stop, cancel, compile=False) -> None:
    worker_loop(wid, device, data_source, _PipeTasks(task_conn), _PipeEvents(event_conn), stop, cancel,
                watch_parent=True, compile=compile)


def _forward(conn, events: queue.Queue) -> None:
    """Main-process thread: one process worker's events into the common queue, until EOF."""
    try:
        while True:
            events.put(conn.recv())
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


class _TaskPipe:
    def __init__(self, conn):
        self.conn = conn

    def put(self, task) -> None:
        try:
            self.conn.send(task)
        except OSError:  # the worker died; the liveness check re-queues the task
            pass


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

    def __init__(self, store, study_id: int, devices: list[str], data_source: str | None,
                 reporter: Reporter, preloaded: dict[str, datasets.Dataset] | None = None, *,
                 checkpoint_dir: str | Path | None = None, keep_checkpoints: bool = False,
                 processes: bool | None = None, groups: list[list[int]] | None = None, fuse: int = 1,
                 compile: bool = False):
        """``groups``: run ids that may train fused (``ablate.fusion.group``); a worker is given
        up to ``fuse`` pending runs of one group at a time. ``compile``: see ``worker_loop``."""
        self.store, self.study_id, self.devices = store, study_id, devices
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
            args = (wid, device, self.data_source, inbox, self._events, self._stop, cancel, self.preloaded, False,
                    self.compile)
            t = threading.Thread(target=worker_loop, args=args, daemon=True, name=f"ablate-worker-{wid}")
            t.start()
            return _Slot(wid, device, t, inbox, cancel)
        task_r, task_w = self._ctx.Pipe(duplex=False)
        event_r, event_w = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=_process_main, daemon=True, name=f"ablate-worker-{wid}",
                              args=(wid, device, self.data_source, task_r, event_w, self._stop, cancel, self.compile))
        with _sigint_ignored():
            p.start()
        task_r.close()  # the child has its own copies; ours would keep EOF from arriving
        event_w.close()
        fwd = threading.Thread(target=_forward, args=(event_r, self._events), daemon=True,
                               name=f"ablate-forward-{wid}")
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
                    self.reporter.message("the time budget is spent: stopping after the current step; "
                                          "the unfinished points stay pending, to resume")
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
            self.reporter.message(f"could not put a run back in the queue ({_first_line(e)}); "
                                  "the next ablate run finds it stale and re-queues it")

    def _claim_group(self, device: str, run_ids: set[int]) -> list:
        """The oldest pending run, and up to ``fuse - 1`` pending runs of its group; each
        member is claimed on its own, as a lone run is."""
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
                group.append(Task(claim.run_id, claim.token, claim.config, claim.label, claim.config_hash, claim.seed,
                                  str(path) if path else None, claim.data_fp, key))
            busy[slot.wid] = {t.run_id: t for t in group}
            slot.cancel.value = 0
            slot.inbox.put(group)
            label = f"{claims[0].label} seed={claims[0].seed}" + (
                f" (+{len(claims) - 1} fused)" if len(claims) > 1 else "")
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
        _test_pause("finish")
        if self.store.finish(run_id, status, metrics, wall_s, versions=versions, token=token):
            self._drop_checkpoint(task)
            outcome.add(status)
            acc = metrics.get("test_acc")
            self.reporter.finished(wid, _name(task), status, f"test acc {acc:.4f}" if acc is not None else "")
        _test_pause("between")

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
        self.echo(f"{label}: epoch {epoch}/{self.epochs.get(worker, '?')}"
                  + (f" test acc {acc:.4f}" if acc is not None else ""))

    def finished(self, worker, label, status, detail):
        self.echo(f"[{status}] {label} {detail}".rstrip())

    def message(self, text):
        self.echo(text)
