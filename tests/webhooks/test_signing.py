"""Webhook signatures: what ``sign`` gives, ``verify`` takes; a changed body, another
secret, an old timestamp or a malformed header are refused."""

from __future__ import annotations

import hashlib
import hmac

from migrator.webhooks import sign, verify

SECRET = b"k"
BODY = b'{"position": 1}'


def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body() -> None:
    header = sign(SECRET, BODY, t=1_700_000_000)
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(SECRET, BODY, header, now=1_700_000_100)


def test_a_changed_body_another_secret_or_an_old_timestamp_is_refused() -> None:
    header = sign(SECRET, BODY, t=1_700_000_000)
    assert not verify(SECRET, BODY + b" ", header, now=1_700_000_000)
    assert not verify(b"other", BODY, header, now=1_700_000_000)
    assert not verify(SECRET, BODY, header, now=1_700_000_301)
    for bad in ("", "v1=00", "t=x,v1=00", "t=1700000000", "t=1,t=2,v1=00"):
        assert not verify(SECRET, BODY, bad, now=1_700_000_000)


def test_any_of_several_v1_may_match_while_a_secret_is_rotated() -> None:
    old = sign(b"old", BODY, t=1_700_000_000)
    new = sign(SECRET, BODY, t=1_700_000_000).split(",")[1]
    assert verify(SECRET, BODY, f"{old},{new}", now=1_700_000_000)
