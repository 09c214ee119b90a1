"""fleetpulse.ingest: heartbeats from RabbitMQ into TimescaleDB, and the silence detector."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what mypy and readers see; the same names, loaded on first use, below
    from fleetpulse.ingest.batch import CommitReport as CommitReport
    from fleetpulse.ingest.credentials import (
        agent_permissions as agent_permissions,
        create_agent_credentials as create_agent_credentials,
    )
    from fleetpulse.ingest.detector import SilenceDetector as SilenceDetector
    from fleetpulse.ingest.metrics import IngestMetrics as IngestMetrics
    from fleetpulse.ingest.planner import (
        Decoded as Decoded,
        Delivery as Delivery,
        Plan as Plan,
        Rejection as Rejection,
        decode_batch as decode_batch,
        plan_batch as plan_batch,
    )
    from fleetpulse.ingest.service import run_ingest as run_ingest, serve as serve
    from fleetpulse.ingest.topology import declare_topology as declare_topology
    from fleetpulse.ingest.worker import Ingest as Ingest, utc_now as utc_now
else:
    from fleetpulse._lazy import lazy_face

    __all__, __getattr__, __dir__ = lazy_face(
        __name__,
        {
            "batch": "CommitReport",
            "credentials": "agent_permissions create_agent_credentials",
            "detector": "SilenceDetector",
            "metrics": "IngestMetrics",
            "planner": "Decoded Delivery Plan Rejection decode_batch plan_batch",
            "service": "run_ingest serve",
            "topology": "declare_topology",
            "worker": "Ingest utc_now",
        },
    )
