"""`pip install fleetpulse` is the agent only: in a fresh virtualenv with the locked agent
dependencies (no extras), `fleetpulse agent --help` works, the server stack is absent, and a
server command says in one line which extra to install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow(12)]

ROOT = Path(__file__).resolve().parents[2]
# `uv run` (make test) names itself in $UV; else uv on PATH, else the Makefile's way
UV = [os.environ.get("UV") or shutil.which("uv") or "python3"] + (
    [] if (os.environ.get("UV") or shutil.which("uv")) else ["-m", "uv"]
)


def uv(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UV, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if uv("--version").returncode != 0:
        pytest.fail("uv is missing (make bootstrap installs it)")
    venv = tmp_path_factory.mktemp("light") / "venv"
    requirements = venv.parent / "agent-requirements.txt"
    exported = uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-q")
    assert exported.returncode == 0, exported.stderr
    requirements.write_text(exported.stdout)
    python = str(venv / "bin" / "python")
    env = {**os.environ, "UV_SYSTEM_CERTS": "1"}
    for step in (
        ("venv", "-q", str(venv)),
        ("pip", "install", "-q", "--python", python, "-r", str(requirements)),
        ("pip", "install", "-q", "--python", python, "--no-deps", "."),
    ):
        done = uv(*step, env=env)
        assert done.returncode == 0, f"uv {' '.join(step)}: {done.stderr}"
    return venv


def run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "fleetpulse"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")},
    )


def test_the_agent_only_install_starts_the_agent_cli(light_venv: Path) -> None:
    done = run(light_venv, "agent", "--help")
    assert done.returncode == 0, done.stderr
    assert "run the desktop agent" in done.stdout
    python = str(light_venv / "bin" / "python")
    for heavy in ("sqlalchemy", "litestar", "polars", "psycopg", "numpy", "pyarrow"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True, check=False)
        assert probe.returncode != 0, f"{heavy} is installed with the agent"
    for needed in ("aio_pika", "msgspec", "psutil", "pynvml", "jeepney"):
        probe = subprocess.run([python, "-c", f"import {needed}"], capture_output=True, check=False)
        assert probe.returncode == 0, f"{needed} is missing from the agent install"


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (("api",), "server"),
        (("db", "current"), "server"),
        (("export", "--since", "2026-01-01", "--out", "x.parquet"), "analysis"),
    ],
)
def test_a_server_command_without_its_extra_says_which_to_install(
    light_venv: Path, command: tuple[str, ...], extra: str
) -> None:
    done = run(light_venv, *command)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pip install 'fleetpulse[{extra}]'" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_light_install_has_the_client_and_json_logs(light_venv: Path) -> None:
    code = (
        "import sys\n"
        "from fleetpulse.client import AsyncClient, Client\n"
        "from fleetpulse.logs import configure_logging\n"
        "configure_logging('INFO', 'json')\n"
        "import logging; logging.getLogger('fleetpulse.test').info('light', extra={'n': 1})\n"
        "Client('http://127.0.0.1:1').close()\n"
        "print(sorted({'litestar', 'psycopg', 'rich'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [str(light_venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert '"message": "light", "n": 1' in done.stderr
