"""Prometheus configuration and alert rules, checked by the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.dash import require_binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
REQUIRED_ALERTS = {
    "FleetpulseAgentOffline",
    "FleetpulsePoolCapacityLow",
    "FleetpulseIngestLagHigh",
    "FleetpulseDeadLettersGrowing",
    "FleetpulseGpuProbeFailures",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROMETHEUS_DIR,
        check=False,
    )


def alerts() -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found[rule["alert"]] = rule
    return found


def test_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool rule tests found"
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_issue_alerts_exist_with_severity_and_summary() -> None:
    found = alerts()
    assert set(found) >= REQUIRED_ALERTS
    for name, rule in found.items():
        labels = rule.get("labels")
        annotations = rule.get("annotations")
        assert isinstance(labels, dict), name
        assert labels.get("severity") in {"warning", "critical"}, name
        assert isinstance(annotations, dict), name
        assert annotations.get("summary"), name


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_every_alert_is_tested_firing_and_quiet(alert: str) -> None:
    firing = quiet = False
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["alertname"] == alert:
                    firing |= bool(check.get("exp_alerts"))
                    quiet |= not check.get("exp_alerts")
    assert firing, f"{alert} is never expected to fire"
    assert quiet, f"{alert} is never expected to stay quiet"


def test_a_broken_rule_test_fails(tmp_path: Path) -> None:
    """The rule tests can fail: expecting an alert that the series do not raise is caught."""
    broken = tmp_path / "broken_test.yml"
    broken.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(p) for p in RULE_FILES],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {
                                "series": 'fleetpulse_agent_up{agent_id="a", hostname="h", '
                                'pool="p"}',
                                "values": "1x10",
                            }
                        ],
                        "alert_rule_test": [
                            {
                                "eval_time": "5m",
                                "alertname": "FleetpulseAgentOffline",
                                "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    result = promtool("test", "rules", broken)
    assert result.returncode != 0
    assert "FleetpulseAgentOffline" in result.stdout + result.stderr
