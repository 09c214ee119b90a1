"""Capacity answers assembled from per-agent JSON encoded once per registry write.

A capacity answer is mostly the same agents over and over; re-encoding each row per request
would cost more than the query. Each agent's row is encoded once per (``updated_at``,
reliability) and spliced with the two per-request fields (``sample_age_s``,
``matching_gpus``). The result is byte-for-byte a :class:`~fleetpulse.api.schemas.CapacityList`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import msgspec

from fleetpulse.api.schemas import agent_of
from fleetpulse.store import AgentRecord, CapacityMatch

__all__ = ["RowCache"]

_encoder: Final = msgspec.json.Encoder()


class RowCache:
    """Encoded agent rows (without the per-request fields), bounded in entries."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        # agent_id -> (the record encoded, its reliability, the row's tail, its sample time)
        self._rows: dict[uuid.UUID, tuple[AgentRecord, float | None, bytes, float | None]] = {}
        self._gpu_lists: dict[tuple[int, ...], bytes] = {}

    def _entry(self, match: CapacityMatch) -> tuple[bytes, float | None]:
        """The row's encoded tail and its sample time (epoch s, None if never sampled)."""
        record, reliability = match.record, match.reliability_30d
        cached = self._rows.get(record.agent_id)
        if cached is not None and cached[1] == reliability:
            if cached[0] is record:  # records are frozen: the same object, the same row
                return cached[2], cached[3]
            if cached[0].updated_at == record.updated_at:
                tail = cached[2]
            else:
                tail = self._encode(record, reliability)
        else:
            tail = self._encode(record, reliability)
        sampled = record.last_sampled_at
        at = None if sampled is None else sampled.timestamp()
        if len(self._rows) >= self.max_entries:
            self._rows.clear()
        self._rows[record.agent_id] = (record, reliability, tail, at)
        return tail, at

    @staticmethod
    def _encode(record: AgentRecord, reliability: float | None) -> bytes:
        body = _encoder.encode(agent_of(record, reliability, now=0.0))
        # drop the leading '{' and the per-request field, which encodes first as a placeholder
        marker = b'"sample_age_s":'
        start = body.index(marker)
        end = body.index(b",", start)
        tail = body[:start] + body[end + 1 :]
        return tail[1:]

    def _gpus(self, indexes: tuple[int, ...]) -> bytes:
        encoded = self._gpu_lists.get(indexes)
        if encoded is None:
            encoded = _encoder.encode(list(indexes))
            if len(self._gpu_lists) < 4096:
                self._gpu_lists[indexes] = encoded
        return encoded

    def capacity_list(self, matches: list[CapacityMatch], *, as_of: datetime, now: float) -> bytes:
        parts: list[bytes] = []
        append, entry, gpus = parts.append, self._entry, self._gpus
        for match in matches:
            tail, at = entry(match)
            age = b"null" if at is None else b"%.3f" % max(0.0, now - at)
            append(
                b'{"sample_age_s":%b,"matching_gpus":%b,%b' % (age, gpus(match.matching_gpus), tail)
            )
        return b'{"items":[%b],"count":%d,"as_of":%b}' % (
            b",".join(parts),
            len(parts),
            _encoder.encode(as_of),
        )
