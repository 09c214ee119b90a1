"""The in-memory spool: FIFO, bounded, counting drops."""

from __future__ import annotations

from fleetpulse.agent import (
    MemorySpool,
)


def test_memory_spool_is_fifo_bounded_and_counts_drops() -> None:
    spool = MemorySpool(max_bytes=10)
    for body in (b"aaaa", b"bbbb", b"cccc"):
        spool.push(body)
    assert [e.body for e in spool.peek(10)] == [b"bbbb", b"cccc"]
    assert spool.dropped_total == 1
    spool.push(b"x" * 11)  # larger than the whole spool
    assert spool.dropped_total == 2
    first = spool.peek(1)
    assert [e.body for e in first] == [b"bbbb"]
    spool.remove([first[0].id, 999])
    assert spool.depth == 1
    assert [spool.next_seq(), spool.next_seq()] == [0, 1]
