"""``/api/v1/claims``: hold capacity for a while, on a named agent or the best one that fits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from fleetpulse.api.errors import BadParameter, error_responses
from fleetpulse.api.routes.agents import MAX_LIMIT, UUID_PATTERN
from fleetpulse.api.schemas import (
    NO_NUL,
    Claim,
    ClaimBody,
    ClaimedGpu,
    ClaimList,
    RenewBody,
)
from fleetpulse.api.services import Services, services_of
from fleetpulse.errors import Conflict, NotFound
from fleetpulse.store import (
    AgentRecord,
    CapacityFilter,
    ClaimAsk,
    ClaimOutcome,
    ClaimRecord,
    Refusal,
    fetch_claim,
    fetch_claims,
    fit,
    place_claim,
    release_claim,
    renew_claim,
)

__all__ = ["ClaimRoutes", "claim_of"]

# Candidates asked of the capacity index, growing while the first ones are all taken.
CANDIDATE_STEPS: Final = (8, 128, 2048, MAX_LIMIT)
# Claim transactions tried per request before answering 409 (others won those agents).
MAX_ATTEMPTS: Final = 8
# A string checked by pattern: a malformed id is a 400 naming claim_id, not a 404.
ClaimId = Annotated[str, PathParameter(pattern=UUID_PATTERN, description="The claim's UUID.")]


def claim_of(claim: ClaimRecord, record: AgentRecord | None) -> Claim:
    return Claim(
        claim_id=claim.claim_id,
        agent_id=claim.agent_id,
        hostname=record.hostname if record else "",
        pool_name=record.pool_name if record else "",
        holder=claim.holder,
        gpus=[ClaimedGpu(index=g.index, uuid=g.uuid, vram_gb=g.vram_gb) for g in claim.gpus],
        cpu_cores=claim.cpu_cores,
        mem_gb=claim.mem_gb,
        created_at=claim.created_at,
        expires_at=claim.expires_at,
    )


def _ask(body: ClaimBody) -> ClaimAsk:
    """The amounts of a claim, defaults filled in from the filter or the GPUs named."""
    f = body.filter
    gpus = tuple(body.gpus) if body.gpus is not None else None
    if gpus is not None and body.gpu_count is not None and body.gpu_count != len(gpus):
        raise BadParameter("gpu_count", f"{len(gpus)} GPUs are named", source="body")
    vram = body.vram_gb if body.vram_gb is not None else (f.min_gpu_vram_gb if f else 0.0)
    if body.gpu_count is not None:
        count = body.gpu_count
    elif gpus is not None:
        count = len(gpus)
    elif f is not None:
        wants_gpu = f.min_gpu_vram_gb > 0 or f.gpu_type is not None or vram > 0
        count = max(f.min_gpu_count, 1 if wants_gpu else 0)
    else:
        count = 1 if vram > 0 else 0
    if vram > 0 and count == 0:
        raise BadParameter("gpu_count", "is 0 but vram_gb asks for VRAM", source="body")
    return ClaimAsk(
        vram_gb=vram,
        gpu_count=count,
        cpu_cores=body.cpu_cores if body.cpu_cores is not None else (f.min_cpu_cores if f else 0),
        mem_gb=body.mem_gb if body.mem_gb is not None else (f.min_mem_gb if f else 0.0),
        gpus=gpus,
        gpu_type=f.gpu_type if f else None,
    )


def _filter(body: ClaimBody, ask: ClaimAsk, limit: int) -> CapacityFilter:
    """The capacity query whose answer the claim takes the first fitting row of: the
    filter, raised to the amounts claimed."""
    f = body.filter
    assert f is not None
    return CapacityFilter(
        min_gpu_vram_gb=max(f.min_gpu_vram_gb, ask.vram_gb if ask.gpu_count else 0.0),
        min_cpu_cores=max(f.min_cpu_cores, ask.cpu_cores),
        min_mem_gb=max(f.min_mem_gb, ask.mem_gb),
        min_gpu_count=max(f.min_gpu_count, ask.gpu_count),
        gpu_type=f.gpu_type or None,
        pool=f.pool or None,
        max_sample_age_s=f.max_sample_age_s,
        min_reliability=f.min_reliability or None,
        limit=limit,
    )


def _candidates(services: Services, query: CapacityFilter) -> Iterator[uuid.UUID]:
    """Agents in the order ``available-capacity`` answers, asking for more while needed."""
    seen: set[uuid.UUID] = set()
    now = time.time()
    for limit in CANDIDATE_STEPS:
        wider = msgspec.structs.replace(query, limit=limit)
        matches = services.claimable.query(services.index, wider, now)
        for match in matches:
            agent_id = match.record.agent_id
            if agent_id not in seen:
                seen.add(agent_id)
                yield agent_id
        if len(matches) < limit:
            return


class ClaimRoutes(Controller):
    path = "/api/v1/claims"
    tags = ["claims"]  # noqa: RUF012 - Litestar reads it as a class attribute

    async def _place(
        self, services: Services, agent_id: uuid.UUID, body: ClaimBody, ask: ClaimAsk
    ) -> ClaimOutcome:
        async with services.db.connection() as conn:
            outcome = await place_claim(
                conn, agent_id=agent_id, holder=body.holder, ask=ask, ttl_s=body.ttl_s
            )
        if outcome.record is not None:  # what the transaction read is the freshest view
            services.holdings.put(agent_id, outcome.holding)
        return outcome

    async def _by_filter(self, services: Services, body: ClaimBody, ask: ClaimAsk) -> Claim:
        query = _filter(body, ask, CANDIDATE_STEPS[0])
        clock = time.time()
        now = datetime.fromtimestamp(clock, UTC)
        attempts = matched = 0
        first: Refusal | None = None
        busy = services.claims_in_flight
        deferred: list[uuid.UUID] = []
        for agent_id in _candidates(services, query):
            matched += 1
            record = services.index.get(agent_id)
            if record is None:  # pragma: no cover - the index answered with it
                continue
            # this process's view first (claimable figures cached per record and holding)
            allotment = services.claimable.allotment(record, clock)
            local = fit(record, services.holdings.get(agent_id), ask, now, allotment)
            if isinstance(local, Refusal):
                first = first or local
                continue
            if agent_id in busy:  # another request here is deciding on it: try it last
                deferred.append(agent_id)
                continue
            claim = await self._try(services, agent_id, body, ask)
            attempts += 1
            if isinstance(claim, Claim):
                return claim
            first = first or claim
            if attempts >= MAX_ATTEMPTS:
                break
        for agent_id in deferred[: max(0, MAX_ATTEMPTS - attempts)]:
            claim = await self._try(services, agent_id, body, ask)
            if isinstance(claim, Claim):
                return claim
            first = first or claim
        if not matched:
            raise Conflict("nothing fits: no schedulable online agent matches the filter")
        why = f" (first refusal: {first.reason})" if first else ""
        raise Conflict(
            f"nothing fits: {matched} agent(s) match the filter, none has the capacity"
            f" claimable now{why}"
        )

    async def _try(
        self, services: Services, agent_id: uuid.UUID, body: ClaimBody, ask: ClaimAsk
    ) -> Claim | Refusal:
        busy = services.claims_in_flight
        busy[agent_id] = busy.get(agent_id, 0) + 1
        try:
            outcome = await self._place(services, agent_id, body, ask)
        finally:
            busy[agent_id] -= 1
            if not busy[agent_id]:
                del busy[agent_id]
        if isinstance(outcome.result, Refusal):
            return outcome.result
        return claim_of(outcome.result, outcome.record)

    @post(
        "/",
        summary="Claim capacity for a while",
        description=(
            "On `agent_id` (optionally the GPUs in `gpus`, by uuid or index), or on the first"
            " agent the same `filter` given to `available-capacity` would list, and its first"
            " GPUs that fit. Decided in one database transaction per agent, so two claims"
            " never share what only one can have, whichever API process they reach. Claimable"
            " = min(observed free, total − held by active claims), per GPU and for cores and"
            " memory. Offline and cordoned agents and cordoned GPUs are never claimed."
        ),
        status_code=201,
        responses=error_responses(400, 401, 403, 404, 409, 503),
    )
    async def create_claim(
        self, request: Request[Any, Any, Any], data: JSONBody[ClaimBody]
    ) -> Claim:
        services = services_of(request.app.state)
        if (data.agent_id is None) == (data.filter is None):
            raise BadParameter("agent_id", "give either agent_id or filter", source="body")
        if data.gpus is not None and data.agent_id is None:
            raise BadParameter("gpus", "GPUs can be named only with agent_id", source="body")
        ask = _ask(data)
        if data.agent_id is None:
            return await self._by_filter(services, data, ask)
        outcome = await self._place(services, data.agent_id, data, ask)
        if outcome.record is None:
            raise NotFound(f"no agent {data.agent_id}")
        if isinstance(outcome.result, Refusal):
            raise Conflict(f"nothing fits: {outcome.result.reason}")
        return claim_of(outcome.result, outcome.record)

    @get(
        "/",
        summary="Active claims",
        description="Oldest first; filter by agent or holder.",
        responses=error_responses(400, 401, 503),
    )
    async def list_claims(
        self,
        request: Request[Any, Any, Any],
        agent_id: Annotated[
            uuid.UUID | None, QueryParameter(description="Only claims on this agent.")
        ] = None,
        holder: Annotated[
            str | None,
            QueryParameter(
                max_length=255, pattern=NO_NUL, description="Only this holder's claims."
            ),
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_LIMIT, description="At most this many.")
        ] = 1000,
    ) -> ClaimList:
        services = services_of(request.app.state)
        async with services.db.connection() as conn:
            claims = await fetch_claims(conn, agent_id=agent_id, holder=holder, limit=limit)
        items = [claim_of(c, services.index.get(c.agent_id)) for c in claims]
        return ClaimList(items=items, count=len(items), as_of=datetime.now(UTC))

    async def _active(self, services: Services, claim_id: uuid.UUID) -> ClaimRecord:
        async with services.db.connection() as conn:
            claim = await fetch_claim(conn, claim_id)
        if claim is None:
            raise NotFound(f"no claim {claim_id}")
        if not claim.active_at(datetime.now(UTC)):
            raise NotFound(f"claim {claim_id} has ended ({claim.end_reason or 'expired'})")
        return claim

    @get(
        "/{claim_id:str}",
        summary="One active claim",
        responses=error_responses(400, 401, 404, 503),
    )
    async def get_claim(self, request: Request[Any, Any, Any], claim_id: ClaimId) -> Claim:
        services = services_of(request.app.state)
        claim = await self._active(services, uuid.UUID(claim_id))
        return claim_of(claim, services.index.get(claim.agent_id))

    @staticmethod
    def _replace(services: Services, claim: ClaimRecord, *, ended: bool) -> None:
        """Put a renewed or ended claim into this process's holdings (no read needed; a
        claim not known here yet arrives with its event)."""
        holding = services.holdings.get(claim.agent_id)
        claims = tuple(
            claim if c.claim_id == claim.claim_id else c
            for c in holding.claims
            if not (ended and c.claim_id == claim.claim_id)
        )
        services.holdings.put(claim.agent_id, msgspec.structs.replace(holding, claims=claims))

    @post(
        "/{claim_id:str}/renew",
        summary="Give an active claim a new TTL",
        description="The claim then expires `ttl_s` from now; an ended claim cannot be renewed.",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 409, 503),
    )
    async def renew(
        self, request: Request[Any, Any, Any], claim_id: ClaimId, data: JSONBody[RenewBody]
    ) -> Claim:
        services = services_of(request.app.state)
        async with services.db.connection() as conn:
            claim = await renew_claim(conn, uuid.UUID(claim_id), data.ttl_s)
            if claim is None:
                ended = await fetch_claim(conn, uuid.UUID(claim_id))
                if ended is None:
                    raise NotFound(f"no claim {claim_id}")
                raise Conflict(
                    f"claim {claim_id} has ended ({ended.end_reason or 'expired'}"
                    f" at {(ended.ended_at or ended.expires_at).isoformat()}); claim again"
                )
        self._replace(services, claim, ended=False)
        return claim_of(claim, services.index.get(claim.agent_id))

    @delete(
        "/{claim_id:str}",
        summary="Release a claim",
        description="Idempotent: releasing an ended or unknown claim is also a 204.",
        status_code=204,
        responses=error_responses(400, 401, 403, 503),
    )
    async def release(self, request: Request[Any, Any, Any], claim_id: ClaimId) -> None:
        services = services_of(request.app.state)
        async with services.db.connection() as conn:
            claim = await release_claim(conn, uuid.UUID(claim_id))
        if claim is not None:
            self._replace(services, claim, ended=True)
