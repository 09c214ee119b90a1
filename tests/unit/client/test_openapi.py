"""The client's structs and calls against the API's OpenAPI document: a field, a filter or a
route added on one side and not the other fails here."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
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


# What the client already speaks and the API does not serve yet (nothing, since claims and
# cordons landed). Once the server has an entry,
# the test below fails until it is removed here, so this list only ever shrinks.
PENDING_ON_SERVER: dict[str, frozenset[str] | None] = {}  # None: the whole struct


def test_every_struct_matches_its_openapi_component(openapi: dict[str, Any]) -> None:
    server = openapi["components"]["schemas"]
    for name, ours in _client_components().items():
        pending = PENDING_ON_SERVER.get(name, frozenset())
        if name not in server:
            assert name in PENDING_ON_SERVER, f"client struct {name} has no OpenAPI component"
            assert pending is None, f"{name}: the server lost it"
            continue
        assert pending is not None, f"{name} is on the server now: drop it from PENDING_ON_SERVER"
        theirs = server[name]
        arrived = pending & set(theirs["properties"])
        assert not arrived, f"{name}.{sorted(arrived)} on the server now: drop from PENDING"
        assert set(ours["properties"]) - pending == set(theirs["properties"]), name
        for field, spec in ours["properties"].items():
            if field not in pending:
                assert _shape(spec) == _shape(theirs["properties"][field]), f"{name}.{field}"
        # Required on the server means required here, so a missing field fails to decode.
        assert set(ours.get("required", ())) == set(theirs.get("required", ())), name


def test_every_answer_component_has_a_client_struct(openapi: dict[str, Any]) -> None:
    ours = set(_client_components())
    answers = set(openapi["components"]["schemas"]) - {"ErrorBody"}
    assert answers <= ours, f"no client struct for {sorted(answers - ours)}"


def _calls() -> dict[tuple[str, str], client_calls.Call[Any]]:
    """Every call builder by (method, OpenAPI path), with every optional argument given."""
    agent = "00000000-0000-0000-0000-000000000001"
    claim = "00000000-0000-0000-0000-000000000002"
    built = [
        client_calls.agents(status="online", pool="p", limit=5, after=agent),
        client_calls.agent(agent),
        client_calls.agent_capacity(agent),
        client_calls.capacity(
            min_gpu_vram_gb=1,
            min_cpu_cores=1,
            min_mem_gb=1,
            min_gpu_count=1,
            gpu_type="t",
            pool="p",
            max_sample_age_s=1,
            min_reliability=0.5,
            limit=1,
            include_degraded=True,
        ),
        client_calls.history(agent, since=_T, until=_T, bucket="1m"),
        client_calls.events(agent_id=agent, since=_T, until=_T, after_id=1, limit=1),
        client_calls.Call(
            "GET", client_calls.EVENTS_STREAM, dict, client_calls.stream_params(agent)
        ),
        client_calls.health(),
        client_calls.ready(),
        client_calls.claim(holder="h", ttl_s=60, agent_id=agent),
        client_calls.claims(agent_id=agent, holder="h", limit=1),
        client_calls.get_claim(claim),
        client_calls.renew(claim, 60),
        client_calls.release(claim),
        client_calls.cordon(agent, reason="r", by="b"),
        client_calls.uncordon(agent),
        client_calls.cordon(agent, reason="r", by="b", gpu_uuid="GPU-1"),
        client_calls.uncordon(agent, gpu_uuid="GPU-1"),
        client_calls.cordons(agent_id=agent),
    ]
    templated = {
        agent: "{agent_id}",
        claim: "{claim_id}",
        "/gpus/GPU-1/": "/gpus/{gpu_uuid}/",
    }
    out: dict[tuple[str, str], client_calls.Call[Any]] = {}
    for call in built:
        path = call.path
        for concrete, template in templated.items():
            path = path.replace(concrete, template)
        out[(call.method, path)] = call
    return out


_T = datetime(2026, 12, 6, tzinfo=UTC)


def test_every_route_and_query_parameter_is_covered(openapi: dict[str, Any]) -> None:
    built = _calls()
    for path, item in openapi["paths"].items():
        if path in NOT_CLIENT:
            continue
        for method, operation in item.items():
            key = (method.upper(), path)
            assert key in built, f"{method.upper()} {path} has no client call"
            query = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}
            assert set(built[key].params) == query, path
            assert (built[key].body is not None) == ("requestBody" in operation), path


def test_both_clients_offer_the_same_calls() -> None:
    from fleetpulse.client import AsyncClient

    public = {n for n in dir(Client) if not n.startswith("_")}
    assert public == {n for n in dir(AsyncClient) if not n.startswith("_")}
    assert (Client.is_async, AsyncClient.is_async) == (False, True)
    for name in public - {"close", "send", "options", "is_async"}:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync).parameters.keys() == inspect.signature(aio).parameters.keys()
