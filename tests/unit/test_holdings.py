"""A read of the database begun before a change made here does not overwrite that change."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fleetpulse.store.allotment import ClaimRecord, Holding
from fleetpulse.store.holdings import Holdings
from tests.unit.api.records import NOW


def _holding(agent: uuid.UUID) -> Holding:
    claim = ClaimRecord(
        claim_id=uuid.uuid4(),
        agent_id=agent,
        holder="h",
        gpus=(),
        cpu_cores=1,
        mem_gb=0.0,
        created_at=NOW,
        expires_at=NOW + timedelta(seconds=60),
    )
    return Holding(claims=(claim,))


def test_a_full_read_begun_before_a_local_release_keeps_the_release() -> None:
    held, other = uuid.uuid4(), uuid.uuid4()
    holdings = Holdings()
    holdings.put(held, _holding(held))
    read_at = holdings.version  # the read starts: it will still see the claim on `held`
    holdings.put(held, Holding())  # released here meanwhile
    stale = {held: _holding(held), other: _holding(other)}
    holdings.replace_all(stale, read_at=read_at)
    assert holdings.get(held).empty  # not brought back by the older read
    assert not holdings.get(other).empty
    assert holdings.changed_since(read_at) == {held}  # to be read again
    assert holdings.changed_since(holdings.version) == set()


def test_expiry_times_come_in_order_and_skip_the_past() -> None:
    agent = uuid.uuid4()
    holdings = Holdings()
    holdings.put(agent, _holding(agent))
    first = (NOW + timedelta(seconds=60)).timestamp()
    assert holdings.next_expiry_ts(NOW.timestamp()) == first
    assert holdings.next_expiry_ts(first) == float("inf")
