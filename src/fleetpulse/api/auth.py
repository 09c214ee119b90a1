"""Optional bearer-token auth on every route but the health probes; constant-time compare.

Two kinds of token: read tokens (``api.auth_tokens``) and write tokens (``api.write_tokens``).
With any token configured, reading needs either kind and changing something (any method but
GET, HEAD and OPTIONS: claims, cordons) needs a write token; a read token there is a 403.
Without tokens the API is open (and bound to 127.0.0.1 by default).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from fleetpulse.api.schemas import ErrorBody

__all__ = ["OPEN_PATHS", "READ_METHODS", "bearer_auth_middleware", "token_matches"]

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
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


def _error(status: int, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = msgspec.json.encode(ErrorBody(status_code=status, detail=detail))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="fleetpulse"'))
    return headers, body


def bearer_auth_middleware(read_tokens: Sequence[str], write_tokens: Sequence[str] = ()) -> object:
    writers = [t.encode() for t in write_tokens]
    readers = [t.encode() for t in read_tokens] + writers
    unauthorized = _error(401, "missing or invalid bearer token (header Authorization)")
    forbidden = _error(
        403,
        "this token may only read; changes (claims, cordons) need a write token"
        + ("" if writers else " and none is configured (api.write_tokens)"),
    )

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or scope["path"] in OPEN_PATHS:
                await app(scope, receive, send)
                return
            presented = _presented(scope)
            refusal = unauthorized
            if presented is not None:
                if scope["method"] in READ_METHODS:
                    if token_matches(presented, readers):
                        await app(scope, receive, send)
                        return
                elif token_matches(presented, writers):
                    await app(scope, receive, send)
                    return
                elif token_matches(presented, readers):
                    refusal = forbidden
            headers, body = refusal
            status = 401 if refusal is unauthorized else 403
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return middleware

    return factory
