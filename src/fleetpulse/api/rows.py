"""Capacity answers assembled from per-agent JSON encoded once per registry write.

A capacity answer is mostly the same agents over and over; re-encoding each row per request
would cost more than the query. Each agent's row is encoded once per (record, reliability)
and spliced with the two per-request fields (``sample_age_s``, ``matching_gpus``); the
answer is joined from those pieces in one copy. The result is byte-for-byte a
:class:`~fleetpulse.api.schemas.CapacityList`.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Final

import msgspec

from fleetpulse.api.schemas import agent_of
from fleetpulse.store import AgentRecord, Allotment, CapacityMatch

__all__ = ["RowCache"]

_encoder: Final = msgspec.json.Encoder()
_NEXT: Final = b',{"sample_age_s":'
_GPUS: Final = b',"matching_gpus":'
_NULL: Final = b"null"
MAX_LISTS: Final = 1024  # answers whose pieces are kept
MAX_LIST_ROWS: Final = 20_000  # rows in them, at most
_Entry = tuple[AgentRecord, float | None, bytes, float | None, Allotment | None]


@functools.cache
def _defaults(kind: type[msgspec.Struct]) -> tuple[tuple[str, object], ...]:
    """The fields ``kind`` leaves out of its JSON when they hold their default."""
    if not kind.__struct_config__.omit_defaults:
        return ()
    return tuple(
        (f.name, f.default)
        for f in msgspec.structs.fields(kind)
        if f.default is not msgspec.NODEFAULT
    )


def encode_without(struct: msgspec.Struct, name: str) -> bytes:
    """``struct`` as JSON without its field ``name``, the others in their declared order
    (the very bytes its own encoding has for them, wherever ``name`` is declared; fields it
    omits at their defaults stay omitted)."""
    fields = msgspec.structs.asdict(struct)
    del fields[name]
    for field, default in _defaults(type(struct)):
        if field in fields and fields[field] == default:
            del fields[field]
    return _encoder.encode(fields)


class RowCache:
    """Encoded agent rows (without the per-request fields), bounded in entries.

    Keyed by the identity of the record: records are frozen and the index swaps in a new
    object on every write, so a record still held here is unchanged (and, being held, its
    ``id`` cannot be reused by another object)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        # id(record) -> (the record, its reliability, the row's tail, its sample time, its
        # claimable figures)
        self._rows: dict[int, _Entry] = {}
        self._gpu_lists: dict[tuple[int, ...], bytes] = {}
        self._as_of: tuple[datetime | None, bytes] = (None, b"")
        # id(matches) -> (the list, its pieces, its rows' sample times)
        self._lists: dict[int, tuple[list[CapacityMatch], list[bytes], list[float | None]]] = {}
        self._list_rows = 0

    def _entry(self, match: CapacityMatch) -> _Entry:
        record, reliability = match.record, match.reliability_30d
        sampled = record.last_sampled_at
        entry = (
            record,
            reliability,
            self._encode(record, reliability, match.allotment),
            None if sampled is None else sampled.timestamp(),
            match.allotment,
        )
        if len(self._rows) >= self.max_entries:
            self._rows.clear()
        self._rows[id(record)] = entry
        return entry

    @staticmethod
    def _encode(
        record: AgentRecord, reliability: float | None, allotment: Allotment | None
    ) -> bytes:
        """The row after ``matching_gpus``: from the comma before the next field to ``}``."""
        row = agent_of(record, reliability, now=0.0, allotment=allotment)
        return b"," + encode_without(row, "sample_age_s")[1:]

    def _gpus(self, indexes: tuple[int, ...]) -> bytes:
        encoded = self._gpu_lists.get(indexes)
        if encoded is None:
            encoded = _encoder.encode(list(indexes))
            if len(self._gpu_lists) < 4096:
                self._gpu_lists[indexes] = encoded
        return encoded

    def _encoded_as_of(self, as_of: datetime) -> bytes:
        cached, encoded = self._as_of
        if cached is not as_of:
            encoded = _encoder.encode(as_of)
            self._as_of = (as_of, encoded)
        return encoded

    def _pieces(self, matches: list[CapacityMatch]) -> tuple[list[bytes], list[float | None]]:
        """The answer's bytes around each row's ``sample_age_s``, and each row's sample time."""
        pieces = [b'{"items":[{"sample_age_s":']
        ats: list[float | None] = []
        rows, gpu_lists = self._rows, self._gpu_lists
        for i, match in enumerate(matches):
            entry = rows.get(id(match.record))
            if (
                entry is None
                or entry[1] != match.reliability_30d
                or entry[4] is not match.allotment
            ):  # (held: still this record)
                entry = self._entry(match)
            ats.append(entry[3])
            gpus = gpu_lists.get(match.matching_gpus) or self._gpus(match.matching_gpus)
            after = _NEXT if i + 1 < len(matches) else b""
            pieces.append(b"".join((_GPUS, gpus, entry[2], after)))
        return pieces, ats

    def capacity_list(self, matches: list[CapacityMatch], *, as_of: datetime, now: float) -> bytes:
        """The answer for ``matches`` at ``now``; the rows of a list seen before are reused
        (the index hands out the same list while it has not changed)."""
        tail = b'],"count":%d,"as_of":%b}' % (len(matches), self._encoded_as_of(as_of))
        if not matches:
            return b'{"items":[' + tail
        cached = self._lists.get(id(matches))
        if cached is None or cached[0] is not matches:  # (held: an id is not reused meanwhile)
            # Bounded in lists and in rows: a list keeps its records, replaced ones included.
            if len(self._lists) >= MAX_LISTS or self._list_rows + len(matches) > MAX_LIST_ROWS:
                self._lists.clear()
                self._list_rows = 0
            pieces, ats = self._pieces(matches)
            cached = self._lists[id(matches)] = (matches, pieces, ats)
            self._list_rows += len(matches)
        pieces, ats = cached[1], cached[2]
        parts: list[bytes] = [b""] * (2 * len(pieces))
        parts[0::2] = pieces
        parts[1:-1:2] = [
            _NULL if at is None else b"%.3f" % (now - at if now > at else 0.0) for at in ats
        ]
        parts[-1] = tail
        return b"".join(parts)
