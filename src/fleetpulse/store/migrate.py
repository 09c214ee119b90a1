"""Schema migrations through Alembic, run programmatically (``fleetpulse db upgrade``)."""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from psycopg import sql

from fleetpulse.store.engine import map_db_errors

__all__ = ["current_revision", "downgrade", "ensure_database", "head_revision", "upgrade"]

MIGRATIONS: Final = Path(__file__).parent / "migrations"


def _sqlalchemy_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if created."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with map_db_errors(url), psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _run(url: str, action: str, revision: str) -> None:
    engine = sqlalchemy.create_engine(_sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with map_db_errors(url), engine.begin() as connection:
            config = _config()
            config.attributes["connection"] = connection
            if action == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    except sqlalchemy.exc.DBAPIError as exc:
        with map_db_errors(url):
            raise (exc.orig if isinstance(exc.orig, Exception) else exc) from None
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``; a no-op when already there."""
    _run(url, "upgrade", revision)


def downgrade(url: str, revision: str = "base") -> None:
    _run(url, "downgrade", revision)


def current_revision(url: str) -> str | None:
    engine = sqlalchemy.create_engine(_sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()
