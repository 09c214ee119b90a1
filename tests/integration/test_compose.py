"""compose.yaml is valid for Docker users: parsed by a real compose parser, every command real.

No Docker engine runs here, so Debian's ``docker-compose config`` (which needs none) parses
and validates the file, and each fleetpulse service's command is parsed by the real CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetpulse.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        line = "docker-compose (Debian package docker-compose) is missing; run 'make services'"
        if os.environ.get("CI", "").lower() in {"1", "true"}:
            pytest.fail(line, pytrace=False)
        pytest.skip(line)
    result = subprocess.run(
        [binary, "-f", str(ROOT / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def test_every_component_is_a_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {
        "rabbitmq",
        "timescaledb",
        "migrate",
        "ingest",
        "api",
        "simulate",
        "prometheus",
        "grafana",
    }


def test_fleetpulse_services_are_built_from_the_repo_dockerfile(compose: dict[str, Any]) -> None:
    built = {name: s for name, s in compose["services"].items() if "build" in s}
    assert set(built) == {"migrate", "ingest", "api", "simulate"}
    for service in built.values():
        assert Path(service["build"]["context"]) == ROOT
    assert (ROOT / "Dockerfile").is_file()


def test_every_service_command_exists_in_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        args = parser.parse_args(service["command"])
        assert callable(args.handler), name


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in {"migrate", "simulate"}:
            continue
        assert "healthcheck" in service, name


def test_dependencies_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    for name in ("ingest", "api"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
    assert services["ingest"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_timescaledb_image_has_the_extension(compose: dict[str, Any]) -> None:
    assert compose["services"]["timescaledb"]["image"].startswith("timescale/timescaledb")


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                sources.append(volume["source"])
        elif volume.split(":")[0].startswith(("/", ".")):
            sources.append(volume.split(":")[0])
    return sources


def test_mounted_paths_exist_in_the_repo(compose: dict[str, Any]) -> None:
    mounted = {name: _bind_sources(s) for name, s in compose["services"].items()}
    assert mounted["prometheus"]
    assert len(mounted["grafana"]) == 2
    for name, sources in mounted.items():
        for source in sources:
            path = (ROOT / source).resolve()
            assert path.is_relative_to(ROOT), f"{name} mounts {source} outside the repo"
            assert path.exists(), f"{name} mounts missing {source}"


def test_the_cluster_profile_has_three_broker_nodes_that_find_each_other(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    nodes = sorted(name for name, s in services.items() if "cluster" in s.get("profiles", []))
    assert nodes == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    cookies = {services[n]["environment"]["RABBITMQ_ERLANG_COOKIE"] for n in nodes}
    assert len(cookies) == 1  # one cookie, or the nodes cannot talk
    conf_path = ROOT / "deploy/rabbitmq-cluster/rabbitmq.conf"
    conf = conf_path.read_text(encoding="utf-8")
    for node in nodes:
        assert services[node]["hostname"] == node
        assert f"rabbit@{node}" in conf
        assert str(conf_path) in _bind_sources(services[node])
        assert "healthcheck" in services[node]
    assert "cluster_partition_handling = pause_minority" in conf
    assert "rabbitmq" in services  # the default single node stays the default
    assert "profiles" not in services["rabbitmq"]
    for name in ("ingest", "api", "simulate"):
        assert "FLEETPULSE_AMQP_URLS" in services[name]["environment"]
