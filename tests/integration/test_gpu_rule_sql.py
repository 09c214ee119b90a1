"""The SQL form of "a GPU with an error is not capacity" answers as the Python rule does."""

from __future__ import annotations

import json

import msgspec
import psycopg

from fleetpulse.gpus import USABLE_GPU_SQL, usable_gpus
from fleetpulse.store import GpuState

CASES = [
    {"index": 0},  # no error key at all (an older agent)
    {"index": 1, "error": None},
    {"index": 2, "error": ""},
    {"index": 3, "error": "Xid 79"},
    {"index": 4, "error": " "},
    {"index": 5, "error": "null"},
    {"index": 6, "health": "ok"},
    {"index": 7, "health": None},
    {"index": 8, "health": "degraded", "health_reasons": ["xid:94"]},
    {"index": 9, "health": "failed"},
    {"index": 10, "health": "ok", "error": "Xid 79"},
]


def test_usable_gpu_sql_agrees_with_usable_gpus(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT (g->>'index')::int, {USABLE_GPU_SQL} FROM jsonb_array_elements(%s::jsonb) g",
            (json.dumps(CASES),),
        ).fetchall()
    in_sql = {index for index, usable in rows if usable}
    states = msgspec.convert(CASES, list[GpuState])
    in_python = {g.index for g in usable_gpus(states)}
    assert in_sql == in_python == {0, 1, 2, 6, 7}
