"""The agent's state dir: its id (generated once, kept), the spool, and a lock.

The lock (``flock`` on ``agent.lock``; ``msvcrt.locking`` on Windows) keeps two agents
from sharing one state dir, which would make them one agent with two heartbeats.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from fleetpulse.agent.heartbeat import Identity
from fleetpulse.config import AgentSettings
from fleetpulse.errors import ConfigError

__all__ = ["StateDir", "resolve_identity"]

_POOL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._lock: IO[bytes] | None = None

    def __enter__(self) -> Self:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / "agent.lock", "wb")
        except OSError as exc:
            raise ConfigError(f"setting agent.state_dir = {str(self.path)!r}: {exc}") from None
        try:
            _try_lock(self._lock.fileno())
        except OSError:
            self._lock.close()
            self._lock = None
            raise ConfigError(
                f"setting agent.state_dir = {str(self.path)!r}: another agent is using it"
            ) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def spool_path(self) -> Path:
        return self.path / "spool.sqlite3"

    def agent_id(self) -> uuid.UUID:
        """The id kept in ``agent_id``; generated and written (atomically) on first use."""
        file = self.path / "agent_id"
        try:
            return uuid.UUID(file.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            pass
        except ValueError:
            raise ConfigError(f"{file} does not hold a UUID; delete it to get a new id") from None
        new = uuid.uuid4()
        tmp = file.with_suffix(".tmp")
        tmp.write_text(f"{new}\n", encoding="utf-8")
        os.replace(tmp, file)
        return new


def resolve_identity(settings: AgentSettings, state: StateDir) -> Identity:
    """Id from settings, else the one kept in the state dir; hostname from settings, else
    the machine's; pool as configured (validated here, once, against the wire contract)."""
    if settings.id:
        try:
            agent_id = uuid.UUID(settings.id)
        except ValueError:
            raise ConfigError(f"setting agent.id = {settings.id!r}: not a UUID") from None
    else:
        agent_id = state.agent_id()
    if settings.pool is not None and not _POOL.match(settings.pool):
        raise ConfigError(
            f"setting agent.pool = {settings.pool!r}: lower-case letters, digits, '-' and '_' "
            "only, at most 63 characters"
        )
    hostname = settings.hostname or socket.gethostname() or "unknown"
    return Identity(agent_id=agent_id, hostname=hostname[:255], pool=settings.pool)
