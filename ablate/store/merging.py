"""Merging databases: one database's contents as plain data (``dump``), and those of
others taken into this one (``absorb``), in one transaction. ``ablate.merge`` drives it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from ablate.store.db import Store, StoreError, _append, _as_dict, _is_busy, _retrying
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
            studies = {r.id: {"name": r.name, "description": r.description, "spec_json": r.spec_json,
                              "created_at": r.created_at} for r in s.scalars(sa.select(StudyRow))}
            runs = [_as_dict(r) for r in s.scalars(sa.select(RunRow).order_by(RunRow.id))]
            for r in runs:
                sid = r.pop("study_id")
                if sid not in studies:  # SQLite checks the foreign key only where it was on when written
                    raise StoreError(f"database '{store.url}' is damaged: run {r['id']} names study id {sid}, "
                                     "which it does not hold; restore it from a copy, or merge another database")
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


@_retrying(integrity=True)
def absorb(store: Store, dumps: list[Dump], assume: tuple[str, str] | None = None) -> list[dict[str, int]]:
    """Import the finished runs of ``dumps`` (other databases'), all in one transaction.

    A run is (study, config hash, seed, data fingerprint). One already finished here
    stays; one pending, failed or stale here is replaced, and its claim number moves on
    so that a runner still holding the old claim writes nothing more; one running here
    is left to its runner. Runs recorded without a data fingerprint (on data other than
    synthetic) take ``assume`` (fingerprint, name) where it is given. Unfinished runs of
    ``dumps`` are not imported. Returns, per dump, the counts of each outcome.
    """
    now, host = utcnow(), this_host()
    out = []
    with store.session(write=True) as s:
        for dump in dumps:
            out.append(_absorb(s, dump, assume, now, host))
    return out


def _absorb(s: Session, dump: Dump, assume: tuple[str, str] | None, now, host: str) -> dict[str, int]:
    counts = dict.fromkeys(("added", "replaced", "finished_here", "running_here", "unfinished"), 0)
    ids = {r.name: r.id for r in s.scalars(sa.select(StudyRow))}
    for st in dump.studies:
        if st["name"] not in ids:
            row = StudyRow(name=st["name"], description=st["description"], spec_json=st["spec_json"],
                           created_at=st["created_at"])
            s.add(row)
            s.flush()
            ids[st["name"]] = row.id
    here = {(r.study_id, r.config_hash, r.seed, r.data_fp): r for r in s.scalars(sa.select(RunRow))}
    for run in dump.runs:
        if run["status"] not in ("complete", "diverged"):
            counts["unfinished"] += 1
            continue
        values = {k: v for k, v in run.items() if k not in ("id", "study", "attempts")}
        values["study_id"] = ids[run["study"]]
        values["data_fp"] = values["data_fp"] or ""
        if not values["data_fp"] and assume and \
                (json.loads(values["config_json"]).get("data") or {}).get("dataset") != "synthetic":
            values["data_fp"], values["data_name"] = assume
            values["notes"] = _append(values["notes"], f"data assumed when merged: {assume[1]} ({assume[0]})")
        target = here.get((values["study_id"], values["config_hash"], values["seed"], values["data_fp"]))
        if target is None:
            target = RunRow(**values, attempts=run["attempts"])
            s.add(target)
            s.flush()
            here[(values["study_id"], values["config_hash"], values["seed"], values["data_fp"])] = target
            counts["added"] += 1
        elif target.status in ("complete", "diverged"):
            counts["finished_here"] += 1
            continue
        elif target.status == "running" and stale_reason(_as_dict(target), now, host) is None:
            counts["running_here"] += 1
            continue
        else:
            s.execute(sa.delete(MetricRow).where(MetricRow.run_id == target.id))
            s.execute(sa.delete(ArtifactRow).where(ArtifactRow.run_id == target.id))
            was = f"attempt {target.attempts} ({target.status})" if target.attempts else target.status  # pending, never run
            history = _append(target.notes, f"{was} replaced by a merged run")
            for k, v in values.items():
                setattr(target, k, v)
            target.notes = _append(history, values["notes"]) if values["notes"] else history
            target.attempts += 1  # a runner holding the old claim writes nothing more
            counts["replaced"] += 1
        s.add_all(MetricRow(run_id=target.id, step=step, name=name, value=value)
                  for step, name, value in dump.metrics.get(run["id"], []))
        s.add_all(ArtifactRow(run_id=target.id, name=name, dtype=dtype, shape=shape, data=data)
                  for name, dtype, shape, data in dump.artifacts.get(run["id"], []))
    return counts
