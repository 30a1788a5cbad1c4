"""Runs and metrics in a SQL database. The only package that imports SQLAlchemy."""

from ablate.store.db import (
    DEFAULT_URL,
    Claim,
    NewRun,
    Store,
    StoreError,
    StoreFailure,
    database_file,
    default_checkpoint_dir,
    resolve_url,
)
from ablate.store.liveness import HEARTBEAT_S, STALE_AFTER_S, pid_alive, stale_reason, this_host
from ablate.store.merging import Dump, absorb, dump
from ablate.store.schema import SCHEMA_VERSION, STATUSES

__all__ = [
    "DEFAULT_URL",
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "Claim",
    "Dump",
    "NewRun",
    "Store",
    "StoreError",
    "StoreFailure",
    "absorb",
    "database_file",
    "default_checkpoint_dir",
    "dump",
    "pid_alive",
    "resolve_url",
    "stale_reason",
    "this_host",
    "SCHEMA_VERSION",
    "STATUSES",
]
