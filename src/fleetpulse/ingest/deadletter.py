"""Dead letters: a rejected delivery goes to ``fleetpulse.dead`` carrying its reason.

A broker-side reject cannot add headers, so the body is republished (with publisher
confirms) to the dead-letter exchange with ``x-fleetpulse-reason`` and the detail; only
when that fails does the caller fall back to ``basic_reject(requeue=False)``, which the
queue's ``x-dead-letter-exchange`` routes to the same place, reason-less.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import aiormq
import aiormq.abc
from pamqp.commands import Basic

from fleetpulse.broker import AMQP_CONNECTION_ERRORS
from fleetpulse.ingest.planner import Rejection
from fleetpulse.messages import DEAD_LETTER_EXCHANGE

__all__ = [
    "AMQP_CONNECTION_ERRORS",
    "DETAIL_HEADER",
    "REASON_HEADER",
    "USER_HEADER",
    "dead_letter",
    "log_rejection",
]

log = logging.getLogger("fleetpulse.ingest.worker")
security_log = logging.getLogger("fleetpulse.security")

REASON_HEADER: Final = "x-fleetpulse-reason"
DETAIL_HEADER: Final = "x-fleetpulse-detail"
USER_HEADER: Final = "x-fleetpulse-user-id"


def log_rejection(rejection: Rejection) -> None:
    """Identity refusals are security events; the rest are ordinary warnings."""
    delivery = rejection.delivery
    if rejection.result == "unauthorised":
        security_log.warning(
            "security: heartbeat refused, %s (user_id=%r routing_key=%r)",
            rejection.detail,
            delivery.user_id,
            delivery.routing_key,
            extra={
                "reason": rejection.reason,
                "user_id": delivery.user_id,
                "routing_key": delivery.routing_key,
            },
        )
    else:
        log.warning(
            "message rejected (%s): %s (routing_key=%r)",
            rejection.reason,
            rejection.detail[:300],
            delivery.routing_key,
            extra={"reason": rejection.reason, "routing_key": delivery.routing_key},
        )


async def dead_letter(channel: aiormq.abc.AbstractChannel, rejection: Rejection) -> bool:
    """Republish to the dead-letter exchange; True once the broker confirmed it."""
    delivery = rejection.delivery
    headers: dict[str, Any] = dict(delivery.headers or {})
    headers[REASON_HEADER] = rejection.reason
    headers[DETAIL_HEADER] = rejection.detail[:1000]
    if delivery.user_id is not None:
        # The original user_id cannot travel as user_id: the broker checks it against
        # this connection's user.
        headers[USER_HEADER] = delivery.user_id
    properties = Basic.Properties(
        delivery_mode=2, headers=headers, content_type="application/octet-stream"
    )
    try:
        confirmation = await channel.basic_publish(
            delivery.body,
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=delivery.routing_key,
            properties=properties,
            timeout=5.0,
        )
    except (*AMQP_CONNECTION_ERRORS, aiormq.exceptions.ChannelInvalidStateError) as exc:
        log.warning("dead-letter publish failed (%s); rejecting instead", exc)
        return False
    return isinstance(confirmation, Basic.Ack)
