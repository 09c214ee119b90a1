"""``fleetpulse admin agent-credentials``: a RabbitMQ user that may only publish heartbeats.

The user is bound to one agent when it is created: its topic permission admits only
``heartbeat.<pool>.<agent_id>`` routing keys (the broker enforces it), and ingest refuses a
message whose body names another agent than its routing key. Without ``--agent-id`` a new
agent id is drawn and printed, for ``FLEETPULSE_AGENT_ID`` on that machine. The user may
configure nothing (no declare, no delete): the agent only checks, passively, that the
exchange is there.
"""

from __future__ import annotations

import re
import secrets
import sys
import uuid
from typing import TextIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from fleetpulse.config import Settings, mask_url
from fleetpulse.errors import ServiceUnavailable
from fleetpulse.messages import EXCHANGE

__all__ = ["AgentPermissions", "agent_permissions", "create_agent_credentials"]


class AgentPermissions:
    """The vhost and topic permissions of one agent user (regular expressions)."""

    def __init__(self, agent_id: str) -> None:
        # The agent publishes to the heartbeat exchange and nothing else: it may not declare,
        # re-declare or delete anything (configure), and reads nothing.
        self.configure = "^$"
        self.write = "^" + re.escape(EXCHANGE) + "$"
        self.read = "^$"
        self.topic_write = rf"^heartbeat\.[^.]+\.{re.escape(agent_id)}$"
        self.topic_read = "^$"


def agent_permissions(agent_id: str) -> AgentPermissions:
    return AgentPermissions(agent_id)


def _vhost(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def create_agent_credentials(
    settings: Settings,
    *,
    name: str,
    agent_id: str | None,
    password: str | None,
    transport: httpx.BaseTransport | None = None,
    out: TextIO | None = None,
) -> int:
    """Create (or update) the user, grant it heartbeat-publishing for one agent only (a new
    agent id when none is given), print its AMQP URL and agent id."""
    out = out or sys.stdout
    if agent_id is None:
        agent_id = str(uuid.uuid4())
    else:
        try:
            agent_id = str(uuid.UUID(agent_id))
        except ValueError:
            print(f"fleetpulse: --agent-id {agent_id!r} is not a UUID", file=sys.stderr)
            return 2
    generated = password is None
    secret = password if password is not None else secrets.token_urlsafe(24)
    management = urlsplit(settings.amqp.management_url)
    base = urlunsplit(management._replace(netloc=f"{management.hostname}:{management.port}"))
    auth = (unquote(management.username or "guest"), unquote(management.password or "guest"))
    vhost = _vhost(settings.amqp.url)
    permissions = agent_permissions(agent_id)
    user = quote(name, safe="")
    vh = quote(vhost, safe="")
    try:
        with httpx.Client(base_url=base, auth=auth, timeout=10, transport=transport) as client:
            client.put(
                f"/api/users/{user}", json={"password": secret, "tags": ""}
            ).raise_for_status()
            client.put(
                f"/api/permissions/{vh}/{user}",
                json={
                    "configure": permissions.configure,
                    "write": permissions.write,
                    "read": permissions.read,
                },
            ).raise_for_status()
            client.put(
                f"/api/topic-permissions/{vh}/{user}",
                json={
                    "exchange": EXCHANGE,
                    "write": permissions.topic_write,
                    "read": permissions.topic_read,
                },
            ).raise_for_status()
    except httpx.HTTPStatusError as exc:
        print(
            f"fleetpulse: RabbitMQ management API refused {exc.request.method} "
            f"{exc.request.url.path}: {exc.response.status_code} {exc.response.text[:200]}",
            file=sys.stderr,
        )
        return 1
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            "RabbitMQ management API",
            mask_url(settings.amqp.management_url),
            str(exc) or type(exc).__name__,
            "enable rabbitmq_management or set FLEETPULSE_AMQP_MANAGEMENT_URL",
        ) from exc
    amqp = urlsplit(settings.amqp.url)
    host = amqp.hostname or "127.0.0.1"
    port = f":{amqp.port}" if amqp.port else ""
    agent_url = urlunsplit(
        amqp._replace(netloc=f"{quote(name, safe='')}:{quote(secret, safe='')}@{host}{port}")
    )
    print(
        f"created RabbitMQ user {name!r} on vhost {vhost!r}: may publish heartbeats for agent"
        f" {agent_id} only",
        file=out,
    )
    if generated:
        print(f"password: {secret}", file=out)
    print(f"agent AMQP URL: {agent_url}", file=out)
    print(f"agent id: {agent_id}", file=out)
    print(f"set FLEETPULSE_AMQP_URL and FLEETPULSE_AGENT_ID={agent_id} on that agent", file=out)
    return 0
