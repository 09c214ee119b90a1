"""The CLI: wiring, one-line errors, and `fleetpulse db` against a real database."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from fleetpulse import __version__, store
from fleetpulse.cli import build_parser, main
from tests.conftest import RUN_ID, with_database


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetpulse", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_every_design_command_parses() -> None:
    parser = build_parser()
    for argv in (
        ["agent"],
        ["ingest"],
        ["api"],
        ["db", "upgrade"],
        ["simulate", "--agents", "10", "--profile", "gpu-high", "--interval", "1"],
        ["up"],
        ["status"],
        ["export", "--since", "2026-11-01T00:00:00Z", "--out", "x.parquet"],
        ["admin", "agent-credentials", "ws-17"],
    ):
        assert callable(parser.parse_args(argv).handler)


def test_bad_setting_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETPULSE_INGEST_OFFLINE_AFTER_S", "ninety")
    assert main(["db", "current"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "ingest.offline_after_s" in err
    assert "'ninety'" in err


def test_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETPULSE_DATABASE_URL", "postgresql://postgres:pw@127.0.0.1:1/fp")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "127.0.0.1:1" in err
    assert "pw" not in err
    assert "make services" in err


def test_db_upgrade_creates_and_migrates(
    db_admin_url: str,
    worker_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"fleetpulse_test_cli_{RUN_ID}_{worker_id}"
    url = with_database(db_admin_url, name)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(db_admin_url, autocommit=True) as conn:
        conn.execute(drop)
    monkeypatch.setenv("FLEETPULSE_DATABASE_URL", url)
    try:
        # The real entry point once, as a user runs it; the rest in-process.
        first = run_cli(
            "db", "upgrade", env={"FLEETPULSE_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
        )
        assert first.returncode == 0, first.stderr
        assert "database created" in first.stdout
        assert main(["db", "upgrade"]) == 0
        second = capsys.readouterr().out
        assert f"revision {store.head_revision()}" in second
        assert "created" not in second
        assert main(["db", "current"]) == 0
        assert f"current {store.head_revision()}" in capsys.readouterr().out
        assert main(["db", "downgrade"]) == 0
        assert "revision base" in capsys.readouterr().out
        assert store.current_revision(url) is None
    finally:
        with psycopg.connect(db_admin_url, autocommit=True) as conn:
            conn.execute(drop)
