"""``ablate merge`` as a Python function: the finished runs of other databases into one.

GPU time comes in short windows on other machines, each ending with a database of its own;
merging them into the project's ``results.db`` is how their runs reach the report. A run is
(study, config hash, seed, data fingerprint): a run already finished in the target is never
replaced or duplicated, a finished run replaces a pending, failed or stale one, and merging
the same database again changes nothing. The sources are read (an older schema upgraded in a
copy in memory, never in the file) before the target is opened, and every source goes into
the target in one transaction: a merge that fails leaves both sides as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ablate.config import ConfigError
from ablate.store import Store, StoreError, absorb, database_file, dump


@dataclass
class Merged:
    source: str
    added: int = 0  # new here
    replaced: int = 0  # pending, failed or stale here, now the source's finished run
    finished_here: int = 0  # already complete or diverged here: left as it was
    running_here: int = 0  # a live runner trains it here: left to it
    unfinished: int = 0  # pending, running or failed in the source: not imported


def assumed_data(value: str) -> tuple[str, str]:
    """``--assume-data``: the fingerprint of a data set (16 hex digits, named if ablate knows
    it), or a data directory to read and fingerprint; returns (fingerprint, name)."""
    from ablate import data  # torch: only when asked

    if re.fullmatch(r"[0-9a-f]{16}", value):
        return value, data.KNOWN.get(value, f"data of fingerprint {value}")
    if not Path(value).expanduser().exists():
        raise ConfigError(f"--assume-data takes a data fingerprint (16 hex digits, e.g. {next(iter(data.KNOWN))} "
                          f"for {data.KNOWN[next(iter(data.KNOWN))]}) or a data directory, got {value!r}")
    found = data.identify(value, data.load(value))
    return found.fingerprint, found.name


def merge(sources: list[str], db: str | None = None, assume_data: str | None = None) -> list[Merged]:
    """Merge the finished runs of ``sources`` (files or URLs) into ``db``; one transaction."""
    if not sources:
        raise ConfigError("ablate merge needs at least one source database")
    assume = assumed_data(assume_data) if assume_data else None
    target = database_file(db)
    dumps = []
    for source in sources:
        path = database_file(source)
        if path is not None and not path.is_file():
            raise StoreError(f"no database at '{source}'")
        if path is not None and path == target:
            raise ConfigError(f"'{source}' is the target database itself")
        store = Store.open(source, create=False)
        try:
            dumps.append((store.url, dump(store)))
        finally:
            store.close()
    store = Store.open(db)
    try:
        counts = absorb(store, [d for _, d in dumps], assume)
    finally:
        store.close()
    return [Merged(url, **c) for (url, _), c in zip(dumps, counts)]
