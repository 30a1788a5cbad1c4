"""What a worker is handed: one claimed point, as the runner planned it. Below both the worker
(``ablate.worker``) and its checkpoints (``ablate.checkpoints``), so each imports it downward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
