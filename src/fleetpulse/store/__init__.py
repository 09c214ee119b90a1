"""The store: TimescaleDB connections, schema, writes and queries."""

from fleetpulse.store.engine import (
    RETRYABLE_DB_ERRORS,
    Database,
    Edition,
    connect,
    detect_edition,
    map_db_errors,
)

# Read side of the API: queries, the in-process registry index, the event feed.
from fleetpulse.store.event_feed import EventFeed, EventSubscription
from fleetpulse.store.migrate import (
    current_revision,
    downgrade,
    ensure_database,
    head_revision,
    upgrade,
)
from fleetpulse.store.queries import (
    AgentRecord,
    GpuBucket,
    GpuState,
    HostBucket,
    StatusEvent,
    fetch_agent,
    fetch_agents,
    fetch_events,
    fetch_history,
    fetch_registry,
    fetch_reliability,
    fetch_silenced,
    latest_event_id,
    ping,
    sql_capacity,
)
from fleetpulse.store.registry_index import (
    CapacityFilter,
    CapacityMatch,
    RegistryFollower,
    RegistryIndex,
    matching_gpus,
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

__all__ = [  # noqa: RUF022 - one block per subsystem keeps merges easy
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
    # read side of the API
    "AgentRecord",
    "CapacityFilter",
    "CapacityMatch",
    "EventFeed",
    "EventSubscription",
    "GpuBucket",
    "GpuState",
    "HostBucket",
    "RegistryFollower",
    "RegistryIndex",
    "StatusEvent",
    "fetch_agent",
    "fetch_agents",
    "fetch_events",
    "fetch_history",
    "fetch_registry",
    "fetch_silenced",
    "fetch_reliability",
    "latest_event_id",
    "matching_gpus",
    "ping",
    "sql_capacity",
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
