"""Trustworthy answers (issue 11): silence judged against what ingest has seen; an agent's
clock orders nothing and is watched.

- ``ingest_watermarks``: one row per ingest worker, the receive time before which it has
  committed every heartbeat the broker held (``seen_through``), and when it said so
  (``reported_at``). The silence detector judges at the least fresh watermark, so an ingest
  or database outage does not mark the fleet offline.
- ``agent_registry``: ``incarnation`` (the run of the agent whose state the row holds: with
  ``last_seq`` it orders samples, receive order between runs), ``state_received_at`` (the
  receive time of that state; backfilled with ``last_heartbeat_at``) and ``clock_offset_s``
  (the agent's clock minus ingest's at that heartbeat).
- ``agent_samples.clock_skewed``: the agent's ``sampled_at`` lay outside the accepted bounds
  around the receive time, so the row is keyed at the receive time instead.
- event reason ``clock_skew``: an agent's clock went off by more than the threshold.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The reasons as 0005 (presence and GPU health) left them.
_REASONS = (
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
    "withheld",
    "offered",
    "gpu_health",
)
_NEW_REASONS = ("clock_skew",)


def _reasons(reasons: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{r}'" for r in reasons)
    op.execute(
        "ALTER TABLE agent_status_events DROP CONSTRAINT IF EXISTS agent_status_events_reason_check"
    )
    op.execute(
        "ALTER TABLE agent_status_events ADD CONSTRAINT agent_status_events_reason_check"
        f" CHECK (reason IN ({listed})) NOT VALID"
    )


def upgrade() -> None:
    op.execute(
        "CREATE TABLE ingest_watermarks ("
        " worker text PRIMARY KEY,"
        " seen_through timestamptz NOT NULL,"
        " reported_at timestamptz NOT NULL)"
    )
    op.execute(
        "ALTER TABLE agent_registry ADD COLUMN incarnation uuid,"
        " ADD COLUMN state_received_at timestamptz,"
        " ADD COLUMN clock_offset_s double precision"
    )
    op.execute("UPDATE agent_registry SET state_received_at = last_heartbeat_at")
    op.execute("ALTER TABLE agent_samples ADD COLUMN clock_skewed boolean NOT NULL DEFAULT false")
    _reasons(_REASONS + _NEW_REASONS)


def downgrade() -> None:
    listed = ", ".join(f"'{r}'" for r in _NEW_REASONS)
    op.execute(f"DELETE FROM agent_status_events WHERE reason IN ({listed})")
    _reasons(_REASONS)
    op.execute("ALTER TABLE agent_samples DROP COLUMN IF EXISTS clock_skewed")
    op.execute(
        "ALTER TABLE agent_registry DROP COLUMN IF EXISTS incarnation,"
        " DROP COLUMN IF EXISTS state_received_at,"
        " DROP COLUMN IF EXISTS clock_offset_s"
    )
    op.execute("DROP TABLE IF EXISTS ingest_watermarks")
