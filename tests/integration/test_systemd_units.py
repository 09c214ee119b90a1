"""packaging/systemd: checked by systemd's own ``systemd-analyze verify`` (it runs without
systemd as PID 1) and ``security --offline``, and read here for what the README promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetpulse.cli import build_parser
from tests.conftest import _unavailable

UNITS = Path(__file__).parents[2] / "packaging" / "systemd"
INSTALLED_BINARY = "/opt/fleetpulse/bin/fleetpulse"
SERVICES = {
    "fleetpulse-agent.service": "agent",
    "fleetpulse-ingest.service": "ingest",
    "fleetpulse-api.service": "api",
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "2",
    "User": "fleetpulse",
}


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        _unavailable("systemd-analyze is missing; run 'make services' (Debian package systemd)")
    assert tool is not None
    return tool


@pytest.fixture
def runnable_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart= pointing at this checkout's fleetpulse (verify checks that
    the binary exists and is executable)."""
    here = Path(sys.executable).parent / "fleetpulse"
    assert here.exists()
    copies = []
    for name in SERVICES:
        copy = tmp_path / name
        copy.write_text((UNITS / name).read_text().replace(INSTALLED_BINARY, str(here)))
        copies.append(copy)
    return copies


def test_systemd_analyze_verify_finds_nothing(runnable_units: list[Path]) -> None:
    done = subprocess.run(
        [_analyze(), "verify", *map(str, runnable_units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # unknown keys and bad values are warnings, rc 0


def test_exposure_stays_low(runnable_units: list[Path]) -> None:
    for unit in runnable_units:
        done = subprocess.run(
            [_analyze(), "security", "--offline=true", "--threshold=20", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout.splitlines()[-1:]


def _service(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    # repeated keys (EnvironmentFile=, DeviceAllow=) accumulate, as systemd reads them
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize(("name", "command"), SERVICES.items())
def test_units_are_hardened_restart_and_read_settings(name: str, command: str) -> None:
    unit = _service(name)
    for key, want in HARDENING.items():
        assert unit.get(key) == [want], f"{name}: {key}"
    assert any(f.endswith("/etc/fleetpulse/fleetpulse.env") for f in unit["EnvironmentFile"])
    assert unit["ExecStart"] == [f"{INSTALLED_BINARY} {command}"]
    # the command exists in this CLI
    assert build_parser().parse_args([command]).command == command


def test_the_agent_keeps_its_state_and_sees_only_the_nvidia_devices() -> None:
    unit = _service("fleetpulse-agent.service")
    assert unit["StateDirectory"] == ["fleetpulse-agent"]
    assert unit["Environment"] == ["FLEETPULSE_AGENT_STATE_DIR=%S/fleetpulse-agent"]
    assert unit["DevicePolicy"] == ["closed"]
    assert "char-nvidia-frontend rw" in unit["DeviceAllow"]
    assert "PrivateDevices" not in unit  # it would hide /dev/nvidia*
    for server in ("fleetpulse-ingest.service", "fleetpulse-api.service"):
        assert _service(server)["PrivateDevices"] == ["yes"]
