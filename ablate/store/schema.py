"""The database schema, after Optuna's: runs with a state, a heartbeat and UTC times;
metrics in long format keyed (run, step, name); a single-row schema version.

Every change to these classes is a new Alembic revision in ``migrations/versions/`` that
sets ``schema_version`` to the new ``SCHEMA_VERSION`` (see ``ablate/store/migrate.py``),
and a frozen database of the version before it under ``tests/assets/``."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 4  # 1: the first release; 2: runs.attempts and runs.notes; 3: runs.data_fp and data_name;
# 4: runs.code_version

STATUSES = ("pending", "running", "complete", "failed", "diverged")


def utcnow() -> datetime:
    # Stored naive, always UTC: SQLite keeps no zone, and one convention beats two.
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    # Spelled out: SQLAlchemy 2.0 maps `float` to Float, 2.1 to Double, and the migrations
    # create DOUBLE columns.
    type_annotation_map = {float: sa.Double}


class VersionRow(Base):
    __tablename__ = "schema_version"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    version: Mapped[int]


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    spec_json: Mapped[str] = mapped_column(sa.Text)  # the study file as loaded: axes, seeds, figures
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    runs: Mapped[list[RunRow]] = relationship(back_populates="study")


class RunRow(Base):
    __tablename__ = "runs"
    # One row per grid point, seed and data: running a study again adds only what is missing.
    __table_args__ = (sa.UniqueConstraint("study_id", "config_hash", "seed", "data_fp", name="uq_runs_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), index=True)
    config_hash: Mapped[str] = mapped_column(sa.String(64))
    seed: Mapped[int]
    config_json: Mapped[str] = mapped_column(sa.Text)
    # The data it trained and tested on (ablate.data.fingerprint of the decoded arrays) and
    # its name. '' for a run recorded before version 3 on data other than synthetic, not NULL:
    # NULLs never collide in a unique key, and concurrent runners must. The store hands ''
    # out as None.
    data_fp: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")
    data_name: Mapped[str | None] = mapped_column(sa.String(200))
    label: Mapped[str] = mapped_column(sa.String(500), default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    device: Mapped[str | None] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    wall_s: Mapped[float | None]
    epochs_done: Mapped[int] = mapped_column(default=0)
    test_acc: Mapped[float | None]
    test_loss: Mapped[float | None]
    train_acc: Mapped[float | None]
    train_loss: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    torch_version: Mapped[str | None] = mapped_column(sa.String(64))
    ablate_version: Mapped[str | None] = mapped_column(sa.String(64))
    # The model's code that trained it (ablate.models.registry.code_version); NULL before version 4.
    code_version: Mapped[str | None] = mapped_column(sa.String(200))
    # Claims so far. Each claim takes the next number and the claimer's writes name it, so
    # a runner whose run was re-queued behind its back (declared stale) writes nothing more.
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    # What happened to the run on the way, one line each: re-queued after a crash, resumed,
    # retried at half the batch size after running out of memory.
    notes: Mapped[str | None] = mapped_column(sa.Text)

    study: Mapped[StudyRow] = relationship(back_populates="runs")


class MetricRow(Base):
    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)  # the epoch, 1-based
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[float | None]  # NaN and infinities arrive as NULL on SQLite


class ArtifactRow(Base):
    """Small arrays a figure needs after the model is gone (first-layer kernels, say)."""

    __tablename__ = "artifacts"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    dtype: Mapped[str] = mapped_column(sa.String(16))  # numpy dtype name, e.g. float32
    shape: Mapped[str] = mapped_column(sa.String(200))  # JSON list
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)  # C-order raw bytes
