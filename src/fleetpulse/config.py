"""Settings: one TOML file plus ``FLEETPULSE_<SECTION>_<KEY>`` environment overrides.

Read once at the entry point (:func:`load_settings`) and passed down as typed, frozen
structs. A value that does not parse raises :class:`ConfigError` with one line naming
the setting, where it came from and the value. Secrets are masked in ``repr``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Final, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import msgspec

from fleetpulse.errors import ConfigError

__all__ = [
    "AgentSettings",
    "AmqpSettings",
    "ApiSettings",
    "DatabaseSettings",
    "IngestSettings",
    "Settings",
    "load_settings",
    "mask_url",
]

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
AmqpUrl = Annotated[str, msgspec.Meta(pattern="^amqps?://")]

DEFAULT_CONFIG_FILE: Final = "fleetpulse.toml"
_HOURS: Final = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"  # HH:MM-HH:MM, local time


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and error lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class AmqpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """Broker URL the agent publishes to and ingest consumes from."""
    urls: list[AmqpUrl] = []
    """Cluster nodes used instead of `url`: start on a random one, move to the next on loss."""
    management_url: str = "http://guest:guest@127.0.0.1:15672"
    """RabbitMQ management API, used by `fleetpulse admin agent-credentials`."""

    def broker_urls(self) -> list[str]:
        """The broker URLs to use: ``urls`` when given, else the single ``url``."""
        return list(self.urls) if self.urls else [self.url]

    def __repr__(self) -> str:
        urls = f", urls={[mask_url(u) for u in self.urls]!r}" if self.urls else ""
        return (
            f"AmqpSettings(url={mask_url(self.url)!r}{urls}, "
            f"management_url={mask_url(self.management_url)!r})"
        )


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = "postgresql://postgres@127.0.0.1:5432/fleetpulse"
    """PostgreSQL with TimescaleDB; `fleetpulse db upgrade` creates the database if missing."""
    pool_min_size: PositiveInt = 1
    """Connections the pool keeps open."""
    pool_max_size: PositiveInt = 10
    """Most connections the pool opens (at least `pool_min_size`)."""
    connect_timeout_s: Positive = 5.0
    """Give up a database connect after this long."""
    statement_timeout_s: Positive = 30.0
    """The server cancels any statement that runs longer; the batch is retried, unacked."""

    def __repr__(self) -> str:
        return (
            f"DatabaseSettings(url={mask_url(self.url)!r}, pool_min_size={self.pool_min_size}, "
            f"pool_max_size={self.pool_max_size}, connect_timeout_s={self.connect_timeout_s}, "
            f"statement_timeout_s={self.statement_timeout_s})"
        )


class AgentSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str | None = None
    """This agent's UUID; unset: generated once and kept in `state_dir`."""
    pool: str | None = None
    """Pool this agent reports; unset: ingest picks `default_gpu_pool` or `default_cpu_pool`."""
    hostname: str | None = None
    """Hostname to report; unset: the machine's."""
    state_dir: str = "~/.local/state/fleetpulse"
    """Where the agent keeps its id, its spool and its lock."""
    heartbeat_interval_s: Positive = 30.0
    """Seconds between heartbeats."""
    gpu_timeout_s: Positive = 2.0
    """A GPU reading slower than this is abandoned and the NVML child respawned."""
    gpu_respawn_initial_s: Positive = 0.5
    """First wait before respawning a failed NVML child (doubles per failure)."""
    gpu_respawn_max_s: Positive = 60.0
    """Longest wait between NVML child respawns."""
    gpu_nvml_module: str = "pynvml"
    """Module the NVML child imports (`fake_nvml` for scripted GPUs in tests)."""
    spool_max_bytes: PositiveInt = 64 * 1024 * 1024
    """Size bound of the on-disk spool; the oldest samples are dropped (and counted) past it."""
    reconnect_initial_s: Positive = 0.5
    """First backoff after losing the broker (capped exponential, full jitter)."""
    reconnect_max_s: Positive = 30.0
    """Longest backoff between broker reconnects."""
    connect_timeout_s: Positive = 10.0
    """Give up a broker connect after this long."""
    confirm_timeout_s: Positive = 10.0
    """A publisher confirm not back within this long drops the connection; the batch goes again."""
    goodbye_timeout_s: Positive = 2.0
    """On stop, how long to try to deliver the spool and the goodbye."""
    presence_source: Literal["auto", "logind", "x11", "windows", "macos", "none"] = "auto"
    """Where the user's idle time comes from; `auto`: logind, else X11 (Linux), the OS's own."""
    offer_idle_s: NonNegative = 0.0
    """Offer the machine only after the user has been idle this long (0: always)."""
    offer_exclusive_processes: list[str] = []
    """Process names that withhold the machine while they run (games, DCC tools, calls)."""
    offer_hours: Annotated[str, msgspec.Meta(pattern=_HOURS)] | None = None
    """Offer only within these local hours, `HH:MM-HH:MM` (may span midnight); unset: always."""
    gpu_xid_hold_s: NonNegative = 600.0
    """How long an XID error keeps a GPU degraded (or failed) after it was seen."""


class IngestSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    offline_after_s: Positive = 90.0
    """An agent not heard from for this long is marked offline."""
    offline_check_interval_s: Positive = 5.0
    """Seconds between silence sweeps."""
    prefetch: PositiveInt = 2000
    """Unacknowledged messages the broker may hand one ingest process."""
    batch_max_messages: PositiveInt = 1000
    """Most messages written in one transaction."""
    batch_max_age_s: Positive = 0.05
    """Longest a message waits for its batch to fill."""
    retry_initial_s: Positive = 0.2
    """First backoff after a failed write or sweep (capped exponential, jittered)."""
    retry_max_s: Positive = 10.0
    """Longest backoff between write or sweep retries."""
    require_user_id: bool = False
    """Dead-letter heartbeats that carry no broker-validated `user_id`."""
    default_gpu_pool: str = "gpu"
    """Pool of an agent that names none and has a GPU."""
    default_cpu_pool: str = "cpu"
    """Pool of an agent that names none and has no GPU."""
    retention_days: NonNegative = 30.0
    """Samples older than this are dropped; 0 keeps them forever."""
    retention_check_interval_s: Positive = 3600.0
    """Seconds between retention runs."""
    metrics_host: str = "127.0.0.1"
    """Address of ingest's Prometheus endpoint."""
    metrics_port: Port = 9101
    """Port of ingest's Prometheus endpoint (0: any free port)."""
    drain_timeout_s: Positive = 10.0
    """On stop, how long to finish the batches in hand before closing."""
    queue_depth_interval_s: Positive = 5.0
    """Seconds between reads of the queue depth for the metrics."""
    detector_enabled: bool = True
    """Whether this process may run the silence detector (one process acts at a time)."""
    sweep_limit: PositiveInt = 10_000
    """Most agents one sweep marks offline; the rest follow in the next sweep."""
    write_method: Literal["copy", "unnest"] = "copy"
    """Deprecated, still accepted: every batch is written with COPY; `unnest` is ignored."""
    commit_pipeline: PositiveInt = 2
    """Batches written concurrently by one ingest process."""
    max_unacked_bytes: PositiveInt = 128 * 1024 * 1024
    """Bytes of bodies held unsettled: at most this ÷ 72 KiB (the broker's limit) messages are
    taken unacked; past it held the consumer pauses until half is settled."""
    dead_letter_max_messages: PositiveInt = 100_000
    """`fleetpulse.dead` keeps at most this many messages; past it the oldest are dropped."""
    sample_max_behind_s: Positive = 86_400.0
    """A heartbeat's `sampled_at` this much before its receive time is still trusted (spool
    replays); older ones are stored at the receive time, flagged `clock_skewed`."""
    sample_max_ahead_s: Positive = 300.0
    """A heartbeat's `sampled_at` this much after its receive time is still trusted; later
    ones are stored at the receive time, flagged `clock_skewed`."""
    clock_skew_event_s: Positive = 60.0
    """An agent whose clock is off by more than this gets a `clock_skew` event."""
    dead_letter_max_bytes: PositiveInt = 256 * 1024 * 1024
    """`fleetpulse.dead` keeps at most this many bytes; past it the oldest are dropped."""


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Address the API listens on."""
    port: Port = 8000
    """Port the API listens on."""
    auth_tokens: list[str] = []
    """Bearer tokens accepted by the API (comma-separated in the environment); empty: no auth."""
    capacity_refresh_interval_s: NonNegative = 1.0
    """The capacity index takes registry changes in at most this often."""
    metrics_refresh_interval_s: Positive = 5.0
    """Seconds between snapshots behind the fleet gauges of `/metrics`."""
    metrics_per_agent_limit: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    """Most agents with their own series in `/metrics`."""
    history_max_points: PositiveInt = 10_000
    """Most buckets one history answer may hold."""
    history_max_range_s: Positive = 31 * 86_400.0
    """Longest time range one history request may cover."""
    registry_poll_interval_s: Positive = 5.0
    """The index and the event feed read the database at least this often without a notification."""
    registry_resync_interval_s: Positive = 300.0
    """Seconds between full reloads of the index (drops deleted agents)."""
    registry_overlap_s: NonNegative = 2.0
    """How far back each incremental read of the registry reaches, for late commits."""
    reliability_refresh_interval_s: Positive = 60.0
    """Seconds between recomputations of the 30-day reliability scores."""
    sse_keepalive_s: Positive = 15.0
    """An idle event stream gets a keep-alive comment this often."""
    sse_max_pending: PositiveInt = 10_000
    """An event subscriber this many events behind is disconnected."""
    write_tokens: list[str] = []
    """Bearer tokens that may also change things (claims, cordons; comma-separated)."""
    claims_cleanup_interval_s: Positive = 10.0
    """Seconds between marking expired claims ended (an expired claim holds nothing anyway)."""
    claims_keep_s: NonNegative = 86_400.0
    """Ended claims are deleted this long after they ended (their events stay)."""

    def __repr__(self) -> str:
        tokens = f"[{len(self.auth_tokens)} masked]" if self.auth_tokens else "[]"
        writers = f"[{len(self.write_tokens)} masked]" if self.write_tokens else "[]"
        return (
            f"ApiSettings(host={self.host!r}, port={self.port}, auth_tokens={tokens},"
            f" write_tokens={writers}, ...)"
        )


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    amqp: AmqpSettings = AmqpSettings()
    database: DatabaseSettings = DatabaseSettings()
    agent: AgentSettings = AgentSettings()
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()


_SECTIONS: Final[dict[str, type[msgspec.Struct]]] = {
    "amqp": AmqpSettings,
    "database": DatabaseSettings,
    "agent": AgentSettings,
    "ingest": IngestSettings,
    "api": ApiSettings,
}
_S = TypeVar("_S", bound=msgspec.Struct)


def _from_env(raw: str, field_type: Any) -> Any:
    """Environment values are strings; lists are comma-separated, empty means None."""
    if raw == "" and _accepts_none(field_type):
        return None
    if _is_list(field_type):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _accepts_none(field_type: Any) -> bool:
    return get_origin(field_type) in (Union, UnionType) and type(None) in get_args(field_type)


def _is_list(field_type: Any) -> bool:
    return get_origin(field_type) is list


def _shown(name: str, value: Any) -> str:
    secret = name in {"url", "urls", "management_url", "auth_tokens", "write_tokens"}
    if secret and isinstance(value, str):
        return repr(mask_url(value))
    if name == "urls" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return repr([mask_url(v) for v in value])  # URLs show, their passwords do not
    if secret:
        return "<masked>"
    return repr(value)


def _build_section(
    section: str,
    cls: type[_S],
    from_file: Mapping[str, Any],
    environ: Mapping[str, str],
    source: str,
) -> _S:
    known = {f.name: f for f in msgspec.structs.fields(cls)}
    for key in from_file:
        if key not in known:
            raise ConfigError(f"unknown setting {section}.{key} in {source}")
    values: dict[str, Any] = {}
    for name, info in known.items():
        env_name = f"FLEETPULSE_{section}_{name}".upper()
        if env_name in environ:
            raw: Any = _from_env(environ[env_name], info.type)
            origin = f"environment {env_name}"
        elif name in from_file:
            raw = from_file[name]
            origin = source
        else:
            continue
        try:
            values[name] = msgspec.convert(raw, info.type, strict=origin == source)
        except msgspec.ValidationError as exc:
            reason = str(exc).split(" - at ")[0]
            raise ConfigError(
                f"setting {section}.{name} from {origin} = {_shown(name, raw)}: {reason}"
            ) from None
    return cls(**values)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the TOML file (explicit path, else ``$FLEETPULSE_CONFIG``, else
    ``./fleetpulse.toml`` if present) and apply environment overrides."""
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get("FLEETPULSE_CONFIG")
    document: dict[str, Any] = {}
    source = "defaults"
    if chosen is not None or Path(DEFAULT_CONFIG_FILE).is_file():
        file = Path(chosen if chosen is not None else DEFAULT_CONFIG_FILE)
        source = str(file)
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    for section, table in document.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {source}")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] in {source} must be a table")

    def build(name: str, cls: type[_S]) -> _S:
        return _build_section(name, cls, document.get(name, {}), env, source)

    return Settings(
        amqp=build("amqp", AmqpSettings),
        database=build("database", DatabaseSettings),
        agent=build("agent", AgentSettings),
        ingest=build("ingest", IngestSettings),
        api=build("api", ApiSettings),
    )
