"""The I/O-free half of the client: what each call sends, how answers and errors decode,
when to retry, and how a Server-Sent Events stream splits into messages. The sync and
async clients only move bytes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Generic, TypeVar
from urllib.parse import quote

import msgspec

from fleetpulse.client.models import (
    Agent,
    AgentList,
    Capacity,
    CapacityList,
    Claim,
    ClaimBody,
    ClaimFilter,
    ClaimList,
    Cordon,
    CordonBody,
    CordonList,
    Event,
    EventList,
    Health,
    History,
    RenewBody,
)
from fleetpulse.errors import (
    ApiConflict,
    ApiError,
    ApiNotFound,
    ApiUnavailable,
    BadRequest,
    Unauthorized,
)

__all__ = [
    "EVENTS_STREAM",
    "EVENT_KINDS",
    "JSON_BODY",
    "RETRY_STATUSES",
    "Call",
    "SseMessage",
    "SseParser",
    "agent",
    "agent_capacity",
    "agents",
    "capacity",
    "claim",
    "claims",
    "cordon",
    "cordons",
    "decoded",
    "error_of",
    "event_of",
    "events",
    "get_claim",
    "health",
    "history",
    "ready",
    "release",
    "renew",
    "stream_params",
    "uncordon",
]

T = TypeVar("T")

EVENTS_STREAM: Final = "/api/v1/events/stream"
# SSE event names the stream carries (each an Event); others are skipped, for newer APIs
EVENT_KINDS: Final = frozenset({"status", "claim", "cordon", "offer", "gpu_health"})
JSON_BODY: Final = {"Content-Type": "application/json"}
# Answers worth another try of an idempotent call: the API or a proxy in front of it is
# (re)starting, or the database is briefly away (the API then says Retry-After).
RETRY_STATUSES: Final = frozenset({502, 503, 504})
_ERRORS: Final[Mapping[int, type[ApiError]]] = {
    400: BadRequest,
    401: Unauthorized,
    404: ApiNotFound,
    409: ApiConflict,
    502: ApiUnavailable,
    503: ApiUnavailable,
    504: ApiUnavailable,
}


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: ``into`` is the struct its 2xx body decodes to."""

    method: str
    path: str
    into: type[T]
    params: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    idempotent: bool = True

    def decode(self, content: bytes) -> T:
        if self.into is type(None) and not content:  # 204 No Content
            return None
        return msgspec.json.decode(content, type=self.into)


def _params(**given: object) -> dict[str, str]:
    """Query parameters as the API reads them; None (and empty text) means "not given"."""
    out: dict[str, str] = {}
    for name, value in given.items():
        if value is None or value == "":
            continue
        if isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out


def _agent_path(agent_id: uuid.UUID | str) -> str:
    return f"/api/v1/agents/{uuid.UUID(str(agent_id))}"


def agents(
    *,
    status: str | None = None,
    pool: str | None = None,
    limit: int = 1000,
    after: uuid.UUID | str | None = None,
) -> Call[AgentList]:
    """One page of the registry, by agent_id; ``next_after`` asks for the next."""
    params = _params(status=status, pool=pool, limit=limit, after=after)
    return Call("GET", "/api/v1/agents", AgentList, params)


def agent(agent_id: uuid.UUID | str) -> Call[Agent]:
    """One agent's latest state; ``ApiNotFound`` for an unknown id."""
    return Call("GET", _agent_path(agent_id), Agent)


def agent_capacity(agent_id: uuid.UUID | str) -> Call[Capacity]:
    """Any known agent's latest capacity, online or not."""
    return Call("GET", f"{_agent_path(agent_id)}/capacity", Capacity)


def capacity(
    *,
    min_gpu_vram_gb: float | None = None,
    min_cpu_cores: int | None = None,
    min_mem_gb: float | None = None,
    min_gpu_count: int | None = None,
    gpu_type: str | None = None,
    pool: str | None = None,
    max_sample_age_s: float | None = None,
    min_reliability: float | None = None,
    limit: int | None = None,
    include_degraded: bool | None = None,
) -> Call[CapacityList]:
    """Online agents that can take a job now, most free VRAM first (None: no condition)."""
    params = _params(
        min_gpu_vram_gb=min_gpu_vram_gb,
        min_cpu_cores=min_cpu_cores,
        min_mem_gb=min_mem_gb,
        min_gpu_count=min_gpu_count,
        gpu_type=gpu_type,
        pool=pool,
        max_sample_age_s=max_sample_age_s,
        min_reliability=min_reliability,
        limit=limit,
        include_degraded=include_degraded,
    )
    return Call("GET", "/api/v1/agents/available-capacity", CapacityList, params)


def history(
    agent_id: uuid.UUID | str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    bucket: str | int | None = None,
) -> Call[History]:
    """avg/min/max per time bucket over [since, until) (default: the last hour)."""
    params = _params(since=since, until=until, bucket=bucket)
    return Call("GET", f"{_agent_path(agent_id)}/metrics", History, params)


