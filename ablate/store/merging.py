"""Merging databases: one database's contents as plain data (``dump``), and those of
others taken into this one (``absorb``), in one transaction. ``ablate.merge`` drives it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from ablate.store.db import RESULT_COLUMNS, Store, StoreError, _append, _as_dict, _is_busy, _retrying
from ablate.store.liveness import stale_reason, this_host
from ablate.store.schema import ArtifactRow, MetricRow, RunRow, StudyRow, utcnow


@dataclass(frozen=True)
class Dump:
    """A database's contents as plain data (``dump``), for ``absorb`` elsewhere."""

    studies: list[dict[str, Any]]
    runs: list[dict[str, Any]]  # every column, with the study's name in place of its id
    metrics: dict[int, list[tuple]]  # run id -> (step, name, value)
    artifacts: dict[int, list[tuple]]  # run id -> (name, dtype, shape, data)


@_retrying()
def dump(store: Store) -> Dump:
    """Everything, as plain data: studies, runs (every column), their metrics and
    artifacts. What ``absorb`` takes; read in one transaction, so it is consistent."""
    try:
        with store.session() as s:
            studies = {
                r.id: {
                    "name": r.name,
                    "description": r.description,
                    "spec_json": r.spec_json,
                    "created_at": r.created_at,
                }
                for r in s.scalars(sa.select(StudyRow))
            }
            runs = [_as_dict(r) for r in s.scalars(sa.select(RunRow).order_by(RunRow.id))]
            for r in runs:
                sid = r.pop("study_id")
                if sid not in studies:  # SQLite checks the foreign key only where it was on when written
                    raise StoreError(
                        f"database '{store.url}' is damaged: run {r['id']} names study id {sid}, "
                        "which it does not hold; restore it from a copy, or merge another database"
                    )
                r["study"] = studies[sid]["name"]
            metrics: dict[int, list[tuple]] = {}
            for m in s.execute(sa.select(MetricRow.run_id, MetricRow.step, MetricRow.name, MetricRow.value)):
                metrics.setdefault(m.run_id, []).append((m.step, m.name, m.value))
            artifacts: dict[int, list[tuple]] = {}
            for a in s.scalars(sa.select(ArtifactRow)):
                artifacts.setdefault(a.run_id, []).append((a.name, a.dtype, a.shape, a.data))
    except DatabaseError as e:
        if isinstance(e, OperationalError) and _is_busy(e):
            raise
        raise StoreError(f"cannot read database '{store.url}': {e.orig}") from None
    return Dump(list(studies.values()), runs, metrics, artifacts)


FINISHED = ("complete", "diverged")
COMPARED = ("status", *RESULT_COLUMNS)  # what two finished copies of one run must agree on
ON_CONFLICT = ("keep", "replace")


@_retrying(integrity=True)
def absorb(
    store: Store,
    dumps: list[Dump],
    assume: tuple[str, str] | None = None,
    on_conflict: str = "keep",
    redefine: list[set[str]] | None = None,
) -> list[dict[str, Any]]:
    """Import the finished runs of ``dumps`` (other databases'), all in one transaction.

    A run is (study, config hash, seed, data fingerprint). One already finished here
    stays, unless its numbers differ (a conflict): then ``on_conflict`` ``keep`` leaves it
    and ``replace`` takes the source's; each conflict is returned either way. One pending,
    failed or stale here is replaced, and its claim number moves on so that a runner still
    holding the old claim writes nothing more; one running here is left to its runner.

    A run recorded without a data fingerprint (on data other than synthetic) matches a run
    of unknown data here first, and the very run merged before under an assumed fingerprint
    next (the same row: created and ended at the same instants): its identity is decided
    once, at its first merge. Otherwise it takes ``assume`` (fingerprint, name) where given.

    Studies new here come with their definition; those named in ``redefine`` (a set per
    dump) take the dump's definition over the one here. Unfinished runs of ``dumps`` are not
    imported. Returns, per dump, the counts of each outcome and its ``conflicts``.
    """
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict: {on_conflict!r}")
    now, host = utcnow(), this_host()
    out = []
    with store.session(write=True) as s:
        for i, dump in enumerate(dumps):
            out.append(_absorb(s, dump, assume, on_conflict, redefine[i] if redefine else set(), now, host))
    return out


