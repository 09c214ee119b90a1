"""scripts/services.sh leaves the kernel's huge-page setting alone unless asked
(FLEETPULSE_HUGE_PAGES=1). Sourced, the script only defines its functions; these read
/proc and never write it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "services.sh"


def _probe(function: str, tmp_path: Path, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "FLEETPULSE_HUGE_PAGES"}
    environ.update(env, FLEETPULSE_SERVICES_LOG=str(tmp_path / "services.log"))
    done = subprocess.run(
        [
            "bash",
            "-c",
            f'source "$1"; if {function}; then echo yes; else echo no; fi',
            "test",
            SCRIPT,
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("env", [{}, {"FLEETPULSE_HUGE_PAGES": "0"}, {"FLEETPULSE_HUGE_PAGES": ""}])
def test_huge_pages_are_not_ours_unless_asked(env: dict[str, str], tmp_path: Path) -> None:
    assert _probe("huge_pages_ours", tmp_path, **env) == "no"
    # nothing to arrange, so nothing restarts PostgreSQL to get them
    assert _probe("huge_pages_settled", tmp_path, **env) == "yes"


def test_the_status_line_states_the_page_setting(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "FLEETPULSE_HUGE_PAGES"}
    environ["FLEETPULSE_SERVICES_LOG"] = str(tmp_path / "services.log")
    line = subprocess.run(
        ["bash", "-c", 'source "$1"; huge_pages_state', "test", SCRIPT],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    total = int(Path("/proc/sys/vm/nr_hugepages").read_text())
    if total > 0:
        assert line == f"vm.nr_hugepages={total}"
    else:
        assert "FLEETPULSE_HUGE_PAGES=1" in line
