"""The client's structs and calls against the API's OpenAPI document: a field, a filter or a
route added on one side and not the other fails here."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
import pytest

from fleetpulse.api import create_app
from fleetpulse.client import Client, calls as client_calls, models
from fleetpulse.config import Settings

# Routes that are not the client's business, and why.
NOT_CLIENT: dict[str, str] = {
    "/metrics": "Prometheus scrapes it",
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings()).openapi_schema.to_schema()
    return schema


def _shape(schema: dict[str, Any]) -> object:
    """A property's type, with the spelling differences of Litestar and msgspec removed."""
    if "enum" in schema and None in schema["enum"]:  # Litestar's spelling of Literal | None
        rest = [v for v in schema["enum"] if v is not None]
        return frozenset({("enum", frozenset(rest)), ("null", None)})
    if "$ref" in schema:
        return ("ref", schema["$ref"].rsplit("/", 1)[-1])
    for union in ("oneOf", "anyOf"):
        if union in schema:
            return frozenset(_shape(s) for s in schema[union])
    if "enum" in schema:
        return ("enum", frozenset(schema["enum"]))
    if schema.get("type") == "array":
        return ("array", _shape(schema["items"]))
    # msgspec (0.23) writes no format for datetime, which also accepts naive times
    fmt = schema.get("format")
    return (schema.get("type"), None if fmt == "date-time" else fmt)


def _client_components() -> dict[str, dict[str, Any]]:
    structs = [getattr(models, name) for name in models.__all__]
    _, components = msgspec.json.schema_components(structs, ref_template="#/$defs/{name}")
    return components


def test_every_struct_matches_its_openapi_component(openapi: dict[str, Any]) -> None:
    server = openapi["components"]["schemas"]
    for name, ours in _client_components().items():
        assert name in server, f"client struct {name} has no OpenAPI component"
        theirs = server[name]
        assert set(ours["properties"]) == set(theirs["properties"]), name
        for field, spec in ours["properties"].items():
            assert _shape(spec) == _shape(theirs["properties"][field]), f"{name}.{field}"
        # Required on the server means required here, so a missing field fails to decode.
        assert set(ours.get("required", ())) == set(theirs.get("required", ())), name


def test_every_answer_component_has_a_client_struct(openapi: dict[str, Any]) -> None:
    ours = set(_client_components())
    answers = set(openapi["components"]["schemas"]) - {"ErrorBody"}
    assert answers <= ours, f"no client struct for {sorted(answers - ours)}"


def _calls() -> dict[str, client_calls.Call[Any]]:
    """Every call builder, with every optional argument given."""
    agent = "00000000-0000-0000-0000-000000000001"
    return {
        "/api/v1/agents": client_calls.agents(status="online", pool="p", limit=5, after=agent),
        "/api/v1/agents/{agent_id}": client_calls.agent(agent),
        "/api/v1/agents/{agent_id}/capacity": client_calls.agent_capacity(agent),
        "/api/v1/agents/available-capacity": client_calls.capacity(
            min_gpu_vram_gb=1,
            min_cpu_cores=1,
            min_mem_gb=1,
            min_gpu_count=1,
            gpu_type="t",
            pool="p",
            max_sample_age_s=1,
            min_reliability=0.5,
            limit=1,
        ),
        "/api/v1/agents/{agent_id}/metrics": client_calls.history(
            agent, since=_t(), until=_t(), bucket="1m"
        ),
        "/api/v1/events": client_calls.events(
            agent_id=agent, since=_t(), until=_t(), after_id=1, limit=1
        ),
        "/api/v1/events/stream": client_calls.Call(
            "GET", client_calls.EVENTS_STREAM, dict, client_calls.stream_params(agent)
        ),
        "/healthz": client_calls.health(),
        "/readyz": client_calls.ready(),
    }


def _t() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 12, 6, tzinfo=UTC)


def test_every_route_and_query_parameter_is_covered(openapi: dict[str, Any]) -> None:
    built = _calls()
    for path, item in openapi["paths"].items():
        if path in NOT_CLIENT:
            continue
        for method, operation in item.items():
            assert path in built, f"{method.upper()} {path} has no client call"
            call = built[path]
            assert call.method == method.upper(), path
            query = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}
            assert set(call.params) == query, path


def test_both_clients_offer_the_same_calls() -> None:
    from fleetpulse.client import AsyncClient

    public = {n for n in dir(Client) if not n.startswith("_")}
    assert public == {n for n in dir(AsyncClient) if not n.startswith("_")}
    for name in public - {"close", "send", "options"}:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync).parameters.keys() == inspect.signature(aio).parameters.keys()
