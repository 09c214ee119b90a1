"""``--log-format json``: one JSON object a line with the standard fields and the context."""

from __future__ import annotations

import io
import logging

from fleetpulse.logs import json_formatter
from tests.fixtures.logs import json_log_lines


def test_json_lines_carry_standard_fields_context_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter())
    log = logging.getLogger("fleetpulse.test.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("batch of %d not written: %s", 512, "déjà vu", extra={"batch_size": 512})
        try:
            raise ValueError("multi\nline")
        except ValueError:
            log.exception("failed", extra={"agent_id": "a-1"})
    finally:
        log.removeHandler(handler)
    first, second = json_log_lines(out.getvalue())
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "WARNING"
    assert first["logger"] == "fleetpulse.test.logs"
    assert first["message"] == "batch of 512 not written: déjà vu"
    assert first["batch_size"] == 512
    assert second["agent_id"] == "a-1"
    assert "ValueError: multi\nline" in second["exc_info"]
    assert len(out.getvalue().splitlines()) == 2
