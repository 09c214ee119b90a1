"""Bearer tokens: every configured token is compared."""

from __future__ import annotations

from fleetpulse.api.auth import token_matches


def test_token_compare_checks_every_token() -> None:
    assert token_matches(b"b", [b"a", b"b"])
    assert not token_matches(b"c", [b"a", b"b"])
    assert not token_matches(b"", [])
