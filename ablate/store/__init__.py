"""Runs and metrics in a SQL database. The only package that imports SQLAlchemy."""

from ablate.store.db import DEFAULT_URL, HEARTBEAT_S, STALE_AFTER_S, Claim, NewRun, Store, StoreError, resolve_url
from ablate.store.schema import SCHEMA_VERSION, STATUSES

__all__ = ["DEFAULT_URL", "HEARTBEAT_S", "STALE_AFTER_S", "Claim", "NewRun", "Store", "StoreError", "resolve_url", "SCHEMA_VERSION", "STATUSES"]
