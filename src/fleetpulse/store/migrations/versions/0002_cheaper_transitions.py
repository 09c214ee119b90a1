"""Cheaper status transitions: no per-row foreign-key check on events, no unused pool index.

A silence sweep that marks 1 % of a million agents offline writes 10,000 registry rows and
10,000 events in one statement. Two costs in it bought nothing:

- the foreign key from ``agent_status_events`` to the registry ran one lookup (and a
  key-share lock) per event row, a fifth of the sweep. Events are only ever written by the
  store, in the same statement or transaction as the registry row they describe, and no
  path deletes agents, so the key guarded nothing the writers do not already guarantee;
- ``agent_registry_pool`` (pool_name, status) took an entry per status change but no query
  uses it: registry listings walk the primary key in ``agent_id`` order.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE agent_status_events"
        " DROP CONSTRAINT IF EXISTS agent_status_events_agent_id_fkey"
    )
    op.execute("DROP INDEX IF EXISTS agent_registry_pool")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS agent_registry_pool ON agent_registry (pool_name, status)"
    )
    op.execute(
        "ALTER TABLE agent_status_events ADD CONSTRAINT agent_status_events_agent_id_fkey"
        " FOREIGN KEY (agent_id) REFERENCES agent_registry (agent_id) ON DELETE CASCADE"
    )
