"""Presence and GPU health in the registry: whether the owner offers the machine, and why not.

- ``agent_registry`` gains the latest heartbeat's presence (``user_idle_s``,
  ``presence_locked``, ``presence_source``), ``offered`` (true for agents that do not say:
  older agents are offered as before) with ``withheld_reason``, and ``gpu_health``: the GPUs
  that are not ``ok`` (uuid or index -> ``degraded``/``failed``), which ingest compares to
  tell a change of health.
- ``agent_status_events`` gains the reasons ``withheld``, ``offered`` and ``gpu_health``
  (recorded with from = to = the agent's status, so spans of status are unchanged).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

REASONS_BEFORE = (
    "first_heartbeat",
    "heartbeat",
    "silence",
    "shutdown",
    "cordon",
    "uncordon",
    "claim_created",
    "claim_renewed",
    "claim_released",
    "claim_expired",
)
NEW_REASONS = ("withheld", "offered", "gpu_health")


def _reason_check(reasons: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{r}'" for r in reasons)
    return (
        "ALTER TABLE agent_status_events"
        " DROP CONSTRAINT IF EXISTS agent_status_events_reason_check;"
        " ALTER TABLE agent_status_events ADD CONSTRAINT agent_status_events_reason_check"
        f" CHECK (reason IN ({listed}))"
    )


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE agent_registry
    ADD COLUMN user_idle_s      double precision,
    ADD COLUMN presence_locked  boolean,
    ADD COLUMN presence_source  text,
    ADD COLUMN offered          boolean NOT NULL DEFAULT true,
    ADD COLUMN withheld_reason  text,
    ADD COLUMN gpu_health       jsonb;
"""
    )
    op.execute(_reason_check(REASONS_BEFORE + NEW_REASONS))


def downgrade() -> None:
    listed = ", ".join(f"'{r}'" for r in NEW_REASONS)
    op.execute(f"DELETE FROM agent_status_events WHERE reason IN ({listed})")
    op.execute(_reason_check(REASONS_BEFORE))
    op.execute(
        """
ALTER TABLE agent_registry
    DROP COLUMN IF EXISTS gpu_health,
    DROP COLUMN IF EXISTS withheld_reason,
    DROP COLUMN IF EXISTS offered,
    DROP COLUMN IF EXISTS presence_source,
    DROP COLUMN IF EXISTS presence_locked,
    DROP COLUMN IF EXISTS user_idle_s;
"""
    )