def events(
    *,
    agent_id: uuid.UUID | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> Call[EventList]:
    """Status transitions in the order they were decided; page with ``after_id``."""
    params = _params(agent_id=agent_id, since=since, until=until, after_id=after_id, limit=limit)
    return Call("GET", "/api/v1/events", EventList, params)


def stream_params(agent_id: uuid.UUID | str | None) -> dict[str, str]:
    return _params(agent_id=agent_id)


def _json(body: msgspec.Struct) -> bytes:
    return msgspec.json.encode(body)


def _claim_path(claim_id: uuid.UUID | str) -> str:
    return f"/api/v1/claims/{uuid.UUID(str(claim_id))}"


def _cordon_path(agent_id: uuid.UUID | str, gpu_uuid: str | None) -> str:
    gpu = "" if gpu_uuid is None else f"/gpus/{quote(gpu_uuid, safe='')}"
    return f"{_agent_path(agent_id)}{gpu}/cordon"


def claim(
    *,
    holder: str,
    ttl_s: float,
    agent_id: uuid.UUID | str | None = None,
    filter: ClaimFilter | None = None,
    gpus: Sequence[int | str] | None = None,
    vram_gb: float | None = None,
    gpu_count: int | None = None,
    cpu_cores: int | None = None,
    mem_gb: float | None = None,
) -> Call[Claim]:
    """Hold capacity for ``holder`` for ``ttl_s`` seconds: on ``agent_id`` (optionally the
    ``gpus`` named, by index or uuid) or on the best agent matching ``filter``. Raises
    ``ApiConflict`` (409) when nothing fits any more: ask for capacity again. Never retried
    (a retry after a lost answer could hold twice)."""
    body = ClaimBody(
        holder=holder,
        ttl_s=ttl_s,
        agent_id=None if agent_id is None else uuid.UUID(str(agent_id)),
        filter=filter,
        gpus=None if gpus is None else tuple(gpus),
        vram_gb=vram_gb,
        gpu_count=gpu_count,
        cpu_cores=cpu_cores,
        mem_gb=mem_gb,
    )
    return Call("POST", "/api/v1/claims", Claim, body=_json(body), idempotent=False)


def claims(
    *,
    agent_id: uuid.UUID | str | None = None,
    holder: str | None = None,
    limit: int | None = None,
) -> Call[ClaimList]:
    """Active claims, optionally of one agent or one holder."""
    return Call(
        "GET", "/api/v1/claims", ClaimList, _params(agent_id=agent_id, holder=holder, limit=limit)
    )


def get_claim(claim_id: uuid.UUID | str) -> Call[Claim]:
    """An active claim; ``ApiNotFound`` once it has ended (released or expired)."""
    return Call("GET", _claim_path(claim_id), Claim)


def renew(claim_id: uuid.UUID | str, ttl_s: float) -> Call[Claim]:
    """Keep a claim ``ttl_s`` seconds from now (a repeat does what one does: retried);
    ``ApiConflict`` if it has ended."""
    body = _json(RenewBody(ttl_s=ttl_s))
    return Call("POST", f"{_claim_path(claim_id)}/renew", Claim, body=body)


def release(claim_id: uuid.UUID | str) -> Call[None]:
    """Give a claim back (idempotent: releasing an ended claim is fine)."""
    return Call("DELETE", _claim_path(claim_id), type(None))


def cordon(
    agent_id: uuid.UUID | str, *, reason: str, by: str, gpu_uuid: str | None = None
) -> Call[Cordon]:
    """Take an agent, or one of its GPUs, out of the offer (cordoning what is cordoned
    answers the existing cordon: retried)."""
    body = _json(CordonBody(reason=reason, by=by))
    return Call("POST", _cordon_path(agent_id, gpu_uuid), Cordon, body=body)


def uncordon(agent_id: uuid.UUID | str, *, gpu_uuid: str | None = None) -> Call[None]:
    """Put a cordoned agent or GPU back in the offer (idempotent)."""
    return Call("DELETE", _cordon_path(agent_id, gpu_uuid), type(None))


def cordons(*, agent_id: uuid.UUID | str | None = None) -> Call[CordonList]:
    """Active cordons, optionally of one agent."""
    return Call("GET", "/api/v1/cordons", CordonList, _params(agent_id=agent_id))


def health() -> Call[Health]:
    """``/healthz``: the process is up."""
    return Call("GET", "/healthz", Health)


def ready() -> Call[Health]:
    """``/readyz``; a database that does not answer raises ``ApiUnavailable`` (503)."""
    return Call("GET", "/readyz", Health)


class _ErrorBody(msgspec.Struct):
    detail: str = ""


def error_of(status_code: int, content: bytes, url: str) -> ApiError:
    """The project's error for an error answer, with the server's ``detail`` as message."""
    try:
        detail = msgspec.json.decode(content, type=_ErrorBody).detail
    except msgspec.DecodeError:
        detail = ""
    if not detail:
        detail = content.decode("utf-8", "replace").strip()[:200] or "no detail"
    kind = _ERRORS.get(status_code, ApiError)
    return kind(status_code, detail, url=url)


@dataclass(frozen=True, slots=True)
class SseMessage:
    event: str
    data: str
    id: str | None


class SseParser:
    """Server-Sent Events, line by line (the WHATWG rules the API's stream needs): fields
    ``event``, ``data`` (joined by newlines), ``id``, ``retry``; comments are skipped."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseMessage | None:
        """One line without its end; a message when the line ends one."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SseMessage(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


def decoded(call: Call[T], content: bytes, url: str) -> T:
    """A 2xx body as ``call.into``; one that does not fit it is an ``ApiError`` naming both."""
    try:
        return call.decode(content)
    except msgspec.DecodeError as exc:
        raise ApiError(
            200, f"answer does not decode as {call.into.__name__}: {exc}", url=url
        ) from None


def event_of(data: str) -> Event:
    try:
        return msgspec.json.decode(data, type=Event)
    except msgspec.DecodeError as exc:
        raise ApiError(200, f"event stream sent an event that does not decode: {exc}") from None
