"""A worker: trains the groups of points it is handed, through the one trainer, and says
what happened as events (epochs, probes, artifacts, notes, heartbeats, results) for the
runner, the only writer of the database. A thread on one CPU, a spawned process per CUDA
device (``ablate.scheduler``), or a Ray task (``ablate.ray_runner``).

A group is one point, or with ``--fuse`` up to N points of one fusion group
(``ablate.fusion``), each claimed on its own. Those that start from the same epoch train as
one fused step (``ablate.train.train_group``); every event still names one run, and each
member ends on its own. Out of memory, a group is split in two halves (from the members'
last checkpoints) before a lone run's batch is halved; any other failure of a fused group
retries each member alone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import ablate
from ablate import data as datasets
from ablate.checkpoints import checkpoint_after_s, load_checkpoint, remove_checkpoint, save_checkpoint
from ablate.config import ConfigError, RunConfig, from_dict
from ablate.models.registry import code_hash, code_version
from ablate.store import HEARTBEAT_S
from ablate.task import Task
from ablate.train import Hooks, RunResult, steps_per_epoch, train, train_group

PROGRESS_S = 1.0  # a worker reports its step within an epoch at most this often


def _versions(model: str | None = None) -> dict[str, str]:
    """What code trained a run: torch, ablate, and the model's own (a plugin's file or package)."""
    out = {"torch": torch.__version__, "ablate": ablate.__version__}
    if model is not None:
        try:
            out["code"] = code_version(model)
        except ConfigError:  # a model this process cannot build never trained here
            pass
    return out


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


def worker_loop(
    wid: int,
    device: str,
    data_source: str | None,
    tasks,
    events,
    stop,
    cancel,
    preloaded: dict[str, datasets.Dataset] | None = None,
    watch_parent: bool = False,
    compile: bool = False,
) -> None:
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
            raw = (preloaded or {}).get(name) or datasets.load_key(name, data_source)
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
        m.history = [(int(e), dict(mt)) for e, mt in m.state["meta"]["history"]] + [
            (m.state["epoch"], dict(m.state["metrics"]))
        ]
    events.put(("resumed", wid, rid, m.state["epoch"] if m.state else 0, m.history))
    return m


def _run_group(
    wid: int,
    device: str,
    group: list[Task],
    dataset: Callable[[str], datasets.Dataset],
    events,
    should_stop: Callable[[int], bool],
    compile: bool = False,
) -> None:
    first = from_dict(group[0].config).data
    data = dataset(datasets.data_key(first.dataset, first.image_size))  # one fusion group: one data set
    fit = []
    for task in group:
        if task.data_fp is not None and data.fingerprint != task.data_fp:
            # A worker on another machine (Ray) read another copy at the same --data path.
            error = (
                f"DataError: this worker's data (fingerprint {data.fingerprint}) is not the data the run "
                f"was planned on ({task.data_fp}); give every machine the same copy"
            )
            events.put(("failed", wid, task.run_id, error))
        elif _code_changed(task):
            events.put(("failed", wid, task.run_id, _code_changed(task)))
        else:
            fit.append(task)
    members = [_prepare(wid, task, events) for task in fit]
    parts: dict[tuple[int, int], list[_Member]] = {}
    for m in members:  # a member that resumes from another epoch trains apart
        parts.setdefault(m.start, []).append(m)
    for part in parts.values():
        _train(wid, device, part, data, events, should_stop, compile)


def _code_changed(task: Task) -> str | None:
    """Why this worker's model code is not the code the run was planned with (its config's
    ``code``): a plugin file edited between the plan and the claim. None: the same."""
    cfg = from_dict(task.config)
    if not cfg.code:
        return None
    try:
        here = code_hash(cfg.model.name)
    except ConfigError as e:
        return f"ConfigError: {e}"
    if here == cfg.code:
        return None
    return (
        f"ConfigError: model '{cfg.model.name}' has another source here (hash {here}) than when the run was "
        f"planned ({cfg.code}); run the study again to plan the edited model as a new variant"
    )


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
        note = (
            f"out of memory with {len(members)} runs fused ({why}); retried from the last checkpoint "
            f"in groups of {len(parts[0])} and {len(parts[1])}"
        )
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
                retry_note = (
                    f"out of memory at batch size {m.cfg.batch_size} ({_first_line(e)}); "
                    f"retried from scratch at batch size {half}"
                )
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


def _hooks(
    wid: int, m: _Member, events, should_stop: Callable[[int], bool], progressed: list[bool], steps: int
) -> Hooks:
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
            "run_id": rid,
            "config_hash": task.config_hash,
            "seed": task.seed,
            "key": task.checkpoint_key,
            "batch_size": m.cfg.batch_size,
            "history": [[e, mt] for e, mt in seen],
        }
        try:
            save_checkpoint(m.path, snapshot)
        except OSError as e:
            events.put(
                (
                    "message",
                    wid,
                    rid,
                    f"cannot write checkpoint {m.path} ({_first_line(e)}); "
                    "the run goes on, but cannot resume from this epoch",
                )
            )

    def on_probe(step: int, values: dict[str, float]) -> None:
        progressed[0] = True
        events.put(("probe", wid, rid, int(step), {k: float(v) for k, v in values.items()}))

    def on_artifact(name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        events.put(("artifact", wid, rid, name, array.tobytes(), str(array.dtype), list(array.shape)))

    def on_end(result: RunResult) -> None:
        m.ended = True
        events.put(("done", wid, rid, result.status, result.metrics, result.wall_s, _versions(m.cfg.model.name)))

    return Hooks(
        epoch=on_epoch,
        probe=on_probe,
        artifact=on_artifact,
        checkpoint=on_checkpoint if m.path is not None else None,
        checkpoint_after_s=checkpoint_after_s(),  # a short run is cheaper to redo than to checkpoint
        should_stop=stop_after_step,
        end=on_end,
    )


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
    worker_loop(
        wid,
        device,
        data_source,
        _PipeTasks(task_conn),
        _PipeEvents(event_conn),
        stop,
        cancel,
        watch_parent=True,
        compile=compile,
    )


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
