"""Claims and cordons on a real TimescaleDB: claim, renew, release, expire, refuse; cordon."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from typing import Any

import httpx
import psycopg

from fleetpulse import store
from fleetpulse.api import create_app
from fleetpulse.config import DatabaseSettings, Settings
from fleetpulse.console import run_status
from fleetpulse.console.claims import run_claims, run_cordon, run_uncordon
from tests.fixtures.api import GpuSeed, api_settings, live_server, seed_agent

CLAIMS = "/api/v1/claims"
CAP = "/api/v1/agents/available-capacity"


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{want}}}")


def _gpu_uuid(agent: uuid.UUID, index: int) -> str:
    return f"GPU-{agent}-{index}"


def _reasons(conn: psycopg.Connection[Any], agent: uuid.UUID) -> list[str]:
    rows = conn.execute(
        "SELECT reason FROM agent_status_events WHERE agent_id = %s AND reason NOT IN"
        " ('first_heartbeat', 'heartbeat', 'silence', 'shutdown') ORDER BY id",
        (agent,),
    ).fetchall()
    return [r[0] for r in rows]


async def test_claim_on_a_named_agent_holds_the_gpu_and_answers_the_claim(conn, client_for) -> None:
    agent = seed_agent(conn, hostname="big", gpus=(GpuSeed(24, 20), GpuSeed(24, 24)))
    async with client_for() as client:
        made = await client.post(
            CLAIMS,
            json={
                "holder": "sched-a",
                "ttl_s": 60,
                "agent_id": str(agent),
                "vram_gb": 16,
                "cpu_cores": 4,
                "mem_gb": 8,
            },
        )
        listed = (await client.get(CLAIMS, params={"holder": "sched-a"})).json()
        one = await client.get(f"{CLAIMS}/{made.json()['claim_id']}")
    assert made.status_code == 201, made.text
    claim = made.json()
    assert claim["agent_id"] == str(agent)
    assert claim["hostname"] == "big"
    assert claim["holder"] == "sched-a"
    assert claim["gpus"] == [{"index": 0, "uuid": _gpu_uuid(agent, 0), "vram_gb": 16.0}]
    assert (claim["cpu_cores"], claim["mem_gb"]) == (4, 8.0)
    assert claim["expires_at"] > claim["created_at"]
    assert [c["claim_id"] for c in listed["items"]] == [claim["claim_id"]]
    assert one.json() == claim
    assert _reasons(conn, agent) == ["claim_created"]


async def test_gpus_chosen_by_uuid_or_index(conn, client_for) -> None:
    agent = seed_agent(conn, gpus=(GpuSeed(24, 24), GpuSeed(24, 24), GpuSeed(24, 24)))
    async with client_for() as client:
        by_uuid = await client.post(
            CLAIMS,
            json={
                "holder": "h",
                "ttl_s": 60,
                "agent_id": str(agent),
                "gpus": [_gpu_uuid(agent, 2)],
                "vram_gb": 20,
            },
        )
        by_index = await client.post(
            CLAIMS, json={"holder": "h", "ttl_s": 60, "agent_id": str(agent), "gpus": [1, 0]}
        )
        again = await client.post(
            CLAIMS,
            json={"holder": "h", "ttl_s": 60, "agent_id": str(agent), "gpus": [2], "vram_gb": 8},
        )
    assert [g["index"] for g in by_uuid.json()["gpus"]] == [2]
    assert [g["index"] for g in by_index.json()["gpus"]] == [1, 0]
    assert [g["vram_gb"] for g in by_index.json()["gpus"]] == [0.0, 0.0]
    assert again.status_code == 409
    assert "8 GiB asked on GPU" in again.json()["detail"]
    assert "4 claimable" in again.json()["detail"]


async def test_claim_by_filter_takes_the_agents_in_available_capacity_order(
    conn, client_for
) -> None:
    best = seed_agent(conn, hostname="best", gpus=(GpuSeed(24, 24),))
    seed_agent(conn, hostname="second", gpus=(GpuSeed(24, 18),))
    seed_agent(conn, hostname="small", gpus=(GpuSeed(8, 8),))
    ask = {"holder": "d", "ttl_s": 60, "filter": {"min_gpu_vram_gb": 16}}
    async with client_for() as client:
        order = [
            r["hostname"]
            for r in (await client.get(CAP, params={"min_gpu_vram_gb": 16})).json()["items"]
        ]
        first = await client.post(CLAIMS, json=ask)
        second = await client.post(CLAIMS, json=ask)
        third = await client.post(CLAIMS, json=ask)
    assert order == ["best", "second"]
    assert first.status_code == second.status_code == 201
    assert [first.json()["hostname"], second.json()["hostname"]] == order
    assert first.json()["gpus"][0]["vram_gb"] == 16.0  # amounts default to the filter's
    assert first.json()["agent_id"] == str(best)
    assert third.status_code == 409
    assert "nothing fits" in third.json()["detail"]


async def test_claim_by_filter_with_nothing_matching_is_409(conn, client_for) -> None:
    seed_agent(conn, gpus=(GpuSeed(24, 24),))
    async with client_for() as client:
        none = await client.post(
            CLAIMS, json={"holder": "d", "ttl_s": 60, "filter": {"gpu_type": "NVIDIA H100"}}
        )
    assert none.status_code == 409
    assert "no schedulable online agent matches" in none.json()["detail"]


async def test_bad_bodies_are_400_naming_the_field(conn, client_for) -> None:
    agent = seed_agent(conn, gpus=(GpuSeed(24, 24),))
    a = str(agent)
    cases = [
        ({"holder": "h", "ttl_s": 60}, "agent_id"),
        ({"holder": "h", "ttl_s": 60, "agent_id": a, "filter": {}}, "agent_id"),
        ({"holder": "h", "ttl_s": 0.5, "agent_id": a}, "ttl_s"),
        ({"holder": "h", "ttl_s": 86_401, "agent_id": a}, "ttl_s"),
        ({"holder": "", "ttl_s": 60, "agent_id": a}, "holder"),
        ({"ttl_s": 60, "agent_id": a}, "holder"),
        ({"holder": "h", "ttl_s": 60, "agent_id": "nope"}, "agent_id"),
        ({"holder": "h", "ttl_s": 60, "agent_id": a, "vram_gb": -1}, "vram_gb"),
        ({"holder": "h", "ttl_s": 60, "agent_id": a, "gpus": [0], "gpu_count": 2}, "gpu_count"),
        ({"holder": "h", "ttl_s": 60, "agent_id": a, "vram_gb": 4, "gpu_count": 0}, "gpu_count"),
        ({"holder": "h", "ttl_s": 60, "filter": {}, "gpus": [0]}, "gpus"),
        ({"holder": "h", "ttl_s": 60, "filter": {"min_cpu_cores": -2}}, "min_cpu_cores"),
        ({"holder": "h", "ttl_s": 60, "agent_id": a, "colour": "red"}, "colour"),
    ]
    wrong: list[str] = []
    async with client_for() as client:
        for body, name in cases:
            response = await client.post(CLAIMS, json=body)
            if response.status_code != 400 or name not in response.json()["detail"]:
                wrong.append(f"{body}: {response.status_code} {response.text}")
        text = await client.post(
            CLAIMS, content=b"{not json", headers={"content-type": "application/json"}
        )
        renew = await client.post(f"{CLAIMS}/{uuid.uuid4()}/renew", json={"ttl_s": 0})
        bad_id = await client.get(f"{CLAIMS}/zzz")
    assert not wrong, "\n".join(wrong)
    assert text.status_code == 400
    assert renew.status_code == 400
    assert bad_id.status_code == 400


async def test_unknown_agent_is_404_and_unfitting_claims_409(conn, client_for) -> None:
    agent = seed_agent(
        conn, cpu_cores=8, mem_total_gb=64, mem_available_gb=32, gpus=(GpuSeed(24, 10),)
    )
    offline = seed_agent(conn, hostname="off", status="offline", gpus=(GpuSeed(24, 24),))
    base = {"holder": "h", "ttl_s": 60}
    async with client_for() as client:
        unknown = await client.post(CLAIMS, json={**base, "agent_id": str(uuid.uuid4())})
        vram = await client.post(CLAIMS, json={**base, "agent_id": str(agent), "vram_gb": 11})
        cores = await client.post(CLAIMS, json={**base, "agent_id": str(agent), "cpu_cores": 9})
        mem = await client.post(CLAIMS, json={**base, "agent_id": str(agent), "mem_gb": 33})
        gone = await client.post(CLAIMS, json={**base, "agent_id": str(offline)})
        no_gpu = await client.post(CLAIMS, json={**base, "agent_id": str(agent), "gpus": [7]})
    assert unknown.status_code == 404
    assert [r.status_code for r in (vram, cores, mem, gone, no_gpu)] == [409] * 5
    assert "most claimable on one GPU: 10 GiB" in vram.json()["detail"]
    assert "9 cores asked, 8 claimable" in cores.json()["detail"]
    assert "33 GiB of memory asked" in mem.json()["detail"]
    assert "is offline" in gone.json()["detail"]
    assert "no GPU 7" in no_gpu.json()["detail"]


async def test_renew_release_and_expiry_without_a_sweeper(conn, client_for) -> None:
    agent = seed_agent(conn, gpus=(GpuSeed(24, 24),))
    ask = {"holder": "h", "ttl_s": 60, "agent_id": str(agent), "vram_gb": 20}
    # cleanup every hour: nothing but the expiry time itself frees the first claim
    async with client_for(claims_cleanup_interval_s=3600) as client:
        first = (await client.post(CLAIMS, json=ask)).json()
        blocked = await client.post(CLAIMS, json=ask)
        renewed = await client.post(f"{CLAIMS}/{first['claim_id']}/renew", json={"ttl_s": 600})
        conn.execute(
            "UPDATE claims SET expires_at = now() - interval '1 s' WHERE claim_id = %s",
            (first["claim_id"],),
        )
        after_expiry = await client.post(CLAIMS, json=ask)
        gone = await client.get(f"{CLAIMS}/{first['claim_id']}")
        late_renew = await client.post(f"{CLAIMS}/{first['claim_id']}/renew", json={"ttl_s": 60})
        second = after_expiry.json()["claim_id"]
        released = await client.delete(f"{CLAIMS}/{second}")
        again = await client.delete(f"{CLAIMS}/{second}")
        unknown = await client.delete(f"{CLAIMS}/{uuid.uuid4()}")
        listed = (await client.get(CLAIMS)).json()
        third = await client.post(CLAIMS, json=ask)
    assert blocked.status_code == 409
    assert renewed.status_code == 200
    assert renewed.json()["expires_at"] > first["expires_at"]
    assert after_expiry.status_code == 201
    assert gone.status_code == 404
    assert "has ended" in gone.json()["detail"]
    assert late_renew.status_code == 409
    assert [released.status_code, again.status_code, unknown.status_code] == [204] * 3
    assert listed["count"] == 0
    assert third.status_code == 201
    assert _reasons(conn, agent) == [
        "claim_created",
        "claim_renewed",
        "claim_created",
        "claim_released",
        "claim_created",
    ]


async def test_cleanup_records_expiry_once_and_purges(db_url: str, conn) -> None:
    agent = seed_agent(conn, gpus=(GpuSeed(24, 24),))
    settings = DatabaseSettings(url=db_url, pool_min_size=1, pool_max_size=2)
    async with store.Database(settings) as db:
        async with db.connection() as c:
            outcome = await store.place_claim(
                c, agent_id=agent, holder="h", ask=store.ClaimAsk(cpu_cores=1), ttl_s=60
            )
        assert isinstance(outcome.result, store.ClaimRecord)
        conn.execute("UPDATE claims SET expires_at = now() - interval '1 s'")
        follower = store.HoldingsFollower(db, store.Holdings(), store.EventFeed(db), keep_s=0)
        assert await follower.cleanup() == 1
        assert await follower.cleanup() == 0
    assert _reasons(conn, agent) == ["claim_created", "claim_expired"]
    assert conn.execute("SELECT count(*) FROM claims").fetchone() == (0,)


async def test_cordons_take_agents_and_gpus_out_and_survive_restarts(conn, client_for) -> None:
    agent = seed_agent(conn, hostname="maint", gpus=(GpuSeed(24, 24), GpuSeed(24, 20)))
    other = seed_agent(conn, hostname="other", gpus=(GpuSeed(24, 8),))
    cordon = f"/api/v1/agents/{agent}/cordon"
    gpu0 = f"/api/v1/agents/{agent}/gpus/{_gpu_uuid(agent, 0)}/cordon"
    body = {"reason": "fan replacement", "by": "ops@site"}
    ask = {"holder": "h", "ttl_s": 60}
    async with client_for() as client:
        held = await client.post(
            CLAIMS, json={**ask, "agent_id": str(agent), "gpus": [1], "vram_gb": 20}
        )
        made = await client.post(cordon, json=body)
        repeat = await client.post(cordon, json={**body, "reason": "still the fan"})
        refused = await client.post(CLAIMS, json={**ask, "agent_id": str(agent)})
        listed = (await client.get(CAP)).json()
        by_filter = await client.post(CLAIMS, json={**ask, "filter": {"min_gpu_vram_gb": 16}})
        cordons = (await client.get("/api/v1/cordons")).json()
        still_held = (await client.get(f"{CLAIMS}/{held.json()['claim_id']}")).status_code
    assert made.status_code == 201
    assert made.json()["by"] == "ops@site"
    assert repeat.status_code == 200
    assert repeat.json()["at"] == made.json()["at"]
    assert refused.status_code == 409
    assert "cordoned by ops@site: still the fan" in refused.json()["detail"]
    assert [r["hostname"] for r in listed["items"]] == ["other"]
    assert by_filter.status_code == 409
    assert [(k["hostname"], k["gpu_uuid"], k["reason"]) for k in cordons["items"]] == [
        ("maint", None, "still the fan")
    ]
    assert still_held == 200  # claims already there stay
    # a fresh process (a restart) still knows the cordon; then lift it and cordon one GPU
    async with client_for() as client:
        still = (await client.get(CAP)).json()
        # a heartbeat rewrites the registry row; the cordon is not part of it
        conn.execute(
            "UPDATE agent_registry SET cpu_available_cores = 15, last_heartbeat_at ="
            " clock_timestamp(), updated_at = clock_timestamp() WHERE agent_id = %s",
            (agent,),
        )
        beaten = await _poll(
            client, f"/api/v1/agents/{agent}", {}, lambda b: b["cpu_available_cores"] == 15
        )
        after_beat = (await client.get(CAP)).json()
        lifted = await client.delete(cordon)
        lifted_again = await client.delete(cordon)
        gpu = await client.post(gpu0, json=body)
        wrong_gpu = await client.post(f"/api/v1/agents/{agent}/gpus/GPU-nope/cordon", json=body)
        on_gpu0 = await client.post(CLAIMS, json={**ask, "agent_id": str(agent), "gpus": [0]})
        by_filter = await client.post(CLAIMS, json={**ask, "filter": {"min_gpu_vram_gb": 16}})
        unknown = await client.post(f"/api/v1/agents/{uuid.uuid4()}/cordon", json=body)
        no_reason = await client.post(cordon, json={"by": "x"})
        gpu_lifted = await client.delete(gpu0)
    assert [r["hostname"] for r in still["items"]] == ["other"]
    assert beaten["schedulable"] is False
    assert beaten["cordon"]["reason"] == "still the fan"
    assert [r["hostname"] for r in after_beat["items"]] == ["other"]
    assert lifted.status_code == lifted_again.status_code == 204
    assert gpu.status_code == 201
    assert gpu.json()["gpu_uuid"] == _gpu_uuid(agent, 0)
    assert wrong_gpu.status_code == 404
    assert on_gpu0.status_code == 409
    assert "cordoned" in on_gpu0.json()["detail"]
    # GPU 1 is held by the first claim (24 of 24), GPU 0 cordoned: nothing left on "maint"
    assert by_filter.status_code == 409
    assert unknown.status_code == 404
    assert no_reason.status_code == 400
    assert gpu_lifted.status_code == 204
    assert _reasons(conn, agent) == ["claim_created", "cordon", "uncordon", "cordon", "uncordon"]
    assert _reasons(conn, other) == []


async def test_writes_need_a_write_token_when_tokens_are_configured(conn, client_for) -> None:
    agent = seed_agent(conn, gpus=(GpuSeed(24, 24),))
    ask = {"holder": "h", "ttl_s": 60, "agent_id": str(agent)}
    read, write = {"Authorization": "Bearer r3ad"}, {"Authorization": "Bearer wr1te"}
    async with client_for(auth_tokens=["r3ad"], write_tokens=["wr1te"]) as client:
        anonymous = await client.post(CLAIMS, json=ask)
        reader = await client.post(CLAIMS, json=ask, headers=read)
        cordon = await client.post(
            f"/api/v1/agents/{agent}/cordon", json={"reason": "x", "by": "y"}, headers=read
        )
        writer = await client.post(CLAIMS, json=ask, headers=write)
        listed = await client.get(CLAIMS, headers=read)
        listed_by_writer = await client.get(CLAIMS, headers=write)
        schema = (await client.get("/schema/openapi.json", headers=read)).json()
    assert anonymous.status_code == 401
    assert reader.status_code == 403
    assert "write token" in reader.json()["detail"]
    assert cordon.status_code == 403
    assert writer.status_code == 201
    assert listed.json()["count"] == listed_by_writer.json()["count"] == 1
    assert set(schema["components"]["securitySchemes"]) == {"read", "write"}
    assert schema["paths"]["/api/v1/claims"]["post"]["security"] == [{"write": []}]
    assert schema["security"] == [{"read": []}, {"write": []}]
    # read tokens alone: no change is possible, and the answer says why
    async with client_for(auth_tokens=["r3ad"]) as client:
        refused = await client.post(CLAIMS, json=ask, headers=read)
    assert refused.status_code == 403
    assert "api.write_tokens" in refused.json()["detail"]


async def _poll(client: Any, path: str, params: dict[str, Any], ok: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        body = (await client.get(path, params=params)).json()
        if ok(body):
            return body
        assert loop.time() < deadline, body
        await asyncio.sleep(0.05)


async def test_rows_show_observed_held_and_claimable_and_no_claims_changes_no_byte(
    conn, client_for
) -> None:
    agent = seed_agent(
        conn,
        hostname="gpu",
        cpu_cores=16,
        mem_total_gb=64,
        mem_available_gb=40,
        gpus=(GpuSeed(24, 24), GpuSeed(24, 24)),
    )
    seed_agent(conn, hostname="mid", gpus=(GpuSeed(24, 12),))
    paths = [
        (CAP, {}),
        (CAP, {"min_gpu_vram_gb": 10}),
        ("/api/v1/agents", {}),
        (f"/api/v1/agents/{agent}", {}),
        (f"/api/v1/agents/{agent}/capacity", {}),
    ]

    def stable(raw: bytes) -> bytes:  # ages and as_of move with the clock
        return re.sub(rb'"(sample_age_s|as_of)":[^,}]*', b"", raw)

    async with client_for() as client:
        before = [stable((await client.get(p, params=q)).content) for p, q in paths]
        claim = (
            await client.post(
                CLAIMS,
                json={
                    "holder": "h",
                    "ttl_s": 60,
                    "agent_id": str(agent),
                    "gpus": [0],
                    "vram_gb": 20,
                    "cpu_cores": 6,
                    "mem_gb": 30,
                },
            )
        ).json()
        held = (await client.get(CAP, params={"min_gpu_vram_gb": 10})).json()
        one = (await client.get(f"/api/v1/agents/{agent}/capacity")).json()
        # the job starts: its VRAM shows in a heartbeat, and is not taken off twice
        conn.execute(
            "UPDATE agent_registry SET resource_metrics = jsonb_set(resource_metrics,"
            " '{gpus,0,vram_free_gb}', '3'::jsonb), updated_at = clock_timestamp()"
            " WHERE agent_id = %s",
            (agent,),
        )
        running = await _poll(
            client,
            f"/api/v1/agents/{agent}/capacity",
            {},
            lambda b: b["gpus"][0]["vram_free_gb"] == 3,
        )
        await client.delete(f"{CLAIMS}/{claim['claim_id']}")
        conn.execute(
            "UPDATE agent_registry SET resource_metrics = jsonb_set(resource_metrics,"
            " '{gpus,0,vram_free_gb}', '24'::jsonb), updated_at = clock_timestamp()"
            " WHERE agent_id = %s",
            (agent,),
        )
        await _poll(  # the index (available-capacity) has read the heartbeat
            client, CAP, {}, lambda b: b["items"][0]["gpus"][0]["vram_free_gb"] == 24
        )
        after = [stable((await client.get(p, params=q)).content) for p, q in paths]
    for (path, _), a, b in zip(paths, after, before, strict=True):
        at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        # released: every answer is again what it was, byte for byte
        assert a == b, (path, b[at - 120 : at + 60], a[at - 120 : at + 60])
    assert b"claimable" not in b"".join(before)
    row = next(r for r in held["items"] if r["hostname"] == "gpu")
    assert [r["hostname"] for r in held["items"]] == ["gpu", "mid"]
    assert row["matching_gpus"] == [1]  # GPU 0: min(24 free, 24 - 20 held) = 4 < 10
    assert row["gpus"][0]["vram_free_gb"] == 24.0  # observed, beside held and claimable
    assert (row["gpus"][0]["vram_held_gb"], row["gpus"][0]["vram_claimable_gb"]) == (20.0, 4.0)
    assert (row["cpu_available_cores"], row["cpu_held_cores"], row["cpu_claimable_cores"]) == (
        16,
        6,
        10,
    )
    assert (row["mem_available_gb"], row["mem_held_gb"], row["mem_claimable_gb"]) == (40, 30, 34)
    assert row["schedulable"] is True
    assert row["claims"] == 1
    assert one["gpus"][0]["vram_claimable_gb"] == 4.0
    assert running["gpus"][0]["vram_claimable_gb"] == 3.0  # min(3 observed, 4 unheld)
    assert running["gpu_vram_claimable_gb"] == 24.0


async def test_claims_and_cordons_are_events_on_the_stream(conn, db_url: str) -> None:
    agent = seed_agent(conn, gpus=(GpuSeed(24, 24),))
    app = create_app(api_settings(db_url))
    async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        async with client.stream("GET", "/api/v1/events/stream") as stream:
            lines = stream.aiter_lines()
            async for line in lines:  # open once its greeting comment arrives
                if line.startswith(":"):
                    break
            made = await client.post(
                CLAIMS, json={"holder": "h", "ttl_s": 60, "agent_id": str(agent)}
            )
            await client.post(f"/api/v1/agents/{agent}/cordon", json={"reason": "r", "by": "b"})

            async def names() -> list[str]:
                seen: list[str] = []
                async for line in lines:
                    if line.startswith("event:"):
                        seen.append(line.split(":", 1)[1].strip())
                    if len(seen) == 2:
                        return seen
                return seen

            seen = await asyncio.wait_for(names(), 10)
        listed = (await client.get("/api/v1/events", params={"agent_id": str(agent)})).json()
    assert made.status_code == 201
    assert seen == ["claim", "cordon"]
    reasons = [e["reason"] for e in listed["items"]]
    assert reasons[-2:] == ["claim_created", "cordon"]
    assert listed["items"][-2]["detail"]["claim_id"] == made.json()["claim_id"]
    assert listed["items"][-1]["detail"]["by"] == "b"
    assert "detail" not in listed["items"][0]  # status events are as they were


async def test_metrics_show_claimable_held_holders_and_cordons(conn, client_for) -> None:
    agent = seed_agent(conn, hostname="a", pool="render", cpu_cores=16, gpus=(GpuSeed(24, 24),))
    other = seed_agent(conn, hostname="b", pool="render", cpu_cores=8, gpus=(GpuSeed(24, 10),))
    rtx = "NVIDIA GeForce RTX 4090"
    async with client_for() as client:
        for n in range(3):
            made = await client.post(
                CLAIMS,
                json={
                    "holder": "farm" if n else "solo",
                    "ttl_s": 60,
                    "agent_id": str(agent),
                    "gpus": [0],
                    "vram_gb": 5,
                    "cpu_cores": 2,
                },
            )
            assert made.status_code == 201
        await client.post(f"/api/v1/agents/{other}/cordon", json={"reason": "r", "by": "b"})
        text = await _poll_text(client, 'fleetpulse_cordons{pool="render",kind="agent"} 1')
    gib = 1024.0**3
    assert sample(text, "fleetpulse_capacity_gpu_vram_held_bytes", pool="render", gpu_type=rtx) == (
        15 * gib
    )
    # a: min(24, 24 - 15) = 9; b is cordoned: nothing to claim there
    assert sample(
        text, "fleetpulse_capacity_gpu_vram_claimable_bytes", pool="render", gpu_type=rtx
    ) == (9 * gib)
    assert sample(text, "fleetpulse_capacity_gpu_vram_free_bytes", pool="render", gpu_type=rtx) == (
        34 * gib
    )
    assert sample(text, "fleetpulse_capacity_cpu_held_cores", pool="render") == 6
    assert sample(text, "fleetpulse_capacity_cpu_claimable_cores", pool="render") == 10
    assert sample(text, "fleetpulse_claims_active", holder="farm") == 2
    assert sample(text, "fleetpulse_claims_active", holder="solo") == 1


async def _poll_text(client: Any, needle: str) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        text: str = (await client.get("/metrics")).text
        if needle in text:
            return text
        assert loop.time() < deadline, text[-2000:]
        await asyncio.sleep(0.05)


async def test_cli_cordons_by_hostname_lists_claims_and_status_shows_both(
    conn, db_url: str, capsys
) -> None:
    agent = seed_agent(conn, hostname="ws-cli", gpus=(GpuSeed(24, 24), GpuSeed(24, 24)))
    seed_agent(conn, hostname="ws-other")
    app = create_app(api_settings(db_url, write_tokens=["w"]))
    settings = Settings()
    async with live_server(app) as base:
        call = asyncio.to_thread
        plain = io.StringIO()
        assert await call(run_status, settings, api_url=base, token="w", out=plain) == 0
        made = await call(
            httpx.post,
            f"{base}/api/v1/claims",
            json={
                "holder": "render-farm",
                "ttl_s": 600,
                "agent_id": str(agent),
                "gpus": [0],
                "vram_gb": 16,
                "cpu_cores": 2,
            },
            headers={"Authorization": "Bearer w"},
        )
        made.raise_for_status()
        out = io.StringIO()
        cordoned = await call(
            run_cordon,
            settings,
            target="ws-cli",
            gpu=f"GPU-{agent}-1",
            reason="fan noise",
            by="ops",
            api_url=base,
            token="w",
            out=out,
        )
        denied = await call(
            run_cordon,
            settings,
            target="ws-cli",
            gpu=None,
            reason="x",
            by=None,
            api_url=base,
            token=None,
        )
        unknown = await call(
            run_uncordon, settings, target="no-such-host", gpu=None, api_url=base, token="w"
        )
        listed = io.StringIO()
        assert (
            await call(
                run_claims,
                settings,
                holder=None,
                agent="ws-cli",
                api_url=base,
                token="w",
                out=listed,
            )
            == 0
        )
        status = io.StringIO()
        assert await call(run_status, settings, api_url=base, token="w", out=status) == 0
        lifted = await call(
            run_uncordon,
            settings,
            target=str(agent),
            gpu=f"GPU-{agent}-1",
            api_url=base,
            token="w",
            out=out,
        )
    err = capsys.readouterr().err
    assert cordoned == 0
    assert f"cordoned GPU GPU-{agent}-1 of ws-cli" in out.getvalue()
    assert denied == 1
    assert "401" in err
    assert "pass --token" in err
    assert unknown == 1
    assert "no agent with hostname 'no-such-host'" in err
    assert "render-farm" in listed.getvalue()
    assert "0: 16" in listed.getvalue()
    assert "1 active claim(s)" in listed.getvalue()
    assert "cordoned" not in plain.getvalue()  # nothing held: the table as it was
    assert "cordoned" in status.getvalue()
    assert "GPU0 16, 2 cores" in status.getvalue()
    assert "GPU1 by ops: fan noise" in status.getvalue()
    assert lifted == 0
