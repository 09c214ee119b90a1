"""``/api/v1/agents``: registry rows, capacity, history."""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from litestar import Controller, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from fleetpulse.api.errors import BadParameter, error_responses
from fleetpulse.api.schemas import (
    NO_NUL,
    Agent,
    AgentList,
    Capacity,
    CapacityList,
    History,
    agent_of,
    capacity_of,
    history_points,
)
from fleetpulse.api.services import services_of
from fleetpulse.errors import NotFound
from fleetpulse.store import (
    AgentRecord,
    CapacityFilter,
    CapacityMatch,
    claimable_gpus,
    fetch_agent,
    fetch_agents,
    fetch_history,
    matching_gpus,
)

__all__ = ["AgentRoutes", "check_time", "parse_bucket"]

MAX_GB: Final = 1e7
MAX_CORES: Final = 65_536
MAX_LIMIT: Final = 10_000
MAX_AGE_S: Final = 1e9
TIME_FLOOR: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIME_CEILING: Final = datetime(9000, 1, 1, tzinfo=UTC)
DEFAULT_RANGE: Final = timedelta(hours=1)
DEFAULT_POINTS: Final = 360
NICE_BUCKETS_S: Final = (10, 30, 60, 300, 900, 1800, 3600, 10_800, 21_600, 43_200, 86_400)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
BUCKET_PATTERN: Final = r"^[1-9][0-9]{0,8}[smhd]?$"

# PostgreSQL text cannot hold NUL, and no name the registry holds contains one: a string
# parameter with NUL is a 400 naming it, wherever it would go (SQL or the in-process index).
Pool = Annotated[
    str,
    QueryParameter(
        max_length=255, pattern=NO_NUL, description="Only agents of this pool; empty: any pool."
    ),
]
UUID_PATTERN: Final = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# A string path segment checked by pattern: a malformed id is a 400 naming agent_id, not a 404.
AgentId = Annotated[str, PathParameter(pattern=UUID_PATTERN, description="The agent's UUID.")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="At most this many rows.")]


