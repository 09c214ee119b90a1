"""Log output of every fleetpulse process: text for people, or one JSON object a line for
log shippers (``--log-format json``; python-json-logger does the encoding).

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, then the
context the code passes with ``extra=`` (``agent_id``, ``batch_size``, ``reason``, ...) as
fields of their own, and ``exc_info`` when there is a traceback::

    {"time": "2026-12-06T08:00:00.123456+00:00", "level": "WARNING",
     "logger": "fleetpulse.ingest.worker", "message": "batch of 512 not written, retrying: ...",
     "batch_size": 512}
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_FORMATS", "TEXT_FORMAT", "LogFormat", "configure_logging", "json_formatter"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Formatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat()


def json_formatter() -> logging.Formatter:
    return _Formatter(
        ["asctime", "levelname", "name", "message"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,
    )


def configure_logging(level: str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """A handler on the root logger in the chosen format (as ``logging.basicConfig``: none
    is added when the root logger has one already)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
