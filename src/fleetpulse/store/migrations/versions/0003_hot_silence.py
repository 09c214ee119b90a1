"""Silence transitions as heap-only (HOT) updates; events indexed by time with BRIN.

A sweep that marks 1 % of a million agents offline changed ``status`` on 10,000 rows.
``status`` was in the predicate of two partial indexes, so every such update wrote a new
tuple wherever there was room and an entry into each of the other registry indexes (about a
third of the sweep). Now no registry index mentions ``status`` or ``status_changed_at`` and
the sweep leaves ``updated_at`` alone, so a sweep's updates stay on their page without
touching any index (fillfactor 90 leaves them the room):

- ``agent_registry_heartbeat`` (last_heartbeat_at) replaces the partial
  ``agent_registry_silence``; the detector walks only the slice of it that crossed the
  threshold since its last sweep, so offline agents are not revisited every second;
- ``agent_registry_capacity`` loses its ``WHERE status = 'online'``;
- readers that follow the registry learn of silence transitions from their events.

``agent_status_events_at`` becomes a BRIN index: events are appended in time order, and a
B-tree entry per event cost a sixth of a sweep for range scans BRIN serves as well.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS agent_registry_silence")
    op.execute(
        "CREATE INDEX IF NOT EXISTS agent_registry_heartbeat ON agent_registry (last_heartbeat_at)"
    )
    op.execute("DROP INDEX IF EXISTS agent_registry_capacity")
    op.execute(
        "CREATE INDEX agent_registry_capacity ON agent_registry"
        " (gpu_vram_available_gb DESC, cpu_available_cores DESC)"
    )
    op.execute("ALTER TABLE agent_registry SET (fillfactor = 90)")
    op.execute("DROP INDEX IF EXISTS agent_status_events_at")
    op.execute("CREATE INDEX agent_status_events_at ON agent_status_events USING brin (at)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS agent_status_events_at")
    op.execute("CREATE INDEX agent_status_events_at ON agent_status_events (at)")
    op.execute("ALTER TABLE agent_registry RESET (fillfactor)")
    op.execute("DROP INDEX IF EXISTS agent_registry_capacity")
    op.execute(
        "CREATE INDEX agent_registry_capacity ON agent_registry"
        " (gpu_vram_available_gb DESC, cpu_available_cores DESC) WHERE status = 'online'"
    )
    op.execute("DROP INDEX IF EXISTS agent_registry_heartbeat")
    op.execute(
        "CREATE INDEX IF NOT EXISTS agent_registry_silence ON agent_registry (last_heartbeat_at)"
        " WHERE status = 'online'"
    )
