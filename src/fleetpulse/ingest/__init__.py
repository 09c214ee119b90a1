"""fleetpulse.ingest: heartbeats from RabbitMQ into TimescaleDB, and the silence detector."""

from fleetpulse.ingest.backoff import Backoff
from fleetpulse.ingest.credentials import agent_permissions, create_agent_credentials
from fleetpulse.ingest.detector import SilenceDetector
from fleetpulse.ingest.metrics import IngestMetrics
from fleetpulse.ingest.planner import Decoded, Delivery, Plan, Rejection, decode_batch, plan_batch
from fleetpulse.ingest.service import run_ingest, serve
from fleetpulse.ingest.topology import declare_topology
from fleetpulse.ingest.worker import CommitReport, Ingest, utc_now

__all__ = [
    "Backoff",
    "CommitReport",
    "Decoded",
    "Delivery",
    "Ingest",
    "IngestMetrics",
    "Plan",
    "Rejection",
    "SilenceDetector",
    "agent_permissions",
    "create_agent_credentials",
    "declare_topology",
    "decode_batch",
    "plan_batch",
    "run_ingest",
    "serve",
    "utc_now",
]
