"""Fixtures handing tests real services: a migrated TimescaleDB database and a RabbitMQ vhost.

URLs come from ``FLEETPULSE_TEST_DATABASE_URL`` (an admin URL of the server) and
``FLEETPULSE_TEST_AMQP_URL`` / ``FLEETPULSE_TEST_AMQP_MANAGEMENT_URL``; without them the
local defaults of ``make services`` are used, or testcontainers when a Docker engine
answers. When a service cannot be had, integration tests skip with one line — and
fail with that line under ``CI=true``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

DEFAULT_DB_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_AMQP_MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"
TABLES = (
    "agent_status_events",
    "agent_registry",
    "agent_samples",
    "gpu_samples",
    "claims",
    "cordons",
    "ingest_watermarks",
)
RUN_ID = uuid.uuid4().hex[:8]

# tests/cluster need the three-node cluster of scripts/cluster.sh and take minutes: only
# `make test-cluster` (which starts that cluster) collects them.
collect_ignore = [] if os.environ.get("FLEETPULSE_CLUSTER_TESTS") else ["cluster"]

# Every test process, and every process a test starts (ingest, API, agents, kernels), imports
# the same few thousand modules. With PYTHONDONTWRITEBYTECODE set (common in containers) each
# of them compiled every module from source again: a third of the suite's CPU time. Caches go
# to __pycache__ folders, which git ignores.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


# Whole-system scenarios: each starts several processes (ingest, API, agents, Prometheus,
# kernels, a fresh virtualenv) or waits out real outages. `make test` leaves them out to stay
# under a minute; `make test-scenarios` runs them, and CI runs both.
SCENARIO_FILES = frozenset(
    {
        "tests/integration/test_fleet_up.py",
        "tests/integration/test_dashboards_promql.py",
        "tests/integration/test_notebooks.py",
        "tests/integration/test_light_install.py",
        "tests/integration/agent/test_agent_faults.py",
        "tests/integration/agent/test_agent_cli.py",
        "tests/integration/agent/test_failover.py",
        "tests/integration/ingest/test_outage_silence.py",
        "tests/integration/ingest/test_ingest_process.py",
        "tests/integration/ingest/test_memory_bounds.py",
        "tests/integration/ingest/test_topology_repair.py",
        "tests/integration/api/test_claims_race.py",
        "tests/integration/api/test_dispatch_example.py",
        "tests/integration/api/test_server.py",
    }
)
_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if item.path.resolve().relative_to(_ROOT).as_posix() in SCENARIO_FILES:
            item.add_marker(pytest.mark.scenario)
    # Longest files first (xdist keeps this order with --no-loadscope-reorder), so that no
    # worker picks up a process-starting end-to-end test when the others are done.
    items.sort(key=_expected_seconds, reverse=True)


def _expected_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    return float(marker.args[0]) if marker else 0.0


def _unavailable(line: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(line, pytrace=False)
    pytest.skip(line)


def _docker_available() -> bool:
    return (
        Path("/var/run/docker.sock").exists() and os.environ.get("FLEETPULSE_TEST_NO_DOCKER") != "1"
    )


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def db_admin_url() -> Iterator[str]:
    url = os.environ.get("FLEETPULSE_TEST_DATABASE_URL")
    container = None
    if url is None and _docker_available():  # pragma: no cover - needs a Docker engine
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("timescale/timescaledb:latest-pg15", driver=None)
        container.start()
        url = container.get_connection_url()
    url = url or DEFAULT_DB_ADMIN_URL
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0]
        _unavailable(
            f"database at {url} is unreachable ({reason}); run 'make services' "
            "or set FLEETPULSE_TEST_DATABASE_URL"
        )
    yield url
    if container is not None:  # pragma: no cover
        container.stop()


@pytest.fixture(scope="session")
def database_url(db_admin_url: str, worker_id: str) -> Iterator[str]:
    """A fresh, migrated TimescaleDB database for this test run (one per xdist worker)."""
    # Imported here, not at the top: the xdist controller loads this conftest too but runs
    # no test, and the store (alembic, sqlalchemy, psycopg) delays the workers' start.
    from fleetpulse import store
    from tests.fixtures.ingest import close_connections

    name = f"fleetpulse_test_{RUN_ID}_{worker_id}"
    with psycopg.connect(db_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(db_admin_url, name)
    try:
        store.upgrade(url)
    except Exception as exc:
        _unavailable(f"could not migrate {url}: {exc}".splitlines()[0])
    yield url
    close_connections()
    with psycopg.connect(db_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db_url(database_url: str) -> str:
    """The run's database, emptied before the test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in TABLES)
            )
        )
    return database_url


@pytest.fixture(scope="session")
def _amqp_urls() -> Iterator[tuple[str, str]]:
    amqp = os.environ.get("FLEETPULSE_TEST_AMQP_URL")
    management = os.environ.get("FLEETPULSE_TEST_AMQP_MANAGEMENT_URL")
    container = None
    if amqp is None and _docker_available():  # pragma: no cover - needs a Docker engine
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3-management")
        container.with_exposed_ports(5672, 15672)
        container.start()
        host = container.get_container_host_ip()
        amqp = f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"
        management = f"http://guest:guest@{host}:{container.get_exposed_port(15672)}"
    amqp = amqp or DEFAULT_AMQP_URL
    management = management or DEFAULT_AMQP_MANAGEMENT_URL
    try:
        httpx.get(f"{management}/api/overview", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        _unavailable(
            f"RabbitMQ management API at {_masked(management)} is unreachable ({exc}); "
            "run 'make services' or set FLEETPULSE_TEST_AMQP_MANAGEMENT_URL"
        )
    yield amqp, management
    if container is not None:  # pragma: no cover
        container.stop()


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port}"))


class RabbitAdmin:
    """The management HTTP API of the test broker, for vhosts and inspection."""

    def __init__(self, management_url: str) -> None:
        parts = urlsplit(management_url)
        base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
        self.client = httpx.Client(
            base_url=base, auth=(parts.username or "guest", parts.password or "guest"), timeout=10
        )
        self.user = parts.username or "guest"

    def create_vhost(self, vhost: str) -> None:
        self.client.put(f"/api/vhosts/{quote(vhost, safe='')}").raise_for_status()
        self.client.put(
            f"/api/permissions/{quote(vhost, safe='')}/{self.user}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()

    def delete_vhost(self, vhost: str) -> None:
        self.client.delete(f"/api/vhosts/{quote(vhost, safe='')}")

    def queue(self, vhost: str, name: str) -> dict[str, object]:
        response = self.client.get(f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


@pytest.fixture(scope="session")
def rabbit_admin(_amqp_urls: tuple[str, str]) -> Iterator[RabbitAdmin]:
    admin = RabbitAdmin(_amqp_urls[1])
    yield admin
    admin.client.close()


@pytest.fixture
def amqp_vhost() -> str:
    return f"fleetpulse_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def amqp_url(
    _amqp_urls: tuple[str, str], rabbit_admin: RabbitAdmin, amqp_vhost: str
) -> Iterator[str]:
    """An AMQP URL to a fresh vhost of the real broker, deleted after the test."""
    rabbit_admin.create_vhost(amqp_vhost)
    parts = urlsplit(_amqp_urls[0])
    yield urlunsplit(parts._replace(path=f"/{quote(amqp_vhost, safe='')}"))
    rabbit_admin.delete_vhost(amqp_vhost)
