"""Schema version 4: the code that trained a run is recorded with it.

runs.code_version: for a built-in model, ablate's version and its module's source hash
("ablate 0.1.0 plain_cnn.py:1a2b..."); for a plugin model, its file's name and source hash,
or its package's name and version. A plugin model's source hash is also part of its config
(and so of its config hash); a built-in model's is not, so that no recorded run changes its
identity. Runs recorded before keep NULL: nothing recorded says which code trained them
beyond runs.ablate_version, which stays as it was.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("code_version", sa.String(200)))
    op.execute("UPDATE schema_version SET version = 4")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("code_version")
    op.execute("UPDATE schema_version SET version = 3")
