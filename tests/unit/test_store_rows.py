"""The row classes of the write path carry their PostgreSQL types (no database here)."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from fleetpulse.store.rows import GpuRow, PgType, SampleRow, columns


def test_columns_follow_the_fields_in_order_with_their_types() -> None:
    cols = columns(SampleRow)
    assert [name for name, _ in cols] == list(SampleRow._fields)
    assert cols[3] == ("seq", PgType("int8"))
    assert cols[-3] == ("errors", PgType("text", "text[]"))
    assert cols[-2] == ("clock_skewed", PgType("bool"))
    assert cols[-1] == ("incarnation", PgType("uuid"))
    # An optional column travels as its member's type.
    assert dict(columns(GpuRow))["util_pct"] == PgType("float8")


def test_a_field_without_a_postgresql_type_is_a_clear_error() -> None:
    class Untyped(NamedTuple):
        name: str

    with pytest.raises(TypeError, match="carries no PgType"):
        columns(Untyped)
