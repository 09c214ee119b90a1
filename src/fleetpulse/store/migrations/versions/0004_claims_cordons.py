"""Claims and cordons: short leases on capacity, agents and GPUs taken out of the offer.

- ``claims``: one row per claim, the GPUs it holds (with the VRAM on each) as jsonb, cores,
  memory, who holds it and until when. A claim is active while ``ended_at`` is null and
  ``expires_at`` is in the future, so expiry needs no sweeper; a background cleanup marks
  expired claims ended (with an event) and deletes ended ones after a while. The partial
  index serves "active claims of this agent", read inside every claim decision.
- ``cordons``: an agent (``gpu_uuid`` = '') or one GPU out of the offer, with who, why and
  since when. Written only by the API, so heartbeats never overwrite one.
- ``agent_status_events`` gains the reasons ``cordon``, ``uncordon``, ``claim_created``,
  ``claim_renewed``, ``claim_released``, ``claim_expired`` (recorded with from = to = the
  agent's status, so spans of status are unchanged) and a ``detail`` jsonb that says which
  claim or GPU, who and why.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUS_REASONS = ("first_heartbeat", "heartbeat", "silence", "shutdown")
NEW_REASONS = (
    "cordon",
    "uncordon",
    "claim_created",
    "claim_renewed",
    "claim_released",
    "claim_expired",
)


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
CREATE TABLE claims (
    claim_id    uuid             PRIMARY KEY,
    agent_id    uuid             NOT NULL,
    holder      text             NOT NULL,
    gpus        jsonb            NOT NULL DEFAULT '[]'::jsonb,
    cpu_cores   integer          NOT NULL DEFAULT 0,
    mem_gb      double precision NOT NULL DEFAULT 0,
    created_at  timestamptz      NOT NULL,
    expires_at  timestamptz      NOT NULL,
    ended_at    timestamptz,
    end_reason  text             CHECK (end_reason IN ('released', 'expired'))
);
CREATE INDEX claims_active ON claims (agent_id, expires_at) WHERE ended_at IS NULL;
CREATE INDEX claims_expiry ON claims (expires_at) WHERE ended_at IS NULL;
CREATE INDEX claims_ended ON claims (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE cordons (
    agent_id    uuid        NOT NULL,
    gpu_uuid    text        NOT NULL DEFAULT '',
    reason      text        NOT NULL,
    cordoned_by text        NOT NULL,
    cordoned_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, gpu_uuid)
);

ALTER TABLE agent_status_events ADD COLUMN detail jsonb;
"""
    )
    op.execute(_reason_check(STATUS_REASONS + NEW_REASONS))


def downgrade() -> None:
    listed = ", ".join(f"'{r}'" for r in NEW_REASONS)
    op.execute(f"DELETE FROM agent_status_events WHERE reason IN ({listed})")
    op.execute(_reason_check(STATUS_REASONS))
    op.execute("ALTER TABLE agent_status_events DROP COLUMN IF EXISTS detail")
    op.execute("DROP TABLE IF EXISTS cordons")
    op.execute("DROP TABLE IF EXISTS claims")
