"""Optional bearer-token auth on every route but the health probes; constant-time compare."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from fleetpulse.api.schemas import ErrorBody

__all__ = ["OPEN_PATHS", "bearer_auth_middleware", "token_matches"]

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
_PREFIX: Final = b"bearer "


def token_matches(presented: bytes, tokens: Sequence[bytes]) -> bool:
    """True if ``presented`` equals one of ``tokens``; every token is compared, so the
    time taken does not say which one (or how much of one) matched."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token)
    return matched


def _presented(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[: len(_PREFIX)].lower() == _PREFIX:
            return value[len(_PREFIX) :].strip()
    return None


def bearer_auth_middleware(tokens: Sequence[str]) -> object:
    encoded = [t.encode() for t in tokens]
    body = msgspec.json.encode(
        ErrorBody(status_code=401, detail="missing or invalid bearer token (header Authorization)")
    )

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or scope["path"] in OPEN_PATHS:
                await app(scope, receive, send)
                return
            presented = _presented(scope)
            if presented is not None and token_matches(presented, encoded):
                await app(scope, receive, send)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="fleetpulse"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return middleware

    return factory
