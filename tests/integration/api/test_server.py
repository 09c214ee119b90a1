"""`fleetpulse api` as a process: serves, stops cleanly on SIGTERM, one line without a database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from fleetpulse.client import ApiNotFound, Client
from tests.fixtures.logs import json_log_lines

pytestmark = pytest.mark.slow(4)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_process_serves_and_exits_zero_on_sigterm(db_url: str) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "FLEETPULSE_DATABASE_URL": db_url,
        "FLEETPULSE_API_PORT": str(port),
        "FLEETPULSE_API_HOST": "127.0.0.1",
        "FLEETPULSE_LOG_FORMAT": "json",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            # One client for the polls (httpx.get would build an SSL context each time),
            # closed before the signal so no connection of ours is open.
            with httpx.Client(timeout=1) as client:
                while True:
                    try:
                        if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert proc.poll() is None, "API exited early"
                    assert time.monotonic() < deadline, "API did not become ready"
                    time.sleep(0.05)
            # the client against the real process (one more way to call it than httpx)
            with Client(f"http://127.0.0.1:{port}", retries=0) as api:
                assert api.ready().status == "ok"
                assert api.agents().count == 0
                assert api.capacity(min_gpu_vram_gb=8).items == ()
                with pytest.raises(ApiNotFound):
                    api.agent("00000000-0000-0000-0000-000000000001")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
            logged = json_log_lines(err)
            assert any(r["message"] == f"fleetpulse api on http://127.0.0.1:{port}" for r in logged)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_api_without_database_is_one_line_and_exit_1() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "FLEETPULSE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/x",
        "FLEETPULSE_API_PORT": str(_free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "fleetpulse", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    # (alembic logs its plugins at INFO on import; the error itself is one line)
    lines = [line for line in done.stderr.splitlines() if line.startswith("fleetpulse:")]
    assert len(lines) == 1
    assert f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in done.stderr
