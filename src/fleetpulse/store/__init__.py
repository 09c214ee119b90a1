"""The store: TimescaleDB connections, schema, writes and queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what mypy and readers see; the same names, loaded on first use, below
    from fleetpulse.store.allotment import (
        Allotment as Allotment,
        ClaimAsk as ClaimAsk,
        ClaimRecord as ClaimRecord,
        CordonRecord as CordonRecord,
        GpuAllotment as GpuAllotment,
        Holding as Holding,
        Refusal as Refusal,
        allot as allot,
        fit as fit,
    )
    from fleetpulse.store.capacity import (
        CapacityFilter as CapacityFilter,
        CapacityMatch as CapacityMatch,
        matching_gpus as matching_gpus,
    )
    from fleetpulse.store.claimable import (
        ClaimableView as ClaimableView,
        claimable_gpus as claimable_gpus,
    )
    from fleetpulse.store.claims import (
        ClaimOutcome as ClaimOutcome,
        expire_claims as expire_claims,
        fetch_claim as fetch_claim,
        fetch_claims as fetch_claims,
        fetch_cordons as fetch_cordons,
        fetch_holdings as fetch_holdings,
        place_claim as place_claim,
        purge_ended_claims as purge_ended_claims,
        release_claim as release_claim,
        remove_cordon as remove_cordon,
        renew_claim as renew_claim,
        set_cordon as set_cordon,
    )
    from fleetpulse.store.engine import (
        RETRYABLE_DB_ERRORS as RETRYABLE_DB_ERRORS,
        Database as Database,
        Edition as Edition,
        connect as connect,
        detect_edition as detect_edition,
        map_db_errors as map_db_errors,
    )
    from fleetpulse.store.event_feed import (
        EventFeed as EventFeed,
        EventSubscription as EventSubscription,
    )
    from fleetpulse.store.holdings import (
        Holdings as Holdings,
        HoldingsFollower as HoldingsFollower,
    )
    from fleetpulse.store.liveness import (
        DETECTOR_LOCK_KEY as DETECTOR_LOCK_KEY,
        DetectorLease as DetectorLease,
        WatermarkView as WatermarkView,
        read_watermark as read_watermark,
        report_watermark as report_watermark,
        sweep_silent as sweep_silent,
    )
    from fleetpulse.store.migrate import (
        current_revision as current_revision,
        downgrade as downgrade,
        ensure_database as ensure_database,
        head_revision as head_revision,
        upgrade as upgrade,
    )
    from fleetpulse.store.queries import (
        RELIABILITY_WINDOW as RELIABILITY_WINDOW,
        AgentRecord as AgentRecord,
        GpuBucket as GpuBucket,
        GpuState as GpuState,
        HostBucket as HostBucket,
        StatusEvent as StatusEvent,
        fetch_agent as fetch_agent,
        fetch_agents as fetch_agents,
        fetch_events as fetch_events,
        fetch_history as fetch_history,
        fetch_registry as fetch_registry,
        fetch_reliability as fetch_reliability,
        fetch_silenced as fetch_silenced,
        latest_event_id as latest_event_id,
        ping as ping,
    )
    from fleetpulse.store.registry_follower import RegistryFollower as RegistryFollower
    from fleetpulse.store.registry_index import RegistryIndex as RegistryIndex
    from fleetpulse.store.retention import (
        HYPERTABLES as HYPERTABLES,
        apply_retention as apply_retention,
    )
    from fleetpulse.store.rows import (
        AgentState as AgentState,
        BatchWrite as BatchWrite,
        EventRow as EventRow,
        GoodbyeRow as GoodbyeRow,
        GpuRow as GpuRow,
        RegistryRow as RegistryRow,
        SampleRow as SampleRow,
        WriteResult as WriteResult,
    )
    from fleetpulse.store.writes import (
        REPLAN_ATTEMPTS as REPLAN_ATTEMPTS,
        LockedBatch as LockedBatch,
        locked_batch as locked_batch,
    )
else:
    from fleetpulse._lazy import lazy_face

    __all__, __getattr__, __dir__ = lazy_face(
        __name__,
        {
            "allotment": (
                "Allotment ClaimAsk ClaimRecord CordonRecord GpuAllotment Holding Refusal allot fit"
            ),
            "claimable": "ClaimableView claimable_gpus",
            "claims": (
                "ClaimOutcome expire_claims fetch_claim fetch_claims fetch_cordons fetch_holdings"
                " place_claim purge_ended_claims release_claim remove_cordon renew_claim set_cordon"
            ),
            "holdings": "Holdings HoldingsFollower",
            "engine": "RETRYABLE_DB_ERRORS Database Edition connect detect_edition map_db_errors",
            "capacity": "CapacityFilter CapacityMatch matching_gpus",
            "event_feed": "EventFeed EventSubscription",
            "liveness": (
                "DETECTOR_LOCK_KEY DetectorLease WatermarkView read_watermark"
                " report_watermark sweep_silent"
            ),
            "migrate": "current_revision downgrade ensure_database head_revision upgrade",
            "queries": (
                "RELIABILITY_WINDOW AgentRecord GpuBucket GpuState HostBucket StatusEvent "
                "fetch_agent fetch_agents fetch_events fetch_history fetch_registry "
                "fetch_reliability fetch_silenced latest_event_id ping"
            ),
            "registry_follower": "RegistryFollower",
            "registry_index": "RegistryIndex",
            "retention": "HYPERTABLES apply_retention",
            "rows": (
                "AgentState BatchWrite EventRow GoodbyeRow GpuRow RegistryRow SampleRow WriteResult"
            ),
            "writes": "REPLAN_ATTEMPTS LockedBatch locked_batch",
        },
    )