def _absorb(
    s: Session, dump: Dump, assume: tuple[str, str] | None, on_conflict: str, redefine: set[str], now, host: str
) -> dict[str, Any]:
    counts: dict[str, Any] = dict.fromkeys(
        ("added", "replaced", "finished_here", "running_here", "unfinished", "unassumed_before", "assumed_before"), 0
    )
    counts["conflicts"] = []
    ids = {r.name: r for r in s.scalars(sa.select(StudyRow))}
    for st in dump.studies:
        row = ids.get(st["name"])
        if row is None:
            row = StudyRow(
                name=st["name"], description=st["description"], spec_json=st["spec_json"], created_at=st["created_at"]
            )
            s.add(row)
            s.flush()
            ids[st["name"]] = row
        elif st["name"] in redefine:
            row.description, row.spec_json = st["description"], st["spec_json"]
    here = {(r.study_id, r.config_hash, r.seed, r.data_fp): r for r in s.scalars(sa.select(RunRow))}
    for run in dump.runs:
        if run["status"] not in FINISHED:
            counts["unfinished"] += 1
            continue
        values = {k: v for k, v in run.items() if k not in ("id", "study", "attempts")}
        values["study_id"] = ids[run["study"]].id
        values["data_fp"] = values["data_fp"] or ""
        point = (values["study_id"], values["config_hash"], values["seed"])
        target = here.get((*point, values["data_fp"]))
        if (
            not values["data_fp"]
            and (json.loads(values["config_json"]).get("data") or {}).get("dataset") != "synthetic"
        ):
            if target is not None:  # unknown data matches unknown data, whatever this merge assumes
                if assume and target.status in FINISHED and _same_row(target, values):
                    counts["unassumed_before"] += 1
                    continue
            else:
                earlier = next(
                    (
                        r
                        for (*p, fp), r in here.items()
                        if tuple(p) == point and fp and _same_row(r, values) and (not assume or fp != assume[0])
                    ),
                    None,
                )
                if earlier is not None:
                    counts["assumed_before"] += 1
                    continue
                if assume:
                    values["data_fp"], values["data_name"] = assume
                    values["notes"] = _append(values["notes"], f"data assumed when merged: {assume[1]} ({assume[0]})")
                    target = here.get((*point, values["data_fp"]))
        if target is None:
            target = RunRow(**values, attempts=run["attempts"])
            s.add(target)
            s.flush()
            here[(*point, values["data_fp"])] = target
            counts["added"] += 1
        elif target.status in FINISHED:
            differ = [(k, getattr(target, k), values[k]) for k in COMPARED if getattr(target, k) != values[k]]
            if not differ:
                counts["finished_here"] += 1
                continue
            counts["conflicts"].append(
                {
                    "study": run["study"],
                    "label": target.label,
                    "seed": target.seed,
                    "here_id": target.id,
                    "there_id": run["id"],
                    "differ": differ,
                    "kept": "here" if on_conflict == "keep" else "source",
                }
            )
            if on_conflict == "keep":
                continue
            what = ", ".join(f"{k} {a} here, {b} merged" for k, a, b in differ)
            _replace(
                s,
                target,
                values,
                f"attempt {target.attempts} ({target.status}) replaced by a merged run with other numbers ({what})",
            )
            counts["replaced"] += 1
        elif target.status == "running" and stale_reason(_as_dict(target), now, host) is None:
            counts["running_here"] += 1
            continue
        else:
            was = (
                f"attempt {target.attempts} ({target.status})" if target.attempts else target.status
            )  # pending, never run
            _replace(s, target, values, f"{was} replaced by a merged run")
            counts["replaced"] += 1
        s.add_all(
            MetricRow(run_id=target.id, step=step, name=name, value=value)
            for step, name, value in dump.metrics.get(run["id"], [])
        )
        s.add_all(
            ArtifactRow(run_id=target.id, name=name, dtype=dtype, shape=shape, data=data)
            for name, dtype, shape, data in dump.artifacts.get(run["id"], [])
        )
    return counts


def _same_row(row: RunRow, values: dict[str, Any]) -> bool:
    """Whether ``row`` is a copy of the run ``values`` holds: merging copies a row's times."""
    return row.created_at == values["created_at"] and row.ended_at == values["ended_at"]


def _replace(s: Session, target: RunRow, values: dict[str, Any], note: str) -> None:
    """The merged run in ``target``'s row; its metrics and artifacts follow (the caller's)."""
    s.execute(sa.delete(MetricRow).where(MetricRow.run_id == target.id))
    s.execute(sa.delete(ArtifactRow).where(ArtifactRow.run_id == target.id))
    history = _append(target.notes, note)
    for k, v in values.items():
        setattr(target, k, v)
    target.notes = _append(history, values["notes"]) if values["notes"] else history
    target.attempts += 1  # a runner holding the old claim writes nothing more
