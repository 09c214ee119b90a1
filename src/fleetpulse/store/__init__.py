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

# isort: split
# ingest write path, silence sweep and retention
from fleetpulse.store.liveness import (
    DETECTOR_LOCK_KEY,
    release_detector_lock,
    sweep_silent,
    try_detector_lock,
)
from fleetpulse.store.retention import HYPERTABLES, apply_retention
from fleetpulse.store.writes import (
    AgentState,
    BatchWrite,
    EventRow,
    GoodbyeRow,
    GpuRow,
    RegistryRow,
    SampleRow,
    WriteMethod,
    WriteResult,
    lock_agents,
    write_batch,
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
# ingest write path, silence sweep and retention
__all__ += [
    "DETECTOR_LOCK_KEY",
    "HYPERTABLES",
    "AgentState",
    "BatchWrite",
    "EventRow",
    "GoodbyeRow",
    "GpuRow",
    "RegistryRow",
    "SampleRow",
    "WriteMethod",
    "WriteResult",
    "apply_retention",
    "lock_agents",
    "release_detector_lock",
    "sweep_silent",
    "try_detector_lock",
    "write_batch",
]
