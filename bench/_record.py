"""What the benchmark drivers share: their JSON on disk, the spread they report, their budget.

A driver is run as ``python bench/NAME.py``, so this folder is on its path; the airbench
driver imports nothing of ablate, and neither does this."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path


def write_json(path: Path, obj: dict) -> None:
    """Rewritten whole after every run: a caller's timeout leaves the last complete file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def over_budget(began: float, budget: float | None, seconds_so_far: list[float]) -> bool:
    """Whether one more run as long as the longest so far would end past ``budget`` seconds
    after ``began`` (a ``time.perf_counter()``); never before the first run."""
    if not budget or not seconds_so_far:
        return False
    return time.perf_counter() - began + max(seconds_so_far) > budget
