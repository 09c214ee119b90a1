"""The store: TimescaleDB connections, schema, writes and queries."""

from fleetpulse.store.engine import (
    RETRYABLE_DB_ERRORS,
    Database,
    Edition,
    connect,
    detect_edition,
    map_db_errors,
)
from fleetpulse.store.migrate import (
    current_revision,
    downgrade,
    ensure_database,
    head_revision,
    upgrade,
)

__all__ = [
    "RETRYABLE_DB_ERRORS",
    "Database",
    "Edition",
    "connect",
    "current_revision",
    "detect_edition",
    "downgrade",
    "ensure_database",
    "head_revision",
    "map_db_errors",
    "upgrade",
]
