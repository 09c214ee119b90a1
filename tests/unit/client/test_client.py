"""fleetpulse.client without a server: retries, error mapping, SSE parsing, the light import."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx
import pytest

from fleetpulse.client import (
    ApiConflict,
    ApiNotFound,
    ApiUnavailable,
    AsyncClient,
    BadRequest,
    Client,
    ServiceUnavailable,
    Unauthorized,
)
from fleetpulse.client.calls import Call, SseParser, capacity
from fleetpulse.errors import ApiError, ConfigError, Conflict, NotFound

HEALTH = b'{"status":"ok"}'


def _client(handler: object, **options: object) -> Client:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return Client("http://api.test", transport=transport, retry_backoff_s=0, **options)  # type: ignore[arg-type]


def _error(status: int, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"status_code": status, "detail": detail})


def test_idempotent_calls_are_retried_on_503_and_connection_errors() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(seen) == 2:
            return _error(503, "database at ... is unreachable")
        return httpx.Response(200, content=HEALTH)

    with _client(handler, retries=2) as api:
        assert api.health().status == "ok"
    assert seen == ["/healthz"] * 3


def test_retries_run_out_with_the_servers_message() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _error(503, "database down")

    with _client(handler, retries=1) as api, pytest.raises(ApiUnavailable) as caught:
        api.ready()
    assert calls == 2
    assert caught.value.status_code == 503
    assert caught.value.detail == "database down"


def test_a_call_that_is_not_idempotent_is_sent_once() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _error(503, "busy")

    post = Call("POST", "/api/v1/claims", dict, body=b"{}", idempotent=False)
    with _client(handler, retries=3) as api, pytest.raises(ApiUnavailable):
        api.send(post)
    assert calls == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (404, ApiNotFound),
        (409, ApiConflict),
        (418, ApiError),
    ],
)
def test_error_answers_become_project_errors_with_the_detail(status: int, kind: type) -> None:
    with (
        _client(lambda request: _error(status, f"detail {status}")) as api,
        pytest.raises(kind) as caught,
    ):
        api.agent(uuid.uuid4())
    assert type(caught.value) is kind
    assert caught.value.detail == f"detail {status}"
    assert f"HTTP {status}" in str(caught.value)
    assert isinstance(caught.value, NotFound) == (status == 404)
    assert isinstance(caught.value, Conflict) == (status == 409)


def test_an_error_without_json_keeps_its_text() -> None:
    with (
        _client(lambda request: httpx.Response(502, text="Bad Gateway")) as api,
        pytest.raises(ApiUnavailable, match="Bad Gateway"),
    ):
        api.health()


def test_an_unreachable_api_names_the_url_and_the_fix() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(handler, retries=0) as api, pytest.raises(ServiceUnavailable) as caught:
        api.health()
    assert "http://api.test" in str(caught.value)
    assert "fleetpulse api" in str(caught.value)


def test_an_answer_that_does_not_fit_is_an_api_error() -> None:
    with (
        _client(lambda request: httpx.Response(200, json={"status": "maybe"})) as api,
        pytest.raises(ApiError, match="Health"),
    ):
        api.health()


def test_token_and_user_agent_are_sent() -> None:
    headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers)
        return httpx.Response(200, content=HEALTH)

    with _client(handler, token="s3cret") as api:
        api.health()
    assert headers[0]["authorization"] == "Bearer s3cret"
    assert headers[0]["user-agent"].startswith("fleetpulse-client/")
    assert "s3cret" not in repr(api.options)


def test_capacity_sends_only_the_conditions_given() -> None:
    call = capacity(min_gpu_vram_gb=8, gpu_type="NVIDIA L4", pool="", limit=5)
    assert call.params == {"min_gpu_vram_gb": "8", "gpu_type": "NVIDIA L4", "limit": "5"}


@pytest.mark.parametrize(
    "options", [{"timeout_s": 0}, {"retries": -1}, {"stream_idle_timeout_s": -1.0}]
)
def test_bad_options_are_config_errors(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Client(**options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="http"):
        Client("127.0.0.1:8000")


def test_sse_parser_follows_the_event_stream_rules() -> None:
    parser = SseParser()
    lines = [
        ": greeting",
        "retry: 1000",
        "",
        "id: 7",
        "event: status",
        'data: {"a":',
        "data: 1}",
        "",
        "data:plain",
        "",
    ]
    messages = [m for m in map(parser.feed, lines) if m is not None]
    assert parser.retry_ms == 1000
    assert [(m.event, m.data, m.id) for m in messages] == [
        ("status", '{"a":\n1}', "7"),
        ("message", "plain", "7"),
    ]


def _sse(*events: dict[str, object]) -> bytes:
    out = ": fleetpulse status events\nretry: 1000\n\n"
    for e in events:
        out += f"id: {e['id']}\nevent: status\ndata: {json.dumps(e)}\n\n"
    return out.encode()


def _event(n: int) -> dict[str, object]:
    return {
        "id": n,
        "agent_id": str(uuid.UUID(int=1)),
        "hostname": "ws-1",
        "pool_name": "render",
        "at": "2026-12-06T08:00:00Z",
        "from_status": None,
        "to_status": "online",
        "reason": "first_heartbeat",
    }


def test_stream_resumes_with_last_event_id_after_a_drop() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("last-event-id"))
        if len(sent) == 1:
            return httpx.Response(200, content=_sse(_event(1), _event(2)))
        if len(sent) == 2:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(200, content=_sse(_event(3)))

    with _client(handler) as api:
        stream = api.stream_events(agent_id=uuid.UUID(int=1))
        got = [next(stream).id for _ in range(3)]
    assert got == [1, 2, 3]
    assert sent == [None, "2", "2"]


def test_stream_raises_when_the_api_refuses_it() -> None:
    with (
        _client(lambda request: _error(401, "missing or invalid bearer token")) as api,
        pytest.raises(Unauthorized, match="bearer"),
    ):
        next(api.stream_events())


async def test_async_client_maps_errors_and_streams() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            seen.append(request.headers.get("last-event-id"))
            return httpx.Response(200, content=_sse(_event(len(seen) + 4)))
        return _error(409, "already claimed")

    transport = httpx.MockTransport(handler)
    async with AsyncClient("http://api.test", transport=transport, retry_backoff_s=0) as api:
        with pytest.raises(ApiConflict, match="already claimed"):
            await api.agents()
        got = []
        async for event in api.stream_events(last_event_id=4):
            got.append(event.id)
            if len(got) == 2:
                break
    assert got == [5, 6]
    assert seen == ["4", "5"]


def test_the_client_imports_no_server_packages() -> None:
    # (rich may appear: httpx imports it for its own CLI when it is installed)
    code = (
        "import sys, fleetpulse.client\n"
        "heavy = {'litestar', 'psycopg', 'sqlalchemy', 'alembic', 'aio_pika', 'aiormq', 'uvicorn',"
        " 'polars', 'pyarrow', 'psutil', 'pynvml', 'numpy', 'prometheus_client'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _claim_json(agent: uuid.UUID) -> dict[str, object]:
    return {
        "claim_id": str(uuid.UUID(int=9)),
        "agent_id": str(agent),
        "hostname": "ws-1",
        "pool_name": "render",
        "holder": "dispatch-1",
        "gpus": [{"index": 0, "uuid": "GPU-0", "vram_gb": 8.0}],
        "cpu_cores": 4,
        "mem_gb": 0.0,
        "created_at": "2026-12-06T08:00:00Z",
        "expires_at": "2026-12-06T08:10:00Z",
    }


def test_claims_send_json_and_a_409_is_a_conflict_sent_once() -> None:
    from fleetpulse.client import ClaimFilter

    sent: list[httpx.Request] = []
    agent = uuid.UUID(int=1)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) == 1:
            return httpx.Response(201, json=_claim_json(agent))
        return _error(409, "nothing fits: every match was claimed meanwhile")

    with _client(handler, retries=3) as api:
        held = api.claim(
            holder="dispatch-1", ttl_s=600, filter=ClaimFilter(min_gpu_vram_gb=8), cpu_cores=4
        )
        with pytest.raises(Conflict, match="nothing fits") as caught:
            api.claim(holder="dispatch-1", ttl_s=600, agent_id=agent, gpus=[0, "GPU-1"])
    assert held.gpus[0].vram_gb == 8.0
    assert isinstance(caught.value, ApiConflict)
    assert len(sent) == 2  # the 409 was not retried
    assert sent[0].headers["content-type"] == "application/json"
    assert json.loads(sent[0].content) == {
        "holder": "dispatch-1",
        "ttl_s": 600,
        "filter": {"min_gpu_vram_gb": 8},
        "cpu_cores": 4,
    }
    assert json.loads(sent[1].content)["gpus"] == [0, "GPU-1"]


def test_release_renew_and_cordons_use_their_paths() -> None:
    seen: list[tuple[str, str]] = []
    agent = uuid.UUID(int=1)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode()))
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/renew"):
            if len(seen) == 2:
                return _error(503, "restarting")
            return httpx.Response(200, json=_claim_json(agent))
        return httpx.Response(
            201,
            json={
                "agent_id": str(agent),
                "hostname": "ws-1",
                "gpu_uuid": "GPU-a/b",
                "reason": "fan",
                "by": "ops",
                "at": "2026-12-06T08:00:00Z",
            },
        )

    with _client(handler) as api:
        assert api.release(uuid.UUID(int=9)) is None
        assert api.renew(uuid.UUID(int=9), 60).holder == "dispatch-1"
        assert api.cordon(agent, reason="fan", by="ops", gpu_uuid="GPU-a/b").gpu_uuid == "GPU-a/b"
        api.uncordon(agent)
    claim = f"/api/v1/claims/{uuid.UUID(int=9)}"
    assert seen == [
        ("DELETE", claim),
        ("POST", f"{claim}/renew"),
        ("POST", f"{claim}/renew"),  # renewing is idempotent: retried after the 503
        ("POST", f"/api/v1/agents/{agent}/gpus/GPU-a%2Fb/cordon"),
        ("DELETE", f"/api/v1/agents/{agent}/cordon"),
    ]


def test_stream_carries_claim_and_cordon_events_and_skips_unknown_kinds() -> None:
    detail = {"claim_id": str(uuid.UUID(int=9)), "holder": "dispatch-1"}
    claim_event = {
        **_event(2),
        "reason": "claim_created",
        "from_status": "online",
        "detail": detail,
    }
    body = (
        _sse(_event(1)).decode()
        + f"id: 2\nevent: claim\ndata: {json.dumps(claim_event)}\n\n"
        + "id: 3\nevent: something-newer\ndata: {}\n\n"
        + f"id: 4\nevent: status\ndata: {json.dumps(_event(4))}\n\n"
    ).encode()
    with _client(lambda request: httpx.Response(200, content=body)) as api:
        stream = api.stream_events()
        got = [next(stream) for _ in range(3)]
    assert [e.id for e in got] == [1, 2, 4]
    assert got[1].detail == detail
