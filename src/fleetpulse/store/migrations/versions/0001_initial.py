"""Initial schema: two hypertables, the registry and status events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE agent_samples (
    agent_id              uuid             NOT NULL,
    sampled_at            timestamptz      NOT NULL,
    received_at           timestamptz      NOT NULL,
    seq                   bigint           NOT NULL,
    hostname              text             NOT NULL,
    pool_name             text             NOT NULL,
    work_state            text             NOT NULL,
    running_jobs          integer          NOT NULL DEFAULT 0,
    cpu_load_1m           double precision NOT NULL,
    cpu_load_5m           double precision NOT NULL,
    cpu_load_15m          double precision NOT NULL,
    cpu_cores             integer          NOT NULL,
    cpu_available_cores   integer          NOT NULL,
    mem_total_gb          double precision NOT NULL,
    mem_available_gb      double precision NOT NULL,
    gpu_type              text             NOT NULL,
    gpu_count             integer          NOT NULL,
    gpu_vram_total_gb     double precision NOT NULL,
    gpu_vram_available_gb double precision NOT NULL,
    errors                text[]           NOT NULL DEFAULT '{}'
);
SELECT create_hypertable('agent_samples', 'sampled_at',
                         chunk_time_interval => INTERVAL '1 day');
CREATE UNIQUE INDEX agent_samples_agent_time ON agent_samples (agent_id, sampled_at DESC);

CREATE TABLE gpu_samples (
    agent_id      uuid             NOT NULL,
    sampled_at    timestamptz      NOT NULL,
    gpu_index     smallint         NOT NULL,
    gpu_uuid      text             NOT NULL,
    name          text             NOT NULL,
    vram_total_gb double precision NOT NULL,
    vram_free_gb  double precision NOT NULL,
    util_pct      double precision,
    temp_c        double precision,
    power_w       double precision,
    error         text
);
SELECT create_hypertable('gpu_samples', 'sampled_at',
                         chunk_time_interval => INTERVAL '1 day');
CREATE UNIQUE INDEX gpu_samples_agent_gpu_time
    ON gpu_samples (agent_id, gpu_index, sampled_at DESC);

CREATE TABLE agent_registry (
    agent_id              uuid             PRIMARY KEY,
    hostname              text             NOT NULL,
    pool_name             text             NOT NULL,
    status                text             NOT NULL CHECK (status IN ('online', 'offline')),
    status_changed_at     timestamptz      NOT NULL,
    first_seen_at         timestamptz      NOT NULL,
    last_heartbeat_at     timestamptz      NOT NULL,
    last_sampled_at       timestamptz,
    last_seq              bigint           NOT NULL DEFAULT 0,
    agent_version         text             NOT NULL,
    principal             text,
    work_state            text             NOT NULL DEFAULT 'unknown',
    cpu_cores             integer          NOT NULL DEFAULT 0,
    cpu_available_cores   integer          NOT NULL DEFAULT 0,
    cpu_load_1m           double precision NOT NULL DEFAULT 0,
    mem_total_gb          double precision NOT NULL DEFAULT 0,
    mem_available_gb      double precision NOT NULL DEFAULT 0,
    gpu_type              text             NOT NULL DEFAULT 'none',
    gpu_count             integer          NOT NULL DEFAULT 0,
    gpu_vram_total_gb     double precision NOT NULL DEFAULT 0,
    gpu_vram_available_gb double precision NOT NULL DEFAULT 0,
    resource_metrics      jsonb            NOT NULL DEFAULT '{}'::jsonb,
    agent_stats           jsonb,
    updated_at            timestamptz      NOT NULL DEFAULT now()
);
-- The capacity query: online agents by free VRAM on one GPU, then available cores.
CREATE INDEX agent_registry_capacity ON agent_registry
    (gpu_vram_available_gb DESC, cpu_available_cores DESC) WHERE status = 'online';
-- The silence sweep touches only online agents, oldest heartbeat first.
CREATE INDEX agent_registry_silence ON agent_registry (last_heartbeat_at) WHERE status = 'online';
CREATE INDEX agent_registry_pool ON agent_registry (pool_name, status);
-- Readers that keep an in-memory copy fetch what changed since they last looked.
CREATE INDEX agent_registry_updated ON agent_registry (updated_at);

CREATE TABLE agent_status_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    uuid        NOT NULL REFERENCES agent_registry (agent_id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    from_status text        CHECK (from_status IN ('online', 'offline')),
    to_status   text        NOT NULL CHECK (to_status IN ('online', 'offline')),
    reason      text        NOT NULL
                CHECK (reason IN ('first_heartbeat', 'heartbeat', 'silence', 'shutdown'))
);
CREATE INDEX agent_status_events_agent_at ON agent_status_events (agent_id, at);
CREATE INDEX agent_status_events_at ON agent_status_events (at);

-- One notification per statement, carrying the newest id: listeners read what is new.
CREATE FUNCTION fleetpulse_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE newest bigint;
BEGIN
    SELECT max(id) INTO newest FROM new_events;
    IF newest IS NOT NULL THEN
        PERFORM pg_notify('fleetpulse_events', newest::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER agent_status_events_notify AFTER INSERT ON agent_status_events
    REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT
    EXECUTE FUNCTION fleetpulse_notify_events();

CREATE FUNCTION fleetpulse_notify_registry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleetpulse_registry', '');
    RETURN NULL;
END $$;
CREATE TRIGGER agent_registry_notify_insert AFTER INSERT ON agent_registry
    FOR EACH STATEMENT EXECUTE FUNCTION fleetpulse_notify_registry();
CREATE TRIGGER agent_registry_notify_update AFTER UPDATE ON agent_registry
    FOR EACH STATEMENT EXECUTE FUNCTION fleetpulse_notify_registry();
"""

DOWNGRADE = """
DROP TABLE IF EXISTS agent_status_events;
DROP TABLE IF EXISTS agent_registry;
DROP TABLE IF EXISTS gpu_samples;
DROP TABLE IF EXISTS agent_samples;
DROP FUNCTION IF EXISTS fleetpulse_notify_events();
DROP FUNCTION IF EXISTS fleetpulse_notify_registry();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
