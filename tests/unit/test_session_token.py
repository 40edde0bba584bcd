"""Sealed 2025-era session ids."""

from __future__ import annotations

import base64
import os

import pytest

from portcullis.errors import UnknownSession
from portcullis.transport.session_token import SessionSealer, decode_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sealed_session_opens_on_another_sealer_with_the_same_key() -> None:
    """Any replica holding the key serves any session."""
    key, clock = os.urandom(32), Clock()
    sid = SessionSealer([key], ttl_s=60, clock=clock).seal("2025-11-25", {"elicitation": {}})
    session = SessionSealer([key], ttl_s=60, clock=clock).open(sid)
    assert session.protocol_version == "2025-11-25"
    assert session.declared == frozenset({"elicitation_form"})
    assert all(0x21 <= ord(c) <= 0x7E for c in sid)


def test_rotated_keys_still_open_old_sessions() -> None:
    """A sealer whose second key sealed an id still opens it."""
    old, new, clock = os.urandom(32), os.urandom(32), Clock()
    sid = SessionSealer([old], ttl_s=60, clock=clock).seal("2025-06-18", {})
    assert SessionSealer([new, old], ttl_s=60, clock=clock).open(sid).protocol_version == "2025-06-18"


def _flip(sid: str) -> str:
    body = sid[5:]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 1
    return "pcs1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("mangle", [
    lambda s: _flip(s),
    lambda s: s[:-4],
    lambda s: "pcs1.!!!!",
    lambda s: "0123456789abcdef0123456789abcdef",
    lambda s: "pcs1.",
    lambda s: "pcs1." + "A" * 5000,
    lambda s: s.replace("pcs1.", "pcs2."),
])
def test_forged_or_tampered_ids_are_unknown(mangle) -> None:  # type: ignore[no-untyped-def]
    """Tampering, truncation, garbage and foreign formats all read as 'session not found'."""
    sealer = SessionSealer([os.urandom(32)], ttl_s=60, clock=Clock())
    with pytest.raises(UnknownSession):
        sealer.open(mangle(sealer.seal("2025-11-25", {})))


def test_an_id_sealed_with_another_key_is_unknown() -> None:
    """A replica with a different key cannot open the session."""
    clock = Clock()
    sid = SessionSealer([os.urandom(32)], ttl_s=60, clock=clock).seal("2025-11-25", {})
    with pytest.raises(UnknownSession):
        SessionSealer([os.urandom(32)], ttl_s=60, clock=clock).open(sid)


def test_an_expired_session_is_unknown() -> None:
    """Past its ttl a session id is refused."""
    clock = Clock()
    sealer = SessionSealer([os.urandom(32)], ttl_s=60, clock=clock)
    sid = sealer.seal("2025-11-25", {})
    clock.now += 61
    with pytest.raises(UnknownSession):
        sealer.open(sid)


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_bad_key_material_is_refused(text: str) -> None:
    """Keys must be base64 of exactly 32 bytes."""
    with pytest.raises(ValueError):
        decode_keys(text)


DECLARED = [
    ({}, set()),
    ({"sampling": {}}, {"sampling"}),
    ({"roots": {"listChanged": True}}, {"roots"}),
    ({"elicitation": {}}, {"elicitation_form"}),  # an empty object: form only
    ({"elicitation": {"form": {}}}, {"elicitation_form"}),
    ({"elicitation": {"url": {}}}, {"elicitation_url"}),
    ({"elicitation": {"form": {}, "url": {}}, "sampling": {}, "roots": {}},
     {"elicitation_form", "elicitation_url", "sampling", "roots"}),
    ({"sampling": True, "roots": [], "elicitation": "yes"}, set()),  # not objects: nothing declared
    ({"elicitation": {"url": True}}, set()),
    ("not an object", set()),
]


@pytest.mark.parametrize(("caps", "kinds"), DECLARED)
def test_declared_client_request_kinds_come_from_initialize_capabilities(caps: object, kinds: set[str]) -> None:
    """Only objects declare; elicitation {} is form mode; the kinds round-trip through capabilities_of."""
    from portcullis.transport.session_token import capabilities_of, declared_kinds

    assert declared_kinds(caps) == kinds
    assert declared_kinds(capabilities_of(frozenset(kinds))) == kinds


def test_the_session_keeps_only_the_declared_kinds_not_the_capabilities() -> None:
    """A large capabilities object does not grow the id: only a few kind names are sealed."""
    key, clock = os.urandom(32), Clock()
    sealer = SessionSealer([key], ttl_s=60, clock=clock)
    small = sealer.seal("2025-11-25", {"roots": {}})
    large = sealer.seal("2025-11-25", {"roots": {}, "experimental": {"x": "y" * 3000}})
    assert abs(len(large) - len(small)) <= 4
    assert sealer.open(large).declared == frozenset({"roots"})
