"""Agent broker credentials: permissions and the management API calls."""

from __future__ import annotations

import io
import json
import re
import uuid

import httpx
import pytest

from fleetpulse.config import AmqpSettings, Settings
from fleetpulse.errors import ServiceUnavailable
from fleetpulse.ingest import agent_permissions, create_agent_credentials


def test_agent_permissions_restrict_routing_keys_to_the_agent() -> None:
    perms = agent_permissions("3f0c-aa")
    pattern = re.compile(perms.topic_write)
    assert pattern.match("heartbeat.render.3f0c-aa")
    assert not pattern.match("heartbeat.render.other")
    assert not pattern.match("heartbeat.a.b.3f0c-aa")
    # configure nothing: no declare, re-declare or delete of any exchange or queue
    assert perms.configure == "^$"
    assert not re.search(perms.configure, "fleetpulse.heartbeats")
    assert re.fullmatch(perms.write, "fleetpulse.heartbeats")
    assert perms.read == "^$"


def test_create_agent_credentials_calls_management_api() -> None:
    calls: list[tuple[str, str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, json.loads(request.content)))
        return httpx.Response(201)

    settings = Settings(
        amqp=AmqpSettings(
            url="amqp://guest:guest@rabbit:5672/fleet",
            management_url="http://admin:pw@rabbit:15672",
        )
    )
    out = io.StringIO()
    code = create_agent_credentials(
        settings,
        name="ws-17",
        agent_id="00000000-0000-4000-8000-0000000000AB",
        password=None,
        transport=httpx.MockTransport(handler),
        out=out,
    )
    assert code == 0
    assert [c[:2] for c in calls] == [
        ("PUT", "/api/users/ws-17"),
        ("PUT", "/api/permissions/fleet/ws-17"),
        ("PUT", "/api/topic-permissions/fleet/ws-17"),
    ]
    password = calls[0][2]["password"]
    assert len(password) >= 24
    text = out.getvalue()
    assert f"password: {password}" in text
    assert "amqp://ws-17:" in text
    assert "@rabbit:5672/fleet" in text
    agent = "00000000-0000-4000-8000-0000000000ab"  # canonical, as agents send it
    assert calls[1][2]["configure"] == "^$"
    assert calls[2][2]["write"] == rf"^heartbeat\.[^.]+\.{re.escape(agent)}$"
    assert f"FLEETPULSE_AGENT_ID={agent}" in text


def test_agent_credentials_draw_an_agent_id_when_none_is_given() -> None:
    calls: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(201)

    out = io.StringIO()
    code = create_agent_credentials(
        Settings(), name="ws-18", agent_id=None, password="pw",
        transport=httpx.MockTransport(handler), out=out,
    )  # fmt: skip
    assert code == 0
    agent = out.getvalue().split("agent id: ")[1].split()[0]
    assert str(uuid.UUID(agent)) == agent
    assert calls[2]["write"] == rf"^heartbeat\.[^.]+\.{re.escape(agent)}$"


def test_agent_credentials_refuse_an_agent_id_that_is_no_uuid(capsys) -> None:
    refused = httpx.MockTransport(lambda r: httpx.Response(500))
    code = create_agent_credentials(
        Settings(), name="ws", agent_id="abc", password="pw", transport=refused
    )
    assert code == 2
    assert "not a UUID" in capsys.readouterr().err


def test_create_agent_credentials_reports_refusal_and_unreachable(capsys) -> None:
    settings = Settings()
    refused = httpx.MockTransport(lambda r: httpx.Response(401, text="no"))
    assert (
        create_agent_credentials(
            settings, name="x", agent_id=None, password="p", transport=refused, out=io.StringIO()
        )
        == 1
    )
    assert "401" in capsys.readouterr().err

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServiceUnavailable, match="management API"):
        create_agent_credentials(
            settings,
            name="x",
            agent_id=None,
            password="p",
            transport=httpx.MockTransport(down),
            out=io.StringIO(),
        )