def check_time(value: datetime | None) -> datetime | None:
    """Naive timestamps are UTC; times are clamped to 1970–9000 (nothing lies outside)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return min(max(value, TIME_FLOOR), TIME_CEILING)


def parse_bucket(text: str) -> timedelta:
    unit = text[-1] if text[-1] in _UNITS else "s"
    digits = text[:-1] if text[-1] in _UNITS else text
    return timedelta(seconds=int(digits) * _UNITS[unit])


def _auto_bucket(span: timedelta, max_points: int) -> timedelta:
    points = min(DEFAULT_POINTS, max_points)
    for seconds in NICE_BUCKETS_S:
        if span.total_seconds() / seconds <= points:
            return timedelta(seconds=seconds)
    return timedelta(seconds=math.ceil(span.total_seconds() / points))


ANY: Final = CapacityFilter()


def _all_gpus(record: AgentRecord) -> tuple[int, ...]:
    return matching_gpus(record, ANY)


class AgentRoutes(Controller):
    path = "/api/v1/agents"
    tags = ["agents"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        summary="Registry rows",
        description="Every agent the registry knows, by agent_id; page with `after`.",
        responses=error_responses(400, 401, 503),
    )
    async def list_agents(
        self,
        state: State,
        status: Annotated[
            Literal["online", "offline"] | None,
            QueryParameter(description="Only agents in this status."),
        ] = None,
        pool: Pool = "",
        limit: Limit = 1000,
        after: Annotated[
            uuid.UUID | None, QueryParameter(description="Rows after this agent_id (paging).")
        ] = None,
    ) -> AgentList:
        services = services_of(state)
        async with services.db.connection() as conn:
            records = await fetch_agents(
                conn, status=status, pool=pool or None, limit=limit, after=after
            )
        now = time.time()
        view = services.claimable
        items = [
            agent_of(r, services.index.reliability(r.agent_id), now, view.allotment(r, now))
            for r in records
        ]
        return AgentList(
            items=items,
            count=len(items),
            as_of=datetime.fromtimestamp(now, UTC),
            next_after=records[-1].agent_id if len(records) == limit else None,
        )

    @get(
        "/available-capacity",
        summary="Online agents that can take a job now",
        description=(
            "Online agents only, from an in-process index of the registry refreshed on every"
            " registry write (at most every `api.capacity_refresh_interval_s`). GPU conditions"
            " hold per device: `min_gpu_vram_gb` is free VRAM on one GPU, `min_gpu_count` how"
            " many GPUs must meet it (and `gpu_type`), GPUs reporting an error never count."
            " Sorted by most free VRAM, then most available cores, then agent_id."
        ),
        responses={
            200: ResponseSpec(
                data_container=CapacityList,
                description="Matching agents; `as_of` is when the index last read the database.",
                generate_examples=False,
            ),
            **error_responses(400, 401),
        },
        media_type=MediaType.JSON,
    )
    async def available_capacity(
        self,
        # the request, not State: Litestar checks a State argument with an ABC isinstance
        request: Request[Any, Any, Any],
        min_gpu_vram_gb: Annotated[
            float, QueryParameter(ge=0, le=MAX_GB, description="Free VRAM on a single GPU, GiB.")
        ] = 0.0,
        min_cpu_cores: Annotated[
            int, QueryParameter(ge=0, le=MAX_CORES, description="Available cores.")
        ] = 0,
        min_mem_gb: Annotated[
            float, QueryParameter(ge=0, le=MAX_GB, description="Available memory, GiB.")
        ] = 0.0,
        min_gpu_count: Annotated[
            int, QueryParameter(ge=0, le=256, description="GPUs that each meet the GPU conditions.")
        ] = 0,
        gpu_type: Annotated[
            str,
            QueryParameter(
                max_length=255, pattern=NO_NUL, description="GPU name, e.g. NVIDIA L4; empty: any."
            ),
        ] = "",
        pool: Pool = "",
        max_sample_age_s: Annotated[
            float,
            QueryParameter(
                gt=0, le=MAX_AGE_S, description="Only samples at most this old, s (default: any)."
            ),
        ] = MAX_AGE_S,
        min_reliability: Annotated[
            float,
            QueryParameter(
                ge=0,
                le=1,
                description=(
                    "Share of the last 30 days online, 0–1; 0 (default): no condition."
                    " An agent whose reliability is not known yet never meets a positive one."
                ),
            ),
        ] = 0.0,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_LIMIT, description="At most this many.")
        ] = 100,
        include_degraded: Annotated[
            bool,
            QueryParameter(
                description=(
                    "Count GPUs whose health is degraded (XID errors, thermal throttling,"
                    " pending page retirement) as capacity; default false. Failed GPUs never are."
                )
            ),
        ] = False,
    ) -> Response[bytes]:
        services = services_of(request.app.state)
        query = CapacityFilter(
            min_gpu_vram_gb=min_gpu_vram_gb,
            min_cpu_cores=min_cpu_cores,
            min_mem_gb=min_mem_gb,
            min_gpu_count=min_gpu_count,
            gpu_type=gpu_type or None,
            pool=pool or None,
            max_sample_age_s=max_sample_age_s if max_sample_age_s < MAX_AGE_S else None,
            min_reliability=min_reliability if min_reliability > 0 else None,
            limit=limit,
            include_degraded=include_degraded,
        )
        now = time.time()
        matches = services.claimable.query(services.index, query, now)
        as_of = services.index.as_of or datetime.fromtimestamp(now, UTC)
        body = services.rows.capacity_list(matches, as_of=as_of, now=now)
        return Response(body, media_type=MediaType.JSON)

    async def _record(self, state: State, agent_id: uuid.UUID) -> AgentRecord:
        async with services_of(state).db.connection() as conn:
            record = await fetch_agent(conn, agent_id)
        if record is None:
            raise NotFound(f"no agent {agent_id}")
        return record

    @get(
        "/{agent_id:str}",
        summary="One agent",
        responses=error_responses(400, 401, 404, 503),
    )
    async def get_agent(self, state: State, agent_id: AgentId) -> Agent:
        record = await self._record(state, uuid.UUID(agent_id))
        services = services_of(state)
        now = time.time()
        allotment = services.claimable.allotment(record, now)
        return agent_of(record, services.index.reliability(record.agent_id), now, allotment)

    @get(
        "/{agent_id:str}/capacity",
        summary="One agent's latest capacity",
        description="Any known agent, online or not; `matching_gpus` lists its usable GPUs.",
        responses=error_responses(400, 401, 404, 503),
    )
    async def get_capacity(self, state: State, agent_id: AgentId) -> Capacity:
        record = await self._record(state, uuid.UUID(agent_id))
        services = services_of(state)
        now = time.time()
        reliability = services.index.reliability(record.agent_id)
        allotment = services.claimable.allotment(record, now)
        gpus = _all_gpus(record) if allotment is None else claimable_gpus(record, allotment, ANY)
        return capacity_of(CapacityMatch(record, gpus, reliability, allotment), now)

    @get(
        "/{agent_id:str}/metrics",
        summary="History of one agent, time_bucket aggregated",
        description=(
            "avg/min/max per bucket of load, available cores, available memory and free VRAM"
            " (per GPU too) over [since, until). Defaults: the last hour, a bucket giving at"
            " most 360 points. The range may not exceed `api.history_max_range_s` nor give"
            " more than `api.history_max_points` buckets."
        ),
        responses=error_responses(400, 401, 404, 503),
    )
    async def get_history(
        self,
        state: State,
        agent_id: AgentId,
        since: Annotated[
            datetime | None, QueryParameter(description="Start (inclusive), ISO 8601; naive = UTC.")
        ] = None,
        until: Annotated[
            datetime | None, QueryParameter(description="End (exclusive), ISO 8601; default now.")
        ] = None,
        bucket: Annotated[
            str | None,
            QueryParameter(
                pattern=BUCKET_PATTERN,
                description="Bucket width: seconds, or a number with s, m, h or d (e.g. 5m).",
            ),
        ] = None,
    ) -> History:
        services = services_of(state)
        settings = services.settings.api
        stop = check_time(until) or datetime.now(UTC)
        start = check_time(since) or max(TIME_FLOOR, stop - DEFAULT_RANGE)
        if start >= stop:
            raise BadParameter("since", "must be before until")
        span = stop - start
        if span.total_seconds() > settings.history_max_range_s:
            raise BadParameter(
                "since", f"range over {settings.history_max_range_s:g} s (api.history_max_range_s)"
            )
        width = (
            parse_bucket(bucket)
            if bucket is not None
            else _auto_bucket(span, settings.history_max_points)
        )
        if width.total_seconds() > settings.history_max_range_s:
            # Wider than any range can be, and past ~290,000 years it overflows the
            # database's microsecond intervals.
            raise BadParameter(
                "bucket",
                f"wider than {settings.history_max_range_s:g} s (api.history_max_range_s)",
            )
        points = math.ceil(span / width)
        if points > settings.history_max_points:
            raise BadParameter(
                "bucket",
                f"gives {points} buckets, over {settings.history_max_points}"
                " (api.history_max_points); widen it or shorten the range",
            )
        record = await self._record(state, uuid.UUID(agent_id))
        async with services.db.connection() as conn:
            hosts, gpus = await fetch_history(
                conn, record.agent_id, since=start, until=stop, bucket=width
            )
        found = history_points(hosts, gpus)
        return History(
            agent_id=record.agent_id,
            since=start,
            until=stop,
            bucket_s=width.total_seconds(),
            points=found,
            count=len(found),
        )
