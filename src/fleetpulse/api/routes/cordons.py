"""Cordons: an agent, or one of its GPUs, out of the offer (maintenance, lending) and back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from litestar import Controller, MediaType, Request, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter

from fleetpulse.api.errors import error_responses
from fleetpulse.api.routes.agents import AgentId
from fleetpulse.api.schemas import NO_NUL, Cordon, CordonBody, CordonList
from fleetpulse.api.services import Services, services_of
from fleetpulse.errors import NotFound
from fleetpulse.store import (
    AgentRecord,
    CordonRecord,
    fetch_agent,
    fetch_cordons,
    remove_cordon,
    set_cordon,
)

__all__ = ["CordonRoutes", "cordon_of"]

GpuUuid = Annotated[
    str,
    PathParameter(min_length=1, max_length=255, pattern=NO_NUL, description="The GPU's uuid."),
]


def cordon_of(cordon: CordonRecord, record: AgentRecord | None) -> Cordon:
    return Cordon(
        agent_id=cordon.agent_id,
        hostname=record.hostname if record else "",
        gpu_uuid=cordon.gpu_uuid,
        reason=cordon.reason,
        by=cordon.by,
        at=cordon.at,
    )


async def _agent(services: Services, agent_id: uuid.UUID) -> AgentRecord:
    async with services.db.connection() as conn:
        record = await fetch_agent(conn, agent_id)
    if record is None:
        raise NotFound(f"no agent {agent_id}")
    return record


async def _cordon(
    services: Services, record: AgentRecord, gpu_uuid: str | None, body: CordonBody
) -> Response[Cordon]:
    async with services.db.connection() as conn:
        cordon, created = await set_cordon(
            conn, record.agent_id, gpu_uuid, reason=body.reason, by=body.by
        )
    await services.holdings_follower.reload([record.agent_id])
    return Response(
        cordon_of(cordon, record), status_code=201 if created else 200, media_type=MediaType.JSON
    )


async def _uncordon(services: Services, agent_id: uuid.UUID, gpu_uuid: str | None) -> None:
    async with services.db.connection() as conn:
        await remove_cordon(conn, agent_id, gpu_uuid)
    await services.holdings_follower.reload([agent_id])


_CORDONED = (
    "201 when newly cordoned (a `cordon` event is recorded), 200 when it already was (the"
    " reason and author are replaced, the time kept). The agent stays monitored but leaves"
    " `available-capacity` and cannot be claimed; claims already on it stay until released"
    " or expired."
)


ALREADY: Final = {
    200: ResponseSpec(
        data_container=Cordon,
        description="It already was cordoned: the reason and author replaced, the time kept.",
        generate_examples=False,
    )
}


class CordonRoutes(Controller):
    path = "/api/v1"
    tags = ["cordons"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/cordons",
        summary="Cordoned agents and GPUs",
        responses=error_responses(400, 401, 503),
    )
    async def list_cordons(
        self,
        request: Request[Any, Any, Any],
        agent_id: Annotated[
            uuid.UUID | None, QueryParameter(description="Only this agent's cordons.")
        ] = None,
    ) -> CordonList:
        services = services_of(request.app.state)
        async with services.db.connection() as conn:
            cordons = await fetch_cordons(conn, agent_id=agent_id)
        items = [cordon_of(k, services.index.get(k.agent_id)) for k in cordons]
        return CordonList(items=items, count=len(items), as_of=datetime.now(UTC))

    @post(
        "/agents/{agent_id:str}/cordon",
        summary="Cordon an agent",
        description=_CORDONED,
        responses={**ALREADY, **error_responses(400, 401, 403, 404, 503)},
    )
    async def cordon_agent(
        self, request: Request[Any, Any, Any], agent_id: AgentId, data: JSONBody[CordonBody]
    ) -> Response[Cordon]:
        services = services_of(request.app.state)
        record = await _agent(services, uuid.UUID(agent_id))
        return await _cordon(services, record, None, data)

    @delete(
        "/agents/{agent_id:str}/cordon",
        summary="Uncordon an agent",
        description="Idempotent; an `uncordon` event is recorded when there was a cordon.",
        status_code=204,
        responses=error_responses(400, 401, 403, 404, 503),
    )
    async def uncordon_agent(self, request: Request[Any, Any, Any], agent_id: AgentId) -> None:
        services = services_of(request.app.state)
        record = await _agent(services, uuid.UUID(agent_id))
        await _uncordon(services, record.agent_id, None)

    @post(
        "/agents/{agent_id:str}/gpus/{gpu_uuid:str}/cordon",
        summary="Cordon one GPU of an agent",
        description=_CORDONED.replace("The agent stays", "The GPU stays").replace(
            "`available-capacity` and cannot be claimed", "the claimable figures"
        ),
        responses={**ALREADY, **error_responses(400, 401, 403, 404, 503)},
    )
    async def cordon_gpu(
        self,
        request: Request[Any, Any, Any],
        agent_id: AgentId,
        gpu_uuid: GpuUuid,
        data: JSONBody[CordonBody],
    ) -> Response[Cordon]:
        services = services_of(request.app.state)
        record = await _agent(services, uuid.UUID(agent_id))
        if gpu_uuid not in {g.uuid for g in record.gpus if g.uuid}:
            raise NotFound(f"agent {agent_id} reports no GPU {gpu_uuid}")
        return await _cordon(services, record, gpu_uuid, data)

    @delete(
        "/agents/{agent_id:str}/gpus/{gpu_uuid:str}/cordon",
        summary="Uncordon one GPU of an agent",
        description="Idempotent (also for a GPU the agent no longer reports).",
        status_code=204,
        responses=error_responses(400, 401, 403, 404, 503),
    )
    async def uncordon_gpu(
        self, request: Request[Any, Any, Any], agent_id: AgentId, gpu_uuid: GpuUuid
    ) -> None:
        services = services_of(request.app.state)
        record = await _agent(services, uuid.UUID(agent_id))
        await _uncordon(services, record.agent_id, gpu_uuid)
