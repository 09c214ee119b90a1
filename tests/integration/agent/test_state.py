"""The state dir on a real disk: the spool, the sequence and the id survive restarts."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from fleetpulse.agent import HostCollector, SqliteSpool, StateDir
from fleetpulse.errors import ConfigError


def test_sqlite_spool_survives_reopening_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = SqliteSpool(path)
    assert [spool.next_seq() for _ in range(3)] == [0, 1, 2]
    for body in (b"one", b"two", b"three"):
        spool.push(body)
    spool.remove([spool.peek(1)[0].id])
    spool.close()
    again = SqliteSpool(path)
    assert again.depth == 2
    assert [e.body for e in again.peek(10)] == [b"two", b"three"]
    assert again.next_seq() == 3
    again.close()


def test_sqlite_spool_drops_the_oldest_past_its_bound_and_remembers(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = SqliteSpool(path, max_bytes=10)
    for body in (b"aaaa", b"bbbb", b"cccc", b"dddd"):
        spool.push(body)
    spool.push(b"z" * 11)
    assert [e.body for e in spool.peek(10)] == [b"cccc", b"dddd"]
    assert spool.dropped_total == 3
    spool.remove([])
    spool.remove([123456])
    assert spool.depth == 2
    spool.close()
    again = SqliteSpool(path, max_bytes=10)
    assert again.dropped_total == 3
    again.close()


def test_a_corrupt_spool_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"spool\.sqlite3 cannot be used"):
        SqliteSpool(path)


def test_agent_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    with StateDir(tmp_path / "state") as state:
        first = state.agent_id()
        assert state.agent_id() == first
    with StateDir(tmp_path / "state") as state:
        assert state.agent_id() == first
    (tmp_path / "state" / "agent_id").write_text("garbage\n")
    with StateDir(tmp_path / "state") as state, pytest.raises(ConfigError, match="not hold a UUID"):
        state.agent_id()
    assert isinstance(first, uuid.UUID)


def test_a_state_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"agent\.state_dir"), StateDir(tmp_path / "file"):
        pass  # pragma: no cover


async def test_real_host_collector_reads_this_machine() -> None:
    part = await HostCollector().collect()
    assert part.host is not None
    assert part.host.cpu_cores == os.cpu_count()
    assert part.host.mem_total_gb > 0
    assert part.host.mem_available_gb <= part.host.mem_total_gb
