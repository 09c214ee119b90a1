"""The wire contract between agents and ingest: heartbeat and goodbye, schema version 1.

Messages are immutable msgspec structs. ``encode`` and ``decode`` are the only way
bytes become messages and back; ``decode`` raises :class:`MessageError` (and nothing
else) with a precise, human-readable reason for every rejection.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from fleetpulse.errors import MessageError

__all__ = [
    "BROKER_MAX_MESSAGE_BYTES",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "EXCHANGE",
    "GPU_HEALTH",
    "INGEST_QUEUE",
    "MAX_BODY_BYTES",
    "SCHEMA_VERSION",
    "WITHHELD_REASONS",
    "AgentStats",
    "Goodbye",
    "GpuMetrics",
    "Heartbeat",
    "Message",
    "Presence",
    "ResourceMetrics",
    "WorkStatus",
    "available_cores",
    "decode",
    "encode",
    "routing_key",
]

SCHEMA_VERSION: Final = 1
MAX_BODY_BYTES: Final = 64 * 1024
# The broker's max_message_size (scripts/rabbitmq-fleetpulse.conf): it refuses bigger bodies.
BROKER_MAX_MESSAGE_BYTES: Final = 72 * 1024
EXCHANGE: Final = "fleetpulse.heartbeats"
INGEST_QUEUE: Final = "fleetpulse.ingest"
DEAD_LETTER_EXCHANGE: Final = "fleetpulse.dead"
DEAD_LETTER_QUEUE: Final = "fleetpulse.dead"

# Bounds are generous: they exist to reject nonsense, not to guess the future.
NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Cores = Annotated[int, msgspec.Meta(ge=0, le=65_536)]
Load = Annotated[float, msgspec.Meta(ge=0.0, le=1e6)]
Gigabytes = Annotated[float, msgspec.Meta(ge=0.0, le=1e7)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Celsius = Annotated[float, msgspec.Meta(ge=-100.0, le=250.0)]
Watts = Annotated[float, msgspec.Meta(ge=0.0, le=100_000.0)]
Millis = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]
GpuIndex = Annotated[int, msgspec.Meta(ge=0, le=255)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
ErrorText = Annotated[str, msgspec.Meta(max_length=1024)]
Pool = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
WorkState = Literal["idle", "busy", "draining", "unknown"]
GpuHealth = Literal["ok", "degraded", "failed"]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=1e10)]

GPU_HEALTH: Final = ("ok", "degraded", "failed")
# Why an agent withholds its machine; ``exclusive_process`` travels as ``exclusive_process:<name>``.
WITHHELD_REASONS: Final = ("user_active", "exclusive_process", "outside_hours")

_SLACK: Final = 1.01  # free may exceed total by rounding in the driver, never by more


class GpuMetrics(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One GPU as NVML saw it. A field the device does not support is ``None``."""

    index: GpuIndex
    uuid: ErrorText = ""
    name: ErrorText = ""
    vram_total_gb: Gigabytes = 0.0
    vram_free_gb: Gigabytes = 0.0
    util_pct: Percent | None = None
    temp_c: Celsius | None = None
    power_w: Watts | None = None
    error: ErrorText | None = None
    # Health (added after v1 shipped, all optional: an agent that predates them leaves
    # ``health`` None). ``degraded``/``failed`` come with short reasons such as ``xid:79``,
    # ``throttle:thermal``, ``retired_pages_pending``, ``ecc_uncorrected``.
    health: GpuHealth | None = None
    health_reasons: Annotated[list[Reason], msgspec.Meta(max_length=16)] = []
    xid_events: Annotated[list[NonNegInt], msgspec.Meta(max_length=32)] = []
    throttle_reasons: Annotated[list[Reason], msgspec.Meta(max_length=16)] = []
    retired_pages: NonNegInt | None = None
    retired_pages_pending: bool | None = None
    ecc_uncorrected: NonNegInt | None = None

    def __post_init__(self) -> None:
        if self.vram_free_gb > self.vram_total_gb * _SLACK + 1e-9:
            raise ValueError(
                f"gpu {self.index}: vram_free_gb {self.vram_free_gb} exceeds "
                f"vram_total_gb {self.vram_total_gb}"
            )


class ResourceMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Host-level resources at ``sampled_at``; see DESIGN.md section 2."""

    cpu_load_1m: Load
    cpu_load_5m: Load
    cpu_load_15m: Load
    cpu_cores: Cores
    cpu_available_cores: Cores
    mem_total_gb: Gigabytes
    mem_available_gb: Gigabytes
    gpu_type: ShortText = "none"
    gpu_count: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    gpu_vram_total_gb: Gigabytes = 0.0
    gpu_vram_available_gb: Gigabytes = 0.0
    gpus: Annotated[list[GpuMetrics], msgspec.Meta(max_length=256)] = []
    errors: Annotated[list[ErrorText], msgspec.Meta(max_length=64)] = []

    def __post_init__(self) -> None:
        if self.cpu_available_cores > self.cpu_cores:
            raise ValueError(
                f"cpu_available_cores {self.cpu_available_cores} exceeds cpu_cores {self.cpu_cores}"
            )
        if self.mem_available_gb > self.mem_total_gb * _SLACK + 1e-9:
            raise ValueError(
                f"mem_available_gb {self.mem_available_gb} exceeds mem_total_gb {self.mem_total_gb}"
            )
        if self.gpu_count > len(self.gpus):
            raise ValueError(f"gpu_count {self.gpu_count} exceeds the {len(self.gpus)} gpus listed")
        if self.gpu_vram_available_gb > self.gpu_vram_total_gb * _SLACK + 1e-9:
            raise ValueError(
                f"gpu_vram_available_gb {self.gpu_vram_available_gb} exceeds "
                f"gpu_vram_total_gb {self.gpu_vram_total_gb}"
            )


class WorkStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: WorkState = "idle"
    running_jobs: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


class AgentStats(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's own health, so the fleet can see sick agents."""

    collect_ms: Millis = 0.0
    spool_depth: NonNegInt = 0
    dropped_total: NonNegInt = 0
    reconnects_total: NonNegInt = 0
    gpu_probe_failures_total: NonNegInt = 0


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    """Whether someone uses the machine and whether its owner offers it (optional, additive).

    ``user_idle_s`` None: the idle time cannot be known here (``source`` says ``none``).
    ``offered`` False comes with ``withheld_reason``: ``user_active``,
    ``exclusive_process:<name>`` or ``outside_hours``."""

    user_idle_s: Seconds | None = None
    locked: bool | None = None
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "none"
    offered: bool = True
    withheld_reason: Reason | None = None


class Heartbeat(
    msgspec.Struct, frozen=True, kw_only=True, tag="heartbeat", tag_field="message_type"
):
    """One sample of one agent. ``sampled_at`` keys the time series."""

    schema_version: Literal[1]
    agent_id: uuid.UUID
    seq: NonNegInt
    sampled_at: Timestamp
    sent_at: Timestamp
    hostname: ShortText
    agent_version: Version
    resource_metrics: ResourceMetrics
    pool: Pool | None = None
    work_status: WorkStatus = WorkStatus()
    agent_stats: AgentStats | None = None
    presence: Presence | None = None
    # Drawn by the agent at each start; with ``seq`` it orders the agent's samples, so its
    # clock never can. Optional: older agents send none.
    incarnation: uuid.UUID | None = None


class Goodbye(msgspec.Struct, frozen=True, kw_only=True, tag="goodbye", tag_field="message_type"):
    """Sent on graceful stop; the agent is marked offline at once with reason ``shutdown``."""

    schema_version: Literal[1]
    agent_id: uuid.UUID
    seq: NonNegInt
    sent_at: Timestamp
    hostname: ShortText
    agent_version: Version
    pool: Pool | None = None
    incarnation: uuid.UUID | None = None


Message = Heartbeat | Goodbye

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Message)


def encode(message: Message) -> bytes:
    """Serialise a message to its UTF-8 JSON body."""
    return _encoder.encode(message)


def decode(body: bytes | bytearray | memoryview) -> Message:
    """Parse and validate a body; raise :class:`MessageError` with the reason on any fault."""
    size = len(body)
    if size > MAX_BODY_BYTES:
        raise MessageError(
            f"body is {size} bytes, over the {MAX_BODY_BYTES}-byte limit", reason="oversize"
        )
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.endswith("`$.schema_version`") or "`schema_version`" in text:
            raise MessageError(f"unknown schema_version: {text}", reason="schema_version") from None
        raise MessageError(text, reason="invalid") from None
    except msgspec.DecodeError as exc:
        raise MessageError(f"malformed JSON: {exc}", reason="malformed") from None
    except (msgspec.MsgspecError, ValueError, TypeError, UnicodeError, RecursionError) as exc:
        raise MessageError(f"undecodable body: {exc}", reason="malformed") from None


def routing_key(pool: str | None, agent_id: uuid.UUID | str) -> str:
    """``heartbeat.<pool>.<agent_id>``; an undeclared pool travels as ``default``."""
    return f"heartbeat.{pool or 'default'}.{agent_id}"


def available_cores(cpu_cores: int, cpu_load_1m: float) -> int:
    """floor(max(0, cores − load_1m)): the cores a new job could have right now."""
    if not math.isfinite(cpu_load_1m):
        return 0
    return max(0, min(cpu_cores, math.floor(cpu_cores - cpu_load_1m)))
