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
from fleetpulse.store import CapacityMatch

__all__ = ["RowCache"]

_encoder: Final = msgspec.json.Encoder()


class RowCache:
    """Encoded agent rows (without the per-request fields), bounded in entries."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._rows: dict[uuid.UUID, tuple[datetime, float | None, bytes]] = {}
        self._gpu_lists: dict[tuple[int, ...], bytes] = {}

    def _tail(self, match: CapacityMatch) -> bytes:
        record = match.record
        cached = self._rows.get(record.agent_id)
        if (
            cached is not None
            and cached[0] == record.updated_at
            and cached[1] == match.reliability_30d
        ):
            return cached[2]
        body = _encoder.encode(agent_of(record, match.reliability_30d, now=0.0))
        # drop the leading '{' and the per-request field, which encodes first as a placeholder
        marker = b'"sample_age_s":'
        start = body.index(marker)
        end = body.index(b",", start)
        tail = body[:start] + body[end + 1 :]
        if len(self._rows) >= self.max_entries:
            self._rows.clear()
        self._rows[record.agent_id] = (record.updated_at, match.reliability_30d, tail[1:])
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
        for match in matches:
            sampled = match.record.last_sampled_at
            age = b"null" if sampled is None else b"%.3f" % max(0.0, now - sampled.timestamp())
            parts.append(
                b'{"sample_age_s":%b,"matching_gpus":%b,%b'
                % (age, self._gpus(match.matching_gpus), self._tail(match))
            )
        return b'{"items":[%b],"count":%d,"as_of":%b}' % (
            b",".join(parts),
            len(parts),
            _encoder.encode(as_of),
        )
