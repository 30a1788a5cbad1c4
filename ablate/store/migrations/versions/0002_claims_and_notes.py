"""Schema version 2: runs.attempts (the claim counter that fences a re-queued run's old
runner) and runs.notes (re-queues, resumes, out-of-memory retries).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")))
    op.add_column("runs", sa.Column("notes", sa.Text))
    # A version-1 run that ever started was claimed once as far as anyone can tell.
    op.execute("UPDATE runs SET attempts = 1 WHERE started_at IS NOT NULL")
    op.execute("UPDATE schema_version SET version = 2")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("notes")
        batch.drop_column("attempts")
    op.execute("UPDATE schema_version SET version = 1")
