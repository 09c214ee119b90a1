"""Claims and cordons in PostgreSQL: every change in one transaction, with its event.

A claim is decided inside one transaction that first takes a transaction-scoped advisory
lock on the agent (so claims on one agent are decided one at a time, across every API
process, while claims on different agents run side by side and heartbeats never wait), then
reads the agent's registry row, its active claims and its cordons, decides with
:func:`~fleetpulse.store.allotment.fit` and writes the claim and its event. The lock is
released at commit, after which the next claimer on that agent reads the new claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
import psycopg
from psycopg.rows import TupleRow

from fleetpulse.store.allotment import (
    ClaimAsk,
    ClaimedGpu,
    ClaimRecord,
    CordonRecord,
    Holding,
    Refusal,
    fit,
)
from fleetpulse.store.queries import REGISTRY_COLUMNS, AgentRecord, record_from_row

__all__ = [
    "CLAIM_LOCK_CLASS",
    "CLAIM_REASONS",
    "CORDON_REASONS",
    "ClaimOutcome",
    "expire_claims",
    "fetch_claim",
    "fetch_claims",
    "fetch_cordons",
    "fetch_holdings",
    "place_claim",
    "purge_ended_claims",
    "release_claim",
    "remove_cordon",
    "renew_claim",
    "set_cordon",
]

Conn = psycopg.AsyncConnection[TupleRow]
# First key of pg_advisory_xact_lock(int, int) for claims ('FPCL'); the second is the agent.
CLAIM_LOCK_CLASS: Final = 0x4650434C
CLAIM_REASONS: Final = ("claim_created", "claim_renewed", "claim_released", "claim_expired")
CORDON_REASONS: Final = ("cordon", "uncordon")
EXPIRE_BATCH: Final = 1000

_claims_decoder: Final = msgspec.json.Decoder(list[ClaimRecord])
_cordons_decoder: Final = msgspec.json.Decoder(list[CordonRecord])
_encoder: Final = msgspec.json.Encoder()

_CLAIM_JSON: Final = (
    "json_build_object('claim_id', c.claim_id, 'agent_id', c.agent_id, 'holder', c.holder,"
    " 'gpus', c.gpus, 'cpu_cores', c.cpu_cores, 'mem_gb', c.mem_gb,"
    " 'created_at', c.created_at, 'expires_at', c.expires_at,"
    " 'ended_at', c.ended_at, 'end_reason', c.end_reason)"
)
_CORDON_JSON: Final = (
    "json_build_object('agent_id', k.agent_id, 'gpu_uuid', nullif(k.gpu_uuid, ''),"
    " 'reason', k.reason, 'by', k.cordoned_by, 'at', k.cordoned_at)"
)
_CLAIM_COLUMNS: Final = (
    "c.claim_id, c.agent_id, c.holder, c.gpus::text, c.cpu_cores, c.mem_gb, c.created_at,"
    " c.expires_at, c.ended_at, c.end_reason"
)
_gpus_decoder: Final = msgspec.json.Decoder(tuple[ClaimedGpu, ...])

# The event of a claim change: from = to = the agent's status, so status spans stay as they are.
_CLAIM_EVENT: Final = (
    "INSERT INTO agent_status_events (agent_id, at, from_status, to_status, reason, detail)"
    " SELECT c.agent_id, %(at)s, coalesce(r.status, 'offline'), coalesce(r.status, 'offline'),"
    " 'claim_' || %(kind)s, json_build_object('claim_id', c.claim_id, 'holder', c.holder,"
    " 'gpus', c.gpus, 'cpu_cores', c.cpu_cores, 'mem_gb', c.mem_gb,"
    " 'expires_at', c.expires_at)::jsonb"
    " FROM c LEFT JOIN agent_registry r USING (agent_id)"
)


class ClaimOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a claim attempt on one agent found: the agent (None: unknown), what it held
    after the attempt, and the claim made or why none was."""

    record: AgentRecord | None
    holding: Holding
    result: ClaimRecord | Refusal


