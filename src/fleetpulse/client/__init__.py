"""``fleetpulse.client``: the HTTP API from Python, sync (:class:`Client`) and async
(:class:`AsyncClient`). Needs only httpx and msgspec (it ships in the light install).

>>> from fleetpulse.client import Client
>>> with Client("http://127.0.0.1:8000", token="s3cret") as api:
...     for machine in api.capacity(min_gpu_vram_gb=8, pool="render").items:
...         print(machine.hostname, machine.gpu_vram_available_gb, machine.matching_gpus)
agent1 8.0 (0,)

Every answer is a frozen msgspec struct with the JSON's field names (``models``). Errors
are :mod:`fleetpulse.errors` types: ``BadRequest``, ``Unauthorized``, ``ApiNotFound``,
``ApiConflict`` (409, also a ``Conflict``: capacity taken meanwhile, ask again),
``ApiUnavailable``, all ``ApiError``; ``ServiceUnavailable`` when the API cannot be reached.
"""

from __future__ import annotations

from fleetpulse.client.aio import AsyncClient
from fleetpulse.client.models import (
    Agent,
    AgentList,
    Capacity,
    CapacityList,
    Claim,
    ClaimedGpu,
    ClaimFilter,
    ClaimList,
    Cordon,
    CordonList,
    CordonNote,
    Event,
    EventList,
    Gpu,
    Health,
    History,
    HistoryGpu,
    HistoryPoint,
    Presence,
    Stat,
)
from fleetpulse.client.options import DEFAULT_URL
from fleetpulse.client.sync import Client
from fleetpulse.errors import (
    ApiConflict,
    ApiError,
    ApiNotFound,
    ApiUnavailable,
    BadRequest,
    Conflict,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = [
    "DEFAULT_URL",
    "Agent",
    "AgentList",
    "ApiConflict",
    "ApiError",
    "ApiNotFound",
    "ApiUnavailable",
    "AsyncClient",
    "BadRequest",
    "Capacity",
    "CapacityList",
    "Claim",
    "ClaimFilter",
    "ClaimList",
    "ClaimedGpu",
    "Client",
    "Conflict",
    "Cordon",
    "CordonList",
    "CordonNote",
    "Event",
    "EventList",
    "Gpu",
    "Health",
    "History",
    "HistoryGpu",
    "HistoryPoint",
    "Presence",
    "ServiceUnavailable",
    "Stat",
    "Unauthorized",
]
