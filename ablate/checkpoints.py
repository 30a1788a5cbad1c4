"""Per-epoch checkpoints: written atomically beside the database, each tied to one run of one
database, loaded with ``weights_only`` so a file never runs code, and never fatal: one that
cannot be read, or removed, is noted and training goes on."""

from __future__ import annotations

import hashlib
import io
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ablate.task import Task

TEST_PAUSE_ENV = "ABLATE_TEST_PAUSE"

# A run projected to take less than this writes no per-epoch checkpoint: in a 1.3 s run the
# writes (with fsync) are a large share of the time, and a crash loses less than this.
SHORT_RUN_S = 30.0
# Seconds standing in for SHORT_RUN_S: the tests' tiny runs set 0 to checkpoint every epoch.
CHECKPOINT_AFTER_ENV = "ABLATE_CHECKPOINT_AFTER_S"


def checkpoint_after_s() -> float:
    """The projected run length from which a run checkpoints: ``ABLATE_CHECKPOINT_AFTER_S``
    if set, else ``SHORT_RUN_S``."""
    value = os.environ.get(CHECKPOINT_AFTER_ENV, "").strip()
    if not value:
        return SHORT_RUN_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{CHECKPOINT_AFTER_ENV} must be a number of seconds >= 0, got {value!r}")
    return seconds


def test_pause(stage: str, epoch: int | None = None) -> None:
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
            test_pause("checkpoint", state.get("epoch"))
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
            return None, (
                f"checkpoint {path} is at epoch {state['epoch']}, not below the run's {epochs} epochs; "
                "starting from scratch"
            )
        return state, None
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, train from scratch
        return None, f"checkpoint {path} is unreadable ({_first_line(e)}); starting from scratch"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
