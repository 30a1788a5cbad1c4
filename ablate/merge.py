"""``ablate merge`` as a Python function: the finished runs of other databases into one.

GPU time comes in short windows on other machines, each ending with a database of its own;
merging them into the project's ``results.db`` is how their runs reach the report. A run is
(study, config hash, seed, data fingerprint): a run already finished in the target is never
duplicated, and replaced only when its numbers differ and ``on_conflict`` says so (every such
conflict is reported); a finished run replaces a pending, failed or stale one, and merging the
same database again changes nothing. A run recorded before data fingerprints is matched once,
whatever data a later merge assumes for it. A source study that takes a name the target (or
an earlier source) gives another base or other axes is refused, as ``ablate run`` refuses
it, unless renamed or made the study's definition. The sources are read (an older schema
upgraded in a copy in memory, never in the file) and checked before the target is opened,
and every source goes into the target in one transaction: a merge that fails leaves both
sides as they were.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablate.config import ConfigError, study_grid
from ablate.store import Dump, Store, StoreError, absorb, database_file, dump

ON_CONFLICT = ("keep", "replace")


@dataclass(frozen=True)
class Conflict:
    """Two finished copies of one run (study, config, seed, data) that disagree."""

    study: str
    label: str
    seed: int
    here_id: int  # the run in the target
    there_id: int  # the run in the source
    metric: str  # the first column that differs (status, test_acc, test_loss, train_acc, train_loss)
    here: Any
    there: Any
    kept: str  # "here" (the target's) or "source"
    also: tuple[str, ...] = ()  # the other columns that differ


@dataclass
class Merged:
    source: str
    added: int = 0  # new here
    replaced: int = 0  # pending, failed or stale here (or in conflict, with replace), now the source's
    finished_here: int = 0  # already complete or diverged here, with the same numbers: left as it was
    running_here: int = 0  # a live runner trains it here: left to it
    unfinished: int = 0  # pending, running or failed in the source: not imported
    unassumed_before: int = 0  # of unknown data, merged before without --assume-data: not again
    assumed_before: int = 0  # of unknown data, merged before under another --assume-data: not again
    conflicts: list[Conflict] = field(default_factory=list)
    redefined: list[str] = field(default_factory=list)  # studies that took this source's definition


def assumed_data(value: str) -> tuple[str, str]:
    """``--assume-data``: the fingerprint of a data set (16 hex digits, named if ablate knows
    it), or a data directory to read and fingerprint; returns (fingerprint, name)."""
    from ablate import data  # torch: only when asked

    if re.fullmatch(r"[0-9a-f]{16}", value):
        return value, data.KNOWN.get(value, f"data of fingerprint {value}")
    if not Path(value).expanduser().exists():
        raise ConfigError(
            f"--assume-data takes a data fingerprint (16 hex digits, e.g. {next(iter(data.KNOWN))} "
            f"for {data.KNOWN[next(iter(data.KNOWN))]}) or a data directory, got {value!r}"
        )
    found = data.identify(value, data.load(value))
    return found.fingerprint, found.name


def merge(
    sources: list[str],
    db: str | None = None,
    assume_data: str | None = None,
    on_conflict: str = "keep",
    replace_study: bool = False,
    rename: list[str] | None = None,
) -> list[Merged]:
    """Merge the finished runs of ``sources`` (files or URLs) into ``db``; one transaction.

    ``on_conflict``: ``keep`` the target's run, or ``replace`` it with the source's, where two
    finished copies of one run disagree. ``rename``: ``OLD=NEW``, the sources' study OLD
    merged as NEW. ``replace_study``: a source study that redefines a name takes it over (the
    runs already there stay, as another variant), as ``ablate run --replace-study`` does."""
    if not sources:
        raise ConfigError("ablate merge needs at least one source database")
    if on_conflict not in ON_CONFLICT:
        raise ConfigError(f"--on-conflict takes keep or replace, got {on_conflict!r}")
    renames = _renames(rename or [])
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
    dumps = _renamed(dumps, renames)
    _redefinitions({}, dumps, replace_study)  # the sources among themselves, before the target is made
    store = Store.open(db)
    try:
        here = {st["name"]: (st["spec"], store.url) for st in store.studies()}
        redefine = _redefinitions(here, dumps, replace_study)
        counts = absorb(store, [d for _, d in dumps], assume, on_conflict, redefine)
    finally:
        store.close()
    return [
        Merged(url, **{**c, "conflicts": [_conflict(x) for x in c["conflicts"]], "redefined": sorted(r)})
        for (url, _), c, r in zip(dumps, counts, redefine)
    ]


def _conflict(c: dict[str, Any]) -> Conflict:
    (metric, here, there), *rest = c["differ"]
    return Conflict(
        c["study"],
        c["label"],
        c["seed"],
        c["here_id"],
        c["there_id"],
        metric,
        here,
        there,
        c["kept"],
        tuple(k for k, _, _ in rest),
    )


def _renames(rename: list[str]) -> dict[str, str]:
    out = {}
    for text in rename:
        old, sep, new = (p.strip() for p in text.partition("="))
        if not sep or not old or not new:
            raise ConfigError(f"--rename takes OLD=NEW (a source's study and the name to merge it as), got {text!r}")
        out[old] = new
    return out


def _renamed(dumps: list[tuple[str, Dump]], renames: dict[str, str]) -> list[tuple[str, Dump]]:
    held = {st["name"] for _, d in dumps for st in d.studies}
    for old in renames:
        if old not in held:
            raise ConfigError(f"--rename: no source holds a study '{old}'; they hold {', '.join(sorted(held))}")
    if not renames:
        return dumps
    return [
        (
            url,
            replace(
                d,
                studies=[{**st, "name": renames.get(st["name"], st["name"])} for st in d.studies],
                runs=[{**r, "study": renames.get(r["study"], r["study"])} for r in d.runs],
            ),
        )
        for url, d in dumps
    ]


def _redefinitions(
    here: dict[str, tuple[dict, str]], dumps: list[tuple[str, Dump]], replace_study: bool
) -> list[set[str]]:
    """Per source, the studies whose definition it takes over (with ``replace_study``); a
    study of another base or other axes under a name taken here, or by an earlier source, is
    refused otherwise, as ``ablate run`` refuses it."""
    known = dict(here)
    out = []
    for url, d in dumps:
        mine = set()
        for st in d.studies:
            name, spec = st["name"], json.loads(st["spec_json"])
            if name in known and study_grid(known[name][0]) != study_grid(spec):
                if not replace_study:
                    raise ConfigError(
                        f"study '{name}' of {url} ({_definition(spec)}) has another base or other axes than study "
                        f"'{name}' of {known[name][1]} ({_definition(known[name][0])}); pass --rename {name}=NEW "
                        "to merge it as another study, or --replace-study to make it the study's definition "
                        "(the runs there stay, as another variant)"
                    )
                mine.add(name)
            if name not in known or name in mine:
                known[name] = (spec, url)
        out.append(mine)
    return out


def _definition(spec: dict[str, Any]) -> str:
    axes = ", ".join(spec.get("axes") or {}) or "none"
    return f"axes {axes}" + (f", from {spec['path']}" if spec.get("path") else "")
