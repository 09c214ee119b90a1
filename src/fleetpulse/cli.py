"""``fleetpulse ...``: parse arguments, load settings once, hand over. Wiring only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from fleetpulse import __version__
from fleetpulse.agent.profiles import PROFILES
from fleetpulse.config import Settings, load_settings
from fleetpulse.errors import ConfigError, FleetpulseError, ServiceUnavailable
from fleetpulse.logs import LOG_FORMATS, configure_logging

__all__ = ["build_parser", "main"]

Handler = Callable[[Settings, argparse.Namespace], int]

# `pip install fleetpulse` is the agent (and simulate); these commands need an extra.
EXTRAS = {
    "ingest": "server",
    "api": "server",
    "status": "server",
    "capacity": "server",
    "events": "server",
    "up": "server",
    "db": "server",
    "admin": "server",
    "export": "analysis",
}


def _missing_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """The one-line hint for a command run without its extra, if that is what happened."""
    extra = EXTRAS.get(command)
    if extra is None or (exc.name or "").split(".")[0] == "fleetpulse":
        return None
    return (
        f"fleetpulse {command} needs the {extra} extra (missing module {exc.name}): "
        f"pip install 'fleetpulse[{extra}]'"
    )


def _agent(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.agent import run_agent

    return run_agent(settings)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.agent import run_simulate

    return run_simulate(
        settings,
        agents=args.agents,
        profile=args.profile,
        interval_s=args.interval,
        seed=args.seed,
        duration_s=args.duration,
    )


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.ingest import run_ingest

    return run_ingest(settings)


def _agent_credentials(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.ingest import create_agent_credentials

    return create_agent_credentials(
        settings, name=args.name, agent_id=args.agent_id, password=args.password
    )


def _api(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.api import run_api

    return run_api(settings)


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.console import run_status

    return run_status(settings, api_url=args.api_url, token=args.token)


def _cordon(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.console.claims import run_cordon

    return run_cordon(
        settings,
        target=args.target,
        gpu=args.gpu,
        reason=args.reason,
        by=args.by,
        api_url=args.api_url,
        token=args.token,
    )


def _uncordon(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.console.claims import run_uncordon

    return run_uncordon(
        settings, target=args.target, gpu=args.gpu, api_url=args.api_url, token=args.token
    )


def _claims(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.console.claims import run_claims

    return run_claims(
        settings, holder=args.holder, agent=args.agent, api_url=args.api_url, token=args.token
    )


def _capacity(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.console import CapacityQuery, run_capacity

    query = CapacityQuery(
        min_gpu_vram_gb=args.min_gpu_vram,
        min_cpu_cores=args.min_cores,
        min_mem_gb=args.min_mem,
        min_gpu_count=args.min_gpus,
        gpu_type=args.gpu_type,
        pool=args.pool,
        max_sample_age_s=args.max_age,
        min_reliability=args.min_reliability,
        limit=args.limit,
    )
    return run_capacity(settings, query, api_url=args.api_url, token=args.token, as_json=args.json)


def _events(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.console import run_events

    since = args.since or datetime.now(UTC) - timedelta(hours=1)
    return run_events(
        settings,
        api_url=args.api_url,
        token=args.token,
        agent_id=args.agent,
        since=since,
        follow=args.follow,
        as_json=args.json,
    )


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.up import run_up

    return run_up(
        settings,
        config_path=args.config,
        simulated_agents=args.agents,
        local_agent=not args.no_local_agent,
        interval_s=args.interval,
    )


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse.analysis import run_export

    return run_export(settings, since=args.since, until=args.until, out=args.out)


def _db(settings: Settings, args: argparse.Namespace) -> int:
    from fleetpulse import store

    url = settings.database.url
    if args.action == "upgrade":
        created = store.ensure_database(url)
        store.upgrade(url, args.revision or "head")
        note = " (database created)" if created else ""
        print(f"database at revision {store.current_revision(url)}{note}")
    elif args.action == "downgrade":
        store.downgrade(url, args.revision or "base")
        print(f"database at revision {store.current_revision(url) or 'base'}")
    else:
        print(f"current {store.current_revision(url) or 'base'}, head {store.head_revision()}")
    return 0


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {text!r}") from None


def _non_negative(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _agent_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an agent id (UUID): {text!r}") from None


def _quiet_connect_retries(record: logging.LogRecord) -> bool:
    """aiormq logs every refused connect at ERROR; the agent and ingest say once per outage,
    with the URL, what failed, so those lines would only bury everything else."""
    return not str(record.msg).startswith("error when creating transport")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetpulse", description="Capacity and liveness for fleets of GPU workstations."
    )
    parser.add_argument("--version", action="version", version=f"fleetpulse {__version__}")
    parser.add_argument(
        "--config", help="TOML settings file (default: ./fleetpulse.toml if present)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("FLEETPULSE_LOG_FORMAT") or "text",
        help="text, or json: one object a line (default: $FLEETPULSE_LOG_FORMAT, else text)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    command("agent", _agent, "run the desktop agent on this machine")
    simulate = command("simulate", _simulate, "run many simulated agents in one process")
    simulate.add_argument("--agents", type=int, default=3, help="how many agents (default 3)")
    simulate.add_argument(
        "--profile",
        choices=PROFILES,
        default="mixed",
        help="resource profile of the fleet (default mixed)",
    )
    simulate.add_argument("--interval", type=float, default=None, help="heartbeat interval in s")
    simulate.add_argument("--seed", type=int, default=0, help="random seed of the mixed fleet")
    simulate.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    command("ingest", _ingest, "consume heartbeats into TimescaleDB and detect silence")
    command("api", _api, "serve the capacity API and Prometheus metrics")

    def api_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--api-url", default=None, help="API base URL (default from settings)")
        sub.add_argument(
            "--token",
            default=None,
            help="bearer token, if the API requires one (default: the first of api.auth_tokens)",
        )

    api_options(command("status", _status, "print the fleet as a table"))
    cordon = command("cordon", _cordon, "take an agent or one GPU out of the offer")
    uncordon = command("uncordon", _uncordon, "put a cordoned agent or GPU back in the offer")
    for sub in (cordon, uncordon):
        sub.add_argument("target", metavar="HOST|AGENT_ID", help="hostname or agent id")
        sub.add_argument("--gpu", default=None, metavar="UUID", help="only this GPU")
    cordon.add_argument("--reason", required=True, help="why (shown beside the agent)")
    cordon.add_argument("--by", default=None, help="who (default: user@this host)")
    claims = command("claims", _claims, "list active claims")
    claims.add_argument("--holder", default=None, help="only this holder's claims")
    claims.add_argument("--agent", default=None, help="only claims on this host or agent id")
    for sub in (cordon, uncordon, claims):
        api_options(sub)
    capacity = command("capacity", _capacity, "online machines that can take a job now")
    api_options(capacity)
    capacity.add_argument(
        "--min-gpu-vram", type=_non_negative(float), metavar="GB", help="free VRAM on one GPU"
    )
    capacity.add_argument(
        "--min-gpus", type=_non_negative(int), metavar="N", help="GPUs that each qualify"
    )
    capacity.add_argument(
        "--min-cores", type=_non_negative(int), metavar="N", help="available cores"
    )
    capacity.add_argument(
        "--min-mem", type=_non_negative(float), metavar="GB", help="available memory"
    )
    capacity.add_argument("--gpu-type", metavar="T", help="GPU name, e.g. 'NVIDIA L4'")
    capacity.add_argument("--pool", metavar="P", help="only this pool")
    capacity.add_argument(
        "--max-age", type=_non_negative(float), metavar="S", help="sample at most S s old"
    )
    capacity.add_argument(
        "--min-reliability",
        type=_non_negative(float),
        metavar="R",
        help="share online over 30 days, 0-1",
    )
    capacity.add_argument(
        "--limit", type=_non_negative(int), metavar="N", help="at most N (API default 100)"
    )
    capacity.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
    events = command(
        "events", _events, "status transitions (online/offline), optionally as they happen"
    )
    api_options(events)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
    events.add_argument("--agent", type=_agent_id, metavar="ID", help="only this agent's")
    events.add_argument(
        "--since", type=_timestamp, default=None, help="ISO 8601 time (default: an hour ago)"
    )
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    up = command("up", _up, "run the whole system on this machine")
    up.add_argument("--agents", type=int, default=6, help="simulated agents (default 6)")
    up.add_argument("--interval", type=float, default=5.0, help="heartbeat interval in s")
    up.add_argument("--no-local-agent", action="store_true", help="do not run a real agent")
    export = command("export", _export, "write agent samples to a Parquet file")
    export.add_argument("--since", type=_timestamp, required=True)
    export.add_argument("--until", type=_timestamp, default=None)
    export.add_argument("--out", required=True, help="output .parquet path")
    db = command("db", _db, "schema migrations")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", default=None)
    admin = commands.add_parser("admin", help="administration").add_subparsers(
        dest="admin_command", required=True, metavar="ADMIN"
    )
    creds = admin.add_parser(
        "agent-credentials", help="create a RabbitMQ user that may only publish heartbeats"
    )
    creds.set_defaults(handler=_agent_credentials)
    creds.add_argument("name", help="the RabbitMQ user name")
    creds.add_argument(
        "--agent-id", default=None, help="the one agent it may publish for (default: a new id)"
    )
    creds.add_argument("--password", default=None, help="default: generated and printed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if logging.getLogger().level > logging.DEBUG:
        # Libraries' per-request and per-migration chatter, only when debugging.
        for noisy in ("alembic", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        connection_log = logging.getLogger("aiormq.connection")
        if _quiet_connect_retries not in connection_log.filters:
            connection_log.addFilter(_quiet_connect_retries)
    try:
        settings = load_settings(args.config)
        handler: Handler = args.handler
        return handler(settings, args)
    except ConfigError as exc:
        print(f"fleetpulse: config error: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailable as exc:
        print(f"fleetpulse: {exc}", file=sys.stderr)
        return 1
    except FleetpulseError as exc:
        print(f"fleetpulse: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `fleetpulse events | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as exc:
        hint = _missing_extra(args.command, exc)
        if hint is None:
            raise
        print(f"fleetpulse: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
