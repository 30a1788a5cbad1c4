"""Schema version 1: studies, runs with a state and a heartbeat, long metrics, artifacts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("label", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("device", sa.String(64)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("wall_s", sa.Double),
        sa.Column("epochs_done", sa.Integer, nullable=False),
        sa.Column("test_acc", sa.Double),
        sa.Column("test_loss", sa.Double),
        sa.Column("train_acc", sa.Double),
        sa.Column("train_loss", sa.Double),
        sa.Column("error", sa.Text),
        sa.Column("torch_version", sa.String(64)),
        sa.Column("ablate_version", sa.String(64)),
        sa.UniqueConstraint("study_id", "config_hash", "seed"),
    )
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Double),
    )
    op.create_table(
        "artifacts",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("shape", sa.String(200), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.execute("INSERT INTO schema_version (id, version) VALUES (1, 1)")


def downgrade() -> None:
    for table in ("artifacts", "metrics", "runs", "studies", "schema_version"):
        op.drop_table(table)
