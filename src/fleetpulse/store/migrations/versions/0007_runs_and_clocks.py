"""Trustworthy answers (issue 11, parts 2 and 3): an agent's clock orders nothing and is
watched; two machines with one agent_id are told apart. (Issue 11's second migration:
0006 brought part 1's watermarks alone.)

- ``agent_registry``: ``incarnation`` (the run of the agent whose state the row holds: with
  ``last_seq`` it orders samples, receive order between runs), ``state_received_at`` (the
  receive time of that state; backfilled with ``last_heartbeat_at``) and ``clock_offset_s``
  (the agent's clock minus ingest's at that heartbeat).
- ``agent_samples.clock_skewed``: the agent's ``sampled_at`` lay outside the accepted bounds
  around the receive time, so the row is keyed at the receive time instead.
- event reason ``clock_skew``: an agent's clock went off by more than the threshold.
- identity clash (two machines with one ``agent_id``): ``agent_registry.other_incarnation``,
  ``other_seq``, ``other_seen_at`` and ``identity_clash_since``; event reason
  ``identity_clash``; ``incarnation`` in ``agent_samples`` and ``gpu_samples`` (the nil UUID
  for agents that send none) and in their unique keys, after ``sampled_at`` (history reads
  still use the key's leading columns), so both machines keep their samples.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The reasons as 0005 (presence and GPU health) left them; 0006 kept them.
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
_NEW_REASONS = ("clock_skew", "identity_clash")
_NIL = "'00000000-0000-0000-0000-000000000000'::uuid"


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
        "ALTER TABLE agent_registry ADD COLUMN incarnation uuid,"
        " ADD COLUMN state_received_at timestamptz,"
        " ADD COLUMN clock_offset_s double precision,"
        " ADD COLUMN other_incarnation uuid,"
        " ADD COLUMN other_seq bigint,"
        " ADD COLUMN other_seen_at timestamptz,"
        " ADD COLUMN identity_clash_since timestamptz"
    )
    op.execute("UPDATE agent_registry SET state_received_at = last_heartbeat_at")
    op.execute(
        "ALTER TABLE agent_samples ADD COLUMN clock_skewed boolean NOT NULL DEFAULT false,"
        f" ADD COLUMN incarnation uuid NOT NULL DEFAULT {_NIL}"
    )
    op.execute(f"ALTER TABLE gpu_samples ADD COLUMN incarnation uuid NOT NULL DEFAULT {_NIL}")
    op.execute(
        "CREATE UNIQUE INDEX agent_samples_agent_time_run"
        " ON agent_samples (agent_id, sampled_at DESC, incarnation)"
    )
    op.execute("DROP INDEX IF EXISTS agent_samples_agent_time")
    op.execute(
        "CREATE UNIQUE INDEX gpu_samples_agent_gpu_time_run"
        " ON gpu_samples (agent_id, gpu_index, sampled_at DESC, incarnation)"
    )
    op.execute("DROP INDEX IF EXISTS gpu_samples_agent_gpu_time")
    _reasons(_REASONS + _NEW_REASONS)


def downgrade() -> None:
    listed = ", ".join(f"'{r}'" for r in _NEW_REASONS)
    op.execute(f"DELETE FROM agent_status_events WHERE reason IN ({listed})")
    _reasons(_REASONS)
    # Two machines' samples at one instant become one again (the first kept).
    for table, key in (
        ("agent_samples", ("agent_id", "sampled_at")),
        ("gpu_samples", ("agent_id", "gpu_index", "sampled_at")),
    ):
        same = " AND ".join(f"s.{k} = d.{k}" for k in key)
        op.execute(
            f"DELETE FROM {table} s USING {table} d WHERE {same} AND s.incarnation > d.incarnation"
        )
    op.execute(
        "CREATE UNIQUE INDEX agent_samples_agent_time ON agent_samples (agent_id, sampled_at DESC)"
    )
    op.execute("DROP INDEX IF EXISTS agent_samples_agent_time_run")
    op.execute(
        "CREATE UNIQUE INDEX gpu_samples_agent_gpu_time"
        " ON gpu_samples (agent_id, gpu_index, sampled_at DESC)"
    )
    op.execute("DROP INDEX IF EXISTS gpu_samples_agent_gpu_time_run")
    op.execute("ALTER TABLE gpu_samples DROP COLUMN IF EXISTS incarnation")
    op.execute(
        "ALTER TABLE agent_samples DROP COLUMN IF EXISTS clock_skewed,"
        " DROP COLUMN IF EXISTS incarnation"
    )
    op.execute(
        "ALTER TABLE agent_registry DROP COLUMN IF EXISTS incarnation,"
        " DROP COLUMN IF EXISTS state_received_at,"
        " DROP COLUMN IF EXISTS clock_offset_s,"
        " DROP COLUMN IF EXISTS other_incarnation,"
        " DROP COLUMN IF EXISTS other_seq,"
        " DROP COLUMN IF EXISTS other_seen_at,"
        " DROP COLUMN IF EXISTS identity_clash_since"
    )
