"""Faults on a real three-node RabbitMQ cluster (scripts/cluster.sh; `make test-cluster`).

Three nodes, two ingest processes, two API processes, 300 simulated agents (three
simulators, one pinned to each node) and three real agent processes (each on a random
node), all with ``[amqp] urls`` naming the three nodes, heartbeating every 2 s:

1. kill -9 of the node leading ``fleetpulse.ingest``: agents and ingest move to the other
   two nodes, the queue elects a new leader, samples flow again within seconds;
2. kill -9 of a second node: the last one pauses (pause_minority; the queue has no
   majority), agents spool; then both nodes restart and everything spooled arrives;
3. kill -9 of the ingest process acting as silence detector: the other keeps consuming
   and takes the detector lead.

Afterwards every heartbeat a broker confirmed is stored exactly once, nobody went offline
(except the real agents' own goodbyes at the end), and both API processes give the same
capacity answers. The figures go to stdout and to ``.state/cluster-faults.json``.

Network partitions are not played here: see docs/scaling.md ("What is not tested").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from fleetpulse.agent.simulate import Simulator
from fleetpulse.agent.spool import SqliteSpool
from fleetpulse.config import AgentSettings, AmqpSettings, Settings
from fleetpulse.messages import DEAD_LETTER_QUEUE, INGEST_QUEUE
from tests.cluster.harness import (
    NODES,
    ROOT,
    Cluster,
    Fleet,
    RecordingSpool,
    metric,
    wait_for,
)

pytestmark = [pytest.mark.timeout(600)]

INTERVAL_S = 2.0
SIMULATORS = 3
AGENTS_PER_SIMULATOR = 100
REAL_AGENTS = 3
CONSUME_BAR_S = 10.0  # after the leader's node dies, ingest consumes again within this
RECOVERY_WAIT_S = 90.0  # how long to wait for every agent to be heard again (a loaded box)
OUTAGE_S = 5.0  # both nodes down this long before they restart
QUERIES = [
    {},
    {"min_gpu_vram_gb": 8},
    {"min_cpu_cores": 8, "min_mem_gb": 16},
    {"min_gpu_count": 2},
    {"pool": "cpu", "limit": 20},
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    Cluster.script("up")  # idempotent: `make test-cluster` started it already
    c = Cluster()
    wait_for(lambda: c.alive() == list(NODES), 60, "three running nodes")
    yield c
    # leave every node running for the next run, whatever the test did to them
    dead = [n for n in NODES if not c.running(n)]
    if dead:
        c.start(*dead)
    c.close()


@pytest.fixture
def vhost(cluster: Cluster) -> Iterator[str]:
    name = f"fleetpulse_cluster_{uuid.uuid4().hex[:8]}"
    cluster.create_vhost(name)
    yield name
    with contextlib.suppress(httpx.HTTPError):
        cluster.delete_vhost(name)


class Simulators:
    """Three simulators in a thread of their own (one event loop), each pinned to a node."""

    def __init__(self, urls: list[str]) -> None:
        settings = Settings(
            amqp=AmqpSettings(urls=urls),
            agent=AgentSettings(
                heartbeat_interval_s=INTERVAL_S,
                reconnect_initial_s=0.2,
                reconnect_max_s=2.0,
                connect_timeout_s=3.0,
                confirm_timeout_s=5.0,
            ),
        )
        self.sims = [
            Simulator(settings, agents=AGENTS_PER_SIMULATOR, seed=i, interval_s=INTERVAL_S)
            for i in range(SIMULATORS)
        ]
        self.spools = [RecordingSpool() for _ in self.sims]
        for sim, spool in zip(self.sims, self.spools, strict=True):
            sim.spool = spool
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.undelivered = -1
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self._run())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.started.set()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for node, sim in enumerate(self.sims):
                await stack.enter_async_context(sim)
                assert sim.publisher is not None
                sim.publisher.brokers.index = node  # not yet connected: start on node i+1
            tasks = [asyncio.create_task(sim.run()) for sim in self.sims]
            self.started.set()
            await self.stop.wait()
            for task in tasks:  # no goodbyes: the registry must stand still afterwards
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            flushed = [
                await sim.publisher.flush(60.0) for sim in self.sims if sim.publisher is not None
            ]
            self.undelivered = sum(s.depth for s in self.spools)
            assert all(flushed), f"{self.undelivered} heartbeats never confirmed"

    def start(self) -> None:
        self.thread.start()
        self.started.wait(30)
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(90)
        assert not self.thread.is_alive(), "simulators did not stop"
        if self.error is not None:
            raise self.error

    @property
    def agent_ids(self) -> set[str]:
        return {str(i.agent_id) for sim in self.sims for i in sim.identities}

    @property
    def emitted(self) -> int:
        return sum(sim.samples_total for sim in self.sims)

    @property
    def confirmed(self) -> set[tuple[str, int]]:
        return set().union(*(s.confirmed for s in self.spools))

    @property
    def moves(self) -> int:
        return sum(sim.publisher.brokers.moves for sim in self.sims if sim.publisher is not None)


def scalar(conn: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def heard_since(conn: psycopg.Connection[Any], moment: datetime) -> int:
    """How many agents have a stored sample taken after ``moment``."""
    return int(
        scalar(
            conn,
            "SELECT count(DISTINCT agent_id) FROM agent_samples WHERE sampled_at > %s",
            moment,
        )
    )


def first_received_after(conn: psycopg.Connection[Any], moment: datetime) -> float | None:
    """Seconds from ``moment`` to ingest receiving the first sample taken after it."""
    first = scalar(conn, "SELECT min(received_at) FROM agent_samples WHERE sampled_at > %s", moment)
    return None if first is None else (first - moment).total_seconds()


def capacity(port: int, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    body = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/agents/available-capacity", params=params, timeout=5
    ).json()
    return [
        (i["agent_id"], i["gpu_vram_available_gb"], i["cpu_available_cores"], i["matching_gpus"])
        for i in body["items"]
    ]


def test_node_and_ingest_faults_lose_nothing_and_mark_nobody_offline(
    cluster: Cluster, vhost: str, db_url: str, tmp_path: Path
) -> None:
    urls = [cluster.amqp_url(n, vhost) for n in NODES]
    env = {
        **os.environ,
        "FLEETPULSE_AMQP_URLS": ",".join(urls),
        "FLEETPULSE_AMQP_MANAGEMENT_URL": f"http://guest:guest@127.0.0.1:{15700 + 1}",
        "FLEETPULSE_DATABASE_URL": db_url,
        "FLEETPULSE_INGEST_OFFLINE_CHECK_INTERVAL_S": "1",
        "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": str(INTERVAL_S),
        "FLEETPULSE_AGENT_RECONNECT_INITIAL_S": "0.2",
        "FLEETPULSE_AGENT_RECONNECT_MAX_S": "2",
        "FLEETPULSE_AGENT_CONFIRM_TIMEOUT_S": "5",
        "FLEETPULSE_AGENT_GOODBYE_TIMEOUT_S": "5",
        "FLEETPULSE_AGENT_GPU_NVML_MODULE": "fake_nvml",
    }
    fleet = Fleet(env, tmp_path)
    sims = Simulators(urls)
    figures: dict[str, Any] = {"nodes": len(NODES), "interval_s": INTERVAL_S}
    db = psycopg.connect(db_url, autocommit=True)
    try:
        ingests = [fleet.ingest("ingest-a"), fleet.ingest("ingest-b")]
        apis = [fleet.api("api-a"), fleet.api("api-b")]
        wait_for(lambda: cluster.queue(vhost, INGEST_QUEUE) is not None, 60, "ingest to declare")
        queue = wait_for(
            lambda: (
                (q := cluster.queue(vhost, INGEST_QUEUE)) and len(q.get("members", [])) == 3 and q
            ),
            30,
            "the ingest queue on three members",
        )
        assert queue["type"] == "quorum"
        dead_queue = cluster.queue(vhost, DEAD_LETTER_QUEUE)
        assert dead_queue is not None
        assert dead_queue["type"] == "quorum"
        assert len(dead_queue["members"]) == 3
        state_dirs = [tmp_path / f"agent-{i}" for i in range(REAL_AGENTS)]
        agents = [
            fleet.start(f"agent-{i}", ["agent"], FLEETPULSE_AGENT_STATE_DIR=str(d))
            for i, d in enumerate(state_dirs)
        ]
        sims.start()
        fleet_size = AGENTS_PER_SIMULATOR * SIMULATORS + REAL_AGENTS
        wait_for(
            lambda: (
                scalar(db, "SELECT count(*) FROM agent_registry WHERE status = 'online'")
                == fleet_size
            ),
            90,
            f"{fleet_size} agents online",
            every_s=0.5,
        )

        # 1. kill -9 of the node leading the ingest queue
        leader = wait_for(lambda: cluster.leader(vhost, INGEST_QUEUE), 10, "a leader")
        killed_at = datetime.now(UTC)
        cluster.kill(leader)
        t0 = time.monotonic()
        new_leader = wait_for(
            lambda: (n := cluster.leader(vhost, INGEST_QUEUE)) not in (None, leader) and n,
            CONSUME_BAR_S,
            "a new queue leader",
        )
        figures["kill_leader"] = {
            "node": leader,
            "new_leader": new_leader,
            "new_leader_s": round(time.monotonic() - t0, 2),
        }
        wait_for(lambda: heard_since(db, killed_at) == fleet_size, RECOVERY_WAIT_S, "every agent")
        figures["kill_leader"]["every_agent_heard_s"] = round(time.monotonic() - t0, 2)
        figures["kill_leader"]["first_consumed_s"] = round(
            first_received_after(db, killed_at) or -1, 2
        )

        # 2. kill -9 of another node: the last one pauses; then both come back
        second = new_leader
        cluster.kill(second)
        down_at = datetime.now(UTC)
        t0 = time.monotonic()
        survivor = next(n for n in NODES if n not in (leader, second))
        wait_for(lambda: not cluster.running(survivor), 30, "the survivor to pause")
        figures["kill_second"] = {
            "node": second,
            "survivor_paused_s": round(time.monotonic() - t0, 2),
        }
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))  # the outage itself
        restart_at = datetime.now(UTC)
        t1 = time.monotonic()
        cluster.start(leader, second)
        figures["kill_second"]["restart_s"] = round(time.monotonic() - t1, 2)
        wait_for(lambda: cluster.alive() == list(NODES), 60, "three nodes again")
        wait_for(
            lambda: heard_since(db, restart_at) == fleet_size,
            RECOVERY_WAIT_S,
            "every agent after the restart",
            every_s=0.25,
        )
        figures["kill_second"]["every_agent_heard_after_restart_s"] = round(
            time.monotonic() - t1, 2
        )
        figures["kill_second"]["first_consumed_after_restart_s"] = round(
            first_received_after(db, restart_at) or -1, 2
        )
        figures["kill_second"]["outage_s"] = round(
            (restart_at - down_at).total_seconds() + figures["kill_second"]["restart_s"], 2
        )
        assert all(p.alive() for p in ingests), fleet.tail()

        # 3. kill -9 of the ingest process acting as detector
        leaders = wait_for(
            lambda: [p for p in ingests if metric(p.port, "fleetpulse_detector_leader") == 1],
            15,
            "a detector leader",
        )
        acting = leaders[0]
        other = next(p for p in ingests if p is not acting)
        ingest_killed_at = datetime.now(UTC)
        t0 = time.monotonic()
        acting.popen.send_signal(signal.SIGKILL)
        acting.popen.wait(10)
        wait_for(
            lambda: metric(other.port, "fleetpulse_detector_leader") == 1,
            30,
            "the detector lead to move",
        )
        figures["kill_ingest"] = {"lead_moved_s": round(time.monotonic() - t0, 2)}
        wait_for(
            lambda: heard_since(db, ingest_killed_at) == fleet_size,
            RECOVERY_WAIT_S,
            "every agent through the other ingest",
        )
        figures["kill_ingest"]["every_agent_heard_s"] = round(time.monotonic() - t0, 2)

        # the end: simulators stop without goodbyes (the registry then stands still), real
        # agents stop with theirs; everything confirmed must be stored exactly once
        sims.finish()
        for agent in agents:
            assert fleet.stop(agent) == 0, fleet.tail()
        wait_for(
            lambda: (
                (q := cluster.queue(vhost, INGEST_QUEUE)) is not None and q.get("messages") == 0
            ),
            60,
            "an empty ingest queue",
            every_s=0.5,
        )
        confirmed = sims.confirmed
        rows = db.execute(
            "SELECT agent_id::text, seq FROM agent_samples WHERE agent_id::text = ANY(%s)",
            (sorted(sims.agent_ids),),
        ).fetchall()
        stored = {(a, s) for a, s in rows}
        duplicates_stored = len(rows) - len(stored)
        figures["simulated"] = {
            "agents": len(sims.agent_ids),
            "sent": sims.emitted,
            "confirmed": len(confirmed),
            "stored": len(rows),
            "duplicates_stored": duplicates_stored,
            "confirmed_not_stored": len(confirmed - stored),
            "stored_not_confirmed": len(stored - confirmed),
            "publisher_node_moves": sims.moves,
        }
        real = {"agents": REAL_AGENTS, "sent": 0, "stored": 0, "gaps": 0, "spooled_at_exit": 0}
        for state in state_dirs:
            agent_id = (state / "agent_id").read_text().strip()
            seqs = [
                r[0]
                for r in db.execute(
                    "SELECT seq FROM agent_samples WHERE agent_id = %s ORDER BY seq", (agent_id,)
                ).fetchall()
            ]
            spool = SqliteSpool(state / "spool.sqlite3")
            real["spooled_at_exit"] += spool.depth
            real["sent"] += spool.next_seq() - 1  # the last seq went to the goodbye
            spool.close()
            real["stored"] += len(seqs)
            real["gaps"] += len(set(range(max(seqs) + 1)) - set(seqs))
        figures["real"] = real
        figures["ingest_duplicates_seen"] = metric(
            other.port, "fleetpulse_ingest_messages_total", 'result="duplicate"'
        )
        figures["false_offline_events"] = int(
            scalar(
                db,
                "SELECT count(*) FROM agent_status_events"
                " WHERE to_status = 'offline' AND reason <> 'shutdown'",
            )
        )

        # both API processes give the same answers for the registry as it now stands
        def same_answers() -> bool:
            return all(capacity(apis[0].port, q) == capacity(apis[1].port, q) for q in QUERIES)

        wait_for(same_answers, 15, "both APIs to agree", every_s=0.5)
        answers = [capacity(apis[0].port, q) for q in QUERIES]
        figures["capacity_answers_compared"] = {
            json.dumps(q): len(a) for q, a in zip(QUERIES, answers, strict=True)
        }

        report = json.dumps(figures, indent=1, sort_keys=True)
        (ROOT / ".state").mkdir(exist_ok=True)
        (ROOT / ".state" / "cluster-faults.json").write_text(report + "\n")
        print("\ncluster faults:", report)

        assert figures["simulated"]["confirmed"] == sims.emitted
        assert confirmed == stored, "every confirmed sample stored, nothing else"
        assert duplicates_stored == 0
        assert real["gaps"] == 0
        assert real["spooled_at_exit"] == 0
        assert real["stored"] == real["sent"]
        assert figures["false_offline_events"] == 0
        assert len(answers[0]) == min(100, AGENTS_PER_SIMULATOR * SIMULATORS)
        assert 0 <= figures["kill_leader"]["first_consumed_s"] < CONSUME_BAR_S
        assert sims.moves >= 1  # the simulator on the killed node moved
    finally:
        if sims.thread.is_alive():
            with contextlib.suppress(Exception):
                sims.finish()
        fleet.stop_all()
        db.close()