def _claim_from_row(row: TupleRow) -> ClaimRecord:
    return ClaimRecord(
        claim_id=row[0],
        agent_id=row[1],
        holder=row[2],
        gpus=_gpus_decoder.decode(row[3]),
        cpu_cores=row[4],
        mem_gb=row[5],
        created_at=row[6],
        expires_at=row[7],
        ended_at=row[8],
        end_reason=row[9],
    )


def _holding(claims_json: str | None, cordons_json: str | None) -> Holding:
    claims = tuple(_claims_decoder.decode(claims_json)) if claims_json else ()
    cordons = _cordons_decoder.decode(cordons_json) if cordons_json else []
    return Holding(
        claims=claims,
        cordon=next((k for k in cordons if k.gpu_uuid is None), None),
        gpu_cordons=tuple(k for k in cordons if k.gpu_uuid is not None),
    )


async def place_claim(
    conn: Conn,
    *,
    agent_id: uuid.UUID,
    holder: str,
    ask: ClaimAsk,
    ttl_s: float,
    check: Callable[[AgentRecord, Holding, datetime], Refusal | None] | None = None,
) -> ClaimOutcome:
    """Claim ``ask`` on one agent, for ``ttl_s``, if it fits now (and ``check``, a further
    condition such as the filter that chose the agent, passes)."""
    # The read is a statement of its own after the lock: its snapshot sees every claim on
    # this agent committed before the lock was granted. (Pipelining the statements saved no
    # time here and cost more client CPU.)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", (CLAIM_LOCK_CLASS, agent_id)
        )
        cur = await conn.execute(
            "SELECT clock_timestamp(),"
            f" (SELECT json_agg({_CLAIM_JSON}) FROM claims c WHERE c.agent_id = r.agent_id"
            "   AND c.ended_at IS NULL AND c.expires_at > clock_timestamp())::text,"
            f" (SELECT json_agg({_CORDON_JSON}) FROM cordons k"
            "   WHERE k.agent_id = r.agent_id)::text,"
            f" {REGISTRY_COLUMNS} FROM agent_registry r WHERE r.agent_id = %s",
            (agent_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return ClaimOutcome(record=None, holding=Holding(), result=Refusal("unknown agent"))
        now: datetime = row[0]
        holding = _holding(row[1], row[2])
        record = record_from_row(row[3:])
        refusal = check(record, holding, now) if check is not None else None
        taken = refusal or fit(record, holding, ask, now)
        if isinstance(taken, Refusal):
            return ClaimOutcome(record=record, holding=holding, result=taken)
        claim_id = uuid.uuid4()
        expires = now + timedelta(seconds=ttl_s)
        await conn.execute(
            "WITH c AS (INSERT INTO claims"
            " (claim_id, agent_id, holder, gpus, cpu_cores, mem_gb, created_at, expires_at)"
            " VALUES (%(id)s, %(agent)s, %(holder)s, %(gpus)s::jsonb, %(cores)s, %(mem)s,"
            "         %(at)s, %(expires)s)"
            " RETURNING *) " + _CLAIM_EVENT,
            {
                "id": claim_id,
                "agent": agent_id,
                "holder": holder,
                "gpus": _encoder.encode(taken).decode(),
                "cores": ask.cpu_cores,
                "mem": ask.mem_gb,
                "at": now,
                "expires": expires,
                "kind": "created",
            },
        )
        claim = ClaimRecord(
            claim_id=claim_id,
            agent_id=agent_id,
            holder=holder,
            gpus=taken,
            cpu_cores=ask.cpu_cores,
            mem_gb=ask.mem_gb,
            created_at=now,
            expires_at=expires,
        )
    held = msgspec.structs.replace(holding, claims=(*holding.claims, claim))
    return ClaimOutcome(record=record, holding=held, result=claim)


async def fetch_claim(conn: Conn, claim_id: uuid.UUID) -> ClaimRecord | None:
    """A claim, active or ended (until ended claims are purged)."""
    cur = await conn.execute(
        f"SELECT {_CLAIM_COLUMNS} FROM claims c WHERE c.claim_id = %s", (claim_id,)
    )
    row = await cur.fetchone()
    return None if row is None else _claim_from_row(row)


async def fetch_claims(
    conn: Conn,
    *,
    agent_id: uuid.UUID | None = None,
    holder: str | None = None,
    limit: int = 1000,
) -> list[ClaimRecord]:
    """Active claims, oldest first."""
    cur = await conn.execute(
        f"SELECT {_CLAIM_COLUMNS} FROM claims c"
        " WHERE c.ended_at IS NULL AND c.expires_at > clock_timestamp()"
        "   AND (%(agent)s::uuid IS NULL OR c.agent_id = %(agent)s)"
        "   AND (%(holder)s::text IS NULL OR c.holder = %(holder)s)"
        " ORDER BY c.created_at, c.claim_id LIMIT %(limit)s",
        {"agent": agent_id, "holder": holder, "limit": limit},
    )
    return [_claim_from_row(row) for row in await cur.fetchall()]


async def renew_claim(conn: Conn, claim_id: uuid.UUID, ttl_s: float) -> ClaimRecord | None:
    """Give an active claim a new TTL from now; None if it is not active (see
    :func:`fetch_claim` for why)."""
    cur = await conn.execute(
        "WITH c AS (UPDATE claims"
        " SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)"
        " WHERE claim_id = %(id)s AND ended_at IS NULL AND expires_at > clock_timestamp()"
        " RETURNING *), e AS (" + _CLAIM_EVENT.replace("%(at)s", "clock_timestamp()") + ")"
        f" SELECT {_CLAIM_COLUMNS} FROM c",
        {"id": claim_id, "ttl": ttl_s, "kind": "renewed"},
    )
    row = await cur.fetchone()
    return None if row is None else _claim_from_row(row)


async def release_claim(conn: Conn, claim_id: uuid.UUID) -> ClaimRecord | None:
    """End a claim now (recorded as expired if it already was); None if it had ended or
    never existed."""
    cur = await conn.execute(
        "WITH c AS (UPDATE claims SET"
        " ended_at = least(clock_timestamp(), expires_at),"
        " end_reason = CASE WHEN expires_at <= clock_timestamp() THEN 'expired'"
        "              ELSE 'released' END"
        " WHERE claim_id = %(id)s AND ended_at IS NULL RETURNING *),"
        " e AS ("
        + _CLAIM_EVENT.replace("%(at)s", "c.ended_at").replace("%(kind)s", "c.end_reason")
        + f") SELECT {_CLAIM_COLUMNS} FROM c",
        {"id": claim_id},
    )
    row = await cur.fetchone()
    return None if row is None else _claim_from_row(row)


async def expire_claims(conn: Conn, *, limit: int = EXPIRE_BATCH) -> list[ClaimRecord]:
    """Mark up to ``limit`` claims past their expiry as ended, each with its event. Safe
    from several processes at once (rows one of them holds are skipped by the others)."""
    cur = await conn.execute(
        "WITH due AS (SELECT claim_id FROM claims"
        "   WHERE ended_at IS NULL AND expires_at <= clock_timestamp()"
        "   ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        " c AS (UPDATE claims SET ended_at = expires_at, end_reason = 'expired'"
        "   WHERE claim_id IN (SELECT claim_id FROM due) RETURNING *),"
        " e AS (" + _CLAIM_EVENT.replace("%(at)s", "c.ended_at") + ")"
        f" SELECT {_CLAIM_COLUMNS} FROM c",
        {"limit": limit, "kind": "expired"},
    )
    return [_claim_from_row(row) for row in await cur.fetchall()]


async def purge_ended_claims(conn: Conn, *, older_than_s: float) -> int:
    """Delete claims that ended more than ``older_than_s`` ago (their events stay)."""
    cur = await conn.execute(
        "DELETE FROM claims WHERE ended_at IS NOT NULL"
        " AND ended_at < clock_timestamp() - make_interval(secs => %s)",
        (older_than_s,),
    )
    return cur.rowcount


async def fetch_holdings(
    conn: Conn, agent_ids: Sequence[uuid.UUID] | None = None
) -> dict[uuid.UUID, Holding]:
    """Active claims and cordons by agent (every agent that has any, or those asked for;
    an agent asked for that holds nothing maps to an empty :class:`Holding`)."""
    params: dict[str, Any] = {"ids": list(agent_ids) if agent_ids is not None else None}
    only = "(%(ids)s::uuid[] IS NULL OR {col} = ANY(%(ids)s::uuid[]))"
    cur = await conn.execute(
        f"SELECT c.agent_id, json_agg({_CLAIM_JSON})::text FROM claims c"
        " WHERE c.ended_at IS NULL AND c.expires_at > clock_timestamp()"
        f"   AND {only.format(col='c.agent_id')} GROUP BY c.agent_id",
        params,
    )
    claims: dict[uuid.UUID, str] = dict(await cur.fetchall())
    cur = await conn.execute(
        f"SELECT k.agent_id, json_agg({_CORDON_JSON})::text FROM cordons k"
        f" WHERE {only.format(col='k.agent_id')} GROUP BY k.agent_id",
        params,
    )
    cordons: dict[uuid.UUID, str] = dict(await cur.fetchall())
    agents: Iterable[uuid.UUID] = agent_ids if agent_ids is not None else {*claims, *cordons}
    return {a: _holding(claims.get(a), cordons.get(a)) for a in agents}


async def fetch_cordons(conn: Conn, *, agent_id: uuid.UUID | None = None) -> list[CordonRecord]:
    cur = await conn.execute(
        f"SELECT ({_CORDON_JSON})::text FROM cordons k"
        " WHERE %(agent)s::uuid IS NULL OR k.agent_id = %(agent)s"
        " ORDER BY k.cordoned_at, k.agent_id, k.gpu_uuid",
        {"agent": agent_id},
    )
    return [msgspec.json.decode(row[0], type=CordonRecord) for row in await cur.fetchall()]


_CORDON_EVENT: Final = (
    "INSERT INTO agent_status_events (agent_id, at, from_status, to_status, reason, detail)"
    " SELECT k.agent_id, {at}, r.status, r.status, %(reason)s,"
    " json_build_object('gpu_uuid', nullif(k.gpu_uuid, ''), 'reason', k.reason,"
    " 'by', k.cordoned_by, 'cordoned_at', k.cordoned_at)::jsonb"
    " FROM k JOIN agent_registry r USING (agent_id)"
)


async def set_cordon(
    conn: Conn, agent_id: uuid.UUID, gpu_uuid: str | None, *, reason: str, by: str
) -> tuple[CordonRecord, bool]:
    """Cordon an agent (``gpu_uuid`` None) or one of its GPUs; returns the cordon and
    whether it is new (a repeated cordon keeps its time and records no second event, but
    takes the new reason and author)."""
    cur = await conn.execute(
        "WITH k AS (INSERT INTO cordons (agent_id, gpu_uuid, reason, cordoned_by, cordoned_at)"
        " VALUES (%(agent)s, %(gpu)s, %(why)s, %(by)s, clock_timestamp())"
        " ON CONFLICT (agent_id, gpu_uuid) DO UPDATE"
        " SET reason = excluded.reason, cordoned_by = excluded.cordoned_by"
        " RETURNING *, (xmax = 0) AS inserted),"
        " e AS (" + _CORDON_EVENT.format(at="k.cordoned_at") + " WHERE k.inserted)"
        f" SELECT ({_CORDON_JSON})::text, k.inserted FROM k",
        {"agent": agent_id, "gpu": gpu_uuid or "", "why": reason, "by": by, "reason": "cordon"},
    )
    row = await cur.fetchone()
    assert row is not None
    return msgspec.json.decode(row[0], type=CordonRecord), bool(row[1])


async def remove_cordon(conn: Conn, agent_id: uuid.UUID, gpu_uuid: str | None) -> bool:
    """Lift a cordon; True if there was one (and an ``uncordon`` event was recorded)."""
    cur = await conn.execute(
        "WITH k AS (DELETE FROM cordons WHERE agent_id = %(agent)s AND gpu_uuid = %(gpu)s"
        " RETURNING *), e AS ("
        + _CORDON_EVENT.format(at="clock_timestamp()")
        + ") SELECT count(*) FROM k",
        {"agent": agent_id, "gpu": gpu_uuid or "", "reason": "uncordon"},
    )
    row = await cur.fetchone()
    return bool(row and row[0])
