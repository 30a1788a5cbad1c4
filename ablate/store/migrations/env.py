"""Alembic's entry point for ablate's migrations, run only from ``ablate.store.migrate``.

There is no alembic.ini: ``migrate.upgrade`` builds the Config in code and hands over an
open connection inside a transaction, so every revision of one upgrade commits together
or not at all.
"""

from alembic import context

from ablate.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
