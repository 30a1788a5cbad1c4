"""Grid points as Ray tasks: a study spread over a Ray cluster instead of one machine.

The local ``Runner`` does everything but start workers: it claims each point, writes every
event to the database (this process stays its only writer) and applies the same claim,
heartbeat and resume rules. Here a worker slot is a Ray task instead of a thread or a
process, and events travel through one small actor (``_Hub``) instead of a pipe, so the
database is whole even when the workers' disks are not shared. The hub is kept on the
driver's node, so it outlives any other node.

A task asks for one CPU and, on a GPU cluster, a share of a GPU (``1 / per_gpu``), so Ray
packs small models several to a GPU. A task trains one point or, with ``--fuse``, a group of
points in one fused step, exactly as a local worker does (``worker_loop`` is shared). A worker that dies is retried by Ray
(``MAX_RETRIES``); its retry resumes from the run's checkpoint when it lands where that
was written, else starts over. A task Ray gives up on counts as a dead worker, as in the
local backend: re-queued once, then failed. A retry of a task whose point has since been
handed to another slot sees that it is no longer the hub's current task and stops.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ablate import data as datasets
from ablate import plugins
from ablate.config import ConfigError
from ablate.models import count_params, create_model
from ablate.scheduler import Runner, _Slot
from ablate.task import Task
from ablate.worker import _first_line, worker_loop

MAX_RETRIES = 2  # Ray's re-runs of a task whose worker process or node died
SMALL_MODEL = 1_000_000  # parameters; below this, a point takes a quarter of a GPU by default
POLL_S = 0.5  # how often a task asks the hub whether to stop


@ray.remote(num_cpus=0)
class _Hub:
    """Events from the tasks to the runner, and stop/cancel flags from the runner to them.

    A plain actor runs one call at a time, so it needs no lock; a task's ``put`` returns
    once the event is here, so nothing a task said is lost when its process dies after."""

    def __init__(self):
        self.events: list[tuple] = []
        self.stop = 0
        self.cancel: dict[int, int] = {}  # slot -> run id it must give up
        self.current: dict[int, int] = {}  # slot -> run id it was last given

    def put(self, event: tuple) -> None:
        self.events.append(event)

    def assign(self, wid: int, run_id: int) -> None:
        self.current[wid] = run_id

    def exchange(self, stop: int, cancel: dict[int, int]) -> list[tuple]:
        self.stop = stop
        self.cancel.update(cancel)
        events, self.events = self.events, []
        return events

    def flags(self, wid: int, run_id: int) -> tuple[int, int]:
        """(stop, run to give up): a retried task whose slot has moved on stops, all of it."""
        if self.current.get(wid) != run_id:
            return 1, 0
        return self.stop, self.cancel.get(wid, 0)


class _Flag:
    def __init__(self, value: int = 0):
        self.value = value


class _OneTask:
    """worker_loop's task queue for a Ray task: its one group of tasks, then the end."""

    def __init__(self, group: list[Task]):
        self.items = [group, None]

    def get(self):
        return self.items.pop(0)


class _HubEvents:
    def __init__(self, hub):
        self.hub = hub

    def put(self, event: tuple) -> None:
        ray.get(self.hub.put.remote(event))


class _LazyData:
    """Data loaded once per Ray worker process, from that machine's own ``--data`` path."""

    loaded: dict[str, datasets.Dataset] = {}

    def __init__(self, source: str | None):
        self.source = source

    def get(self, name: str) -> datasets.Dataset:
        key = f"{name}:{self.source}"
        if key not in self.loaded:
            self.loaded[key] = datasets.load_key(name, self.source)
        return self.loaded[key]


@ray.remote(max_retries=MAX_RETRIES)
def train_point(
    wid: int, group: list[Task], data_source: str | None, hub, compile: bool = False, shipped: tuple = ()
) -> None:
    """One grid point, or a group of them trained fused, on whatever device Ray gave this
    task (it sets CUDA_VISIBLE_DEVICES). ``shipped``: the runner's plugins (``plugins.ship``),
    loaded here first, so a machine without the files trains the same code."""
    plugins.receive(shipped)
    device = "cuda:0" if ray.get_gpu_ids() else "cpu"
    stop, cancel = _Flag(), _Flag()
    done = threading.Event()
    first = group[0].run_id  # the hub knows the group by it

    def poll() -> None:
        while not done.wait(POLL_S):
            stop.value, cancel.value = ray.get(hub.flags.remote(wid, first))

    stop.value, cancel.value = ray.get(hub.flags.remote(wid, first))
    threading.Thread(target=poll, daemon=True, name="ablate-ray-flags").start()
    try:
        worker_loop(
            wid,
            device,
            data_source,
            _OneTask(group),
            _HubEvents(hub),
            stop,
            cancel,
            preloaded=_LazyData(data_source),
            compile=compile,
        )
    finally:
        done.set()


class _TaskHandle:
    """A slot's current Ray task, answering the runner's liveness questions."""

    def __init__(self):
        self.ref = None
        self.exitcode = None

    def is_alive(self) -> bool:
        if self.ref is None:
            return True
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return True
        try:
            ray.get(self.ref)
        except ray.exceptions.RayError as e:  # retries used up, or the task could not start there
            cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None else e
            self.exitcode = _first_line(cause)
            return False
        self.ref = None
        return True


class _Inbox:
    def __init__(self, runner: RayRunner, wid: int, handle: _TaskHandle):
        self.runner, self.wid, self.handle = runner, wid, handle

    def put(self, group: list[Task] | None) -> None:
        if group is None:
            return
        r = self.runner
        ray.get(r.hub.assign.remote(self.wid, group[0].run_id))
        share = r.gpu_share(group[0]) if r.kind == "cuda" else 0
        self.handle.ref = train_point.options(num_cpus=1, num_gpus=share).remote(
            self.wid, group, r.data_source, r.hub, r.compile, r.shipped
        )


