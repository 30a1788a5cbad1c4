"""Schema version 3: the data a run trained on is part of its identity.

runs.data_fp (the fingerprint of the decoded arrays) and runs.data_name; the unique key of
a run becomes (study, config hash, seed, data fingerprint). Runs recorded before keep what
they had: those on the built-in synthetic data get its fingerprint, which is fixed by its
generator; the others get none (NULL: "recorded before data fingerprints"), since nothing
recorded says which copy of CIFAR-10 they read ('', not NULL: NULLs never collide in the
unique key). ``ablate merge --assume-data`` can name it.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# ablate.data.fingerprint(ablate.data.synthetic()) when this revision was written; frozen
# here, as a migration must not change when the code it upgrades to does.
SYNTHETIC_FP = "78869a21f9773972"
# Version 1 and 2 left the unique key unnamed; batch mode names it by this convention so
# that it can be dropped on SQLite, where the table is copied to change a constraint.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _old_unique(conn) -> str | None:
    for uq in sa.inspect(conn).get_unique_constraints("runs"):
        if uq["column_names"] == ["study_id", "config_hash", "seed"]:
            return uq["name"]
    return None


def upgrade() -> None:
    conn = op.get_bind()
    old = _old_unique(conn) or NAMING["uq"] % {"table_name": "runs", "column_0_N_name": "study_id_config_hash_seed"}
    with op.batch_alter_table("runs", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("data_fp", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("data_name", sa.String(200)))
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint("uq_runs_identity", ["study_id", "config_hash", "seed", "data_fp"])
    runs = sa.table(
        "runs",
        sa.column("id", sa.Integer),
        sa.column("config_json", sa.Text),
        sa.column("data_fp", sa.String),
        sa.column("data_name", sa.String),
    )
    synthetic = [
        row.id
        for row in conn.execute(sa.select(runs.c.id, runs.c.config_json))
        if (json.loads(row.config_json).get("data") or {}).get("dataset") == "synthetic"
    ]
    if synthetic:
        conn.execute(runs.update().where(runs.c.id.in_(synthetic)).values(data_fp=SYNTHETIC_FP, data_name="synthetic"))
    op.execute("UPDATE schema_version SET version = 3")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_identity", type_="unique")
        batch.create_unique_constraint("uq_runs_study_id_config_hash_seed", ["study_id", "config_hash", "seed"])
        batch.drop_column("data_name")
        batch.drop_column("data_fp")
    op.execute("UPDATE schema_version SET version = 2")
