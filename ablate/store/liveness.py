"""When a `running` run belongs to a runner that is gone.

A run records the host and process id of the runner that claimed it, and its worker beats
every ``HEARTBEAT_S`` seconds. On the runner's own host a dead process is proof at once;
elsewhere (another machine, a container) only silence is, and the grace period is long
enough that a live run is never declared stale. Should that still happen (a runner frozen
for minutes), its writes are fenced off by the claim counter, so no run is recorded twice.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

HEARTBEAT_S = 10.0  # a worker says it is alive this often, even inside a long epoch
STALE_AFTER_S = 180.0  # a running run silent this long belongs to a runner that died


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # no cheap check there: rely on the heartbeat
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def stale_reason(
    run: dict,
    now: datetime,
    host: str | None = None,
    after_s: float = STALE_AFTER_S,
) -> str | None:
    """Why the runner of a `running` run is gone, or None while it may be alive.

    ``run`` needs status, host, pid, heartbeat_at and started_at; ``now`` is naive UTC
    like the stored times.
    """
    if run["status"] != "running":
        return None
    host = host or this_host()
    if run.get("host") == host and run.get("pid") and not pid_alive(run["pid"]):
        return f"its runner (process {run['pid']} on {host}) is gone"
    beat = run.get("heartbeat_at") or run.get("started_at")
    if beat is None:
        return "it never sent a heartbeat"
    silent = (now - beat).total_seconds()
    if silent > after_s:
        return f"no heartbeat for {_duration(silent)} from {run.get('host') or 'its host'}"
    return None


def _duration(seconds: float) -> str:
    td = timedelta(seconds=int(seconds))
    if td < timedelta(minutes=2):
        return f"{td.seconds} s"
    if td < timedelta(hours=2):
        return f"{td.seconds // 60} min"
    return f"{td.days * 24 + td.seconds // 3600} h"