class _HubQueue:
    """The runner's event queue (``get``, ``get_nowait``) fed by the hub; each exchange also
    hands the hub the flags the runner set since the last (Ctrl-C, a point given up)."""

    def __init__(self, runner: RayRunner):
        self.runner, self.buffer = runner, []

    def _fetch(self) -> None:
        r = self.runner
        cancel = {slot.wid: slot.cancel.value for slot in r._slots}
        self.buffer.extend(ray.get(r.hub.exchange.remote(int(r._stop.value), cancel)))

    def get_nowait(self):
        if not self.buffer:
            self._fetch()
        if not self.buffer:
            raise queue.Empty
        return self.buffer.pop(0)

    def get(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get_nowait()
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.05, timeout))


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT that answers nothing fails here in seconds; ``ray.init`` would retry it
    for minutes."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address '{address}': expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster ({e.strerror or e})") from None


CONNECT_TIMEOUT_S = 30.0  # --connect-timeout: how long a cluster may take to take this driver


def probe(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """ConfigError unless the Ray cluster at ``address`` (None: the one recorded on this
    machine, if it answers; else a new local instance is started later, nothing to reach)
    takes a driver within ``timeout_s`` seconds.

    ``ray.init`` retries an address that accepts connections and never answers for minutes,
    and cannot be interrupted from its own process; a child process trying it can be. A
    process already joined to Ray has nothing to probe."""
    if not timeout_s > 0:
        raise ConfigError(f"--connect-timeout must be a positive number of seconds, got {timeout_s}")
    target = address or _this_machines_cluster()
    if target is None or ray.is_initialized():
        return
    _check_reachable(target)
    code = (
        "import logging, sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, "
        "log_to_driver=False, logging_level=logging.ERROR)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, target],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise ConfigError(
            f"--address {target}: no Ray cluster answered within {timeout_s:g} s (--connect-timeout to wait longer)"
        ) from None
    if child.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("[")]
        raise ConfigError(f"--address {target}: cannot reach a Ray cluster ({lines[-1] if lines else 'no answer'})")


def _this_machines_cluster() -> str | None:
    """The address of the Ray cluster started on this machine, if it answers. Ray records it
    in a file that outlives a cluster that died, and ``ray.init()`` then waits minutes on
    the dead address; a new local instance is what an unreachable one should mean."""
    recorded = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray" / "ray_current_cluster"
    try:
        address = recorded.read_text().strip()
        host, _, port = address.rpartition(":")
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return None
    return address


@contextmanager
def cluster(address: str | None, kind: str, connect: bool = True) -> Iterator[str]:
    """Joined to the Ray cluster at ``address`` (None: the running one, else a new one on
    this machine), yield the device kind its points get: ``kind``, or for ``auto`` cuda
    when the cluster has GPUs. A connection this opened is closed on the way out."""
    if not connect:
        yield kind
        return
    owned = not ray.is_initialized()
    if owned:
        _check_reachable(address)
        try:
            ray.init(
                address=address or _this_machines_cluster() or "local",
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        except (ConnectionError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"--address {address or 'auto'}: cannot reach a Ray cluster ({first})") from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if kind == "cuda" and not gpus:
            raise ConfigError("--device cuda: the Ray cluster has no GPU")
        yield kind if kind != "auto" else ("cuda" if gpus else "cpu")
    finally:
        if owned:
            ray.shutdown()


class RayRunner(Runner):
    """``Runner`` whose worker slots are Ray tasks, inside ``cluster``; ``kind`` is ``cpu`` or ``cuda``."""

    def __init__(
        self,
        store,
        study_id: int,
        kind: str,
        data_source: str | None,
        reporter,
        *,
        per_gpu: int | None = None,
        **options,
    ):
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0), int(resources.get("CPU", 1))
        self.kind, self.per_gpu = kind, per_gpu
        # As many slots as the cluster can run at once; Ray queues any surplus.
        slots = int(gpus * (per_gpu or 4)) if kind == "cuda" else cpus
        super().__init__(store, study_id, [f"ray:{kind}"] * max(1, min(slots, cpus)), data_source, reporter, **options)
        # The hub lives on the driver's node: anywhere else, a node that dies takes every
        # event and flag of the study with it, while the tasks it ran could just be retried.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.hub = _Hub.options(scheduling_strategy=here).remote()
        self.shipped = plugins.ship()
        self._stop = _Flag()
        self._events = _HubQueue(self)
        self._shares: dict[str, float] = {}

    def gpu_share(self, task: Task) -> float:
        if self.per_gpu:
            return 1.0 / self.per_gpu
        if task.config_hash not in self._shares:
            model = task.config["model"]
            with torch.device("meta"):
                params = count_params(create_model(model["name"], **model.get("args", {})))
            self._shares[task.config_hash] = 0.25 if params < SMALL_MODEL else 1.0
        return self._shares[task.config_hash]

    def _start(self, wid: int, device: str) -> _Slot:
        handle = _TaskHandle()
        return _Slot(wid, device, handle, _Inbox(self, wid, handle), _Flag())

    def _check_workers(self, busy, outcome) -> None:
        self._drain(busy, outcome)  # what a task said before Ray gave up on it comes first
        super()._check_workers(busy, outcome)

    def _shutdown(self) -> None:
        refs = [s.handle.ref for s in self._slots if s.handle.ref is not None]
        try:
            ray.get(self.hub.exchange.remote(1, {}))  # tasks still going stop after their step
            ray.wait(refs, num_returns=len(refs), timeout=10)
            for ref in refs:
                ray.cancel(ref, force=True)
        finally:
            ray.kill(self.hub)
