"""Fuzz target: the claim mapping (verified claims -> principal) on arbitrary input.

``fuzz_one(data)`` decodes ``data`` as a JSON object of claims when it is one; otherwise it
builds claims from the bytes (the first byte picks which claims the rest fills, as strings,
lists of strings or raw JSON fragments), so byte-level mutations reach every mapped claim. It
then runs the mapping with the default claim map and a person signal and checks the contract of
:mod:`portcullis.identity.claims`: either a clean refusal (:class:`ClaimRejected` with a short
``bad_claim:<field>:<why>`` reason) or a principal whose fields all satisfy the documented
invariants, that survives its own wire form, and that maps the same way twice. Anything else
raising is a property violation. No atheris import: the runner drives this function.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from portcullis.identity.claims import ClaimRejected, identifier_problem, principal_from_claims
from portcullis.identity.config import ClaimMap
from portcullis.identity.issuers import PersonSignal
from portcullis.identity.principal import MAX_ID_CHARS, MAX_ITEM_CHARS, MAX_ITEMS, Principal

_MAP = ClaimMap()
_PERSON = PersonSignal(claim="principal_type", equals="user")
_CLAIMS = ("sub", "client_id", "azp", "agent_id", "sid", "source_app", "tenant", "roles", "scope", "scp",
           "department", "employment_type", "region", "principal_type")
_REASON = re.compile(r"bad_claim:[A-Za-z0-9_.:-]{1,80}:[a-z_]{1,20}")
_IDS = ("client_id", "user_id", "agent_id", "session_id", "source_app", "tenant")


def _claims_from(data: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError):
        decoded = None
    if isinstance(decoded, dict):
        return decoded
    claims: dict[str, Any] = {"sub": "fuzz"}
    if not data:
        return claims
    selector, rest = data[0], data[1:]
    text = rest.decode("utf-8", errors="surrogateescape")
    for index, name in enumerate(_CLAIMS):
        if not selector & (1 << (index % 8)):
            continue
        part = text[index::len(_CLAIMS)] if selector & 0x80 else text
        shape = (selector + index) % 4
        if shape == 0:
            claims[name] = part
        elif shape == 1:
            claims[name] = part.split("\x00")
        elif shape == 2:
            try:
                claims[name] = json.loads(part)
            except (ValueError, RecursionError):
                claims[name] = part
        else:
            claims[name] = [part] * (selector % 40)
    return claims


def _check(principal: Principal) -> None:
    for name in _IDS:
        value = getattr(principal, name)
        if value is None:
            continue
        if identifier_problem(value, MAX_ID_CHARS) is not None or not unicodedata.is_normalized("NFC", value):
            raise AssertionError(f"{name} breaks the identifier rules")
    for name in ("roles", "scopes"):
        items = getattr(principal, name)
        if len(items) > MAX_ITEMS or len(set(items)) != len(items):
            raise AssertionError(f"{name}: too many or duplicate entries")
        if any(identifier_problem(item, MAX_ITEM_CHARS, spaces=False) is not None for item in items):
            raise AssertionError(f"{name}: an entry breaks the identifier rules")
    if any(identifier_problem(v, MAX_ITEM_CHARS) is not None for v in principal.attributes.values()):
        raise AssertionError("an attribute breaks the identifier rules")
    if principal.person and (principal.user_id is None or principal.agent_id is not None):
        raise AssertionError("a person without a user, or with an agent")
    if Principal.from_claims(json.loads(json.dumps(principal.to_claims()))) != principal:
        raise AssertionError("the principal does not survive its wire form")


def _map(claims: dict[str, Any]) -> Principal:
    subject = claims.get("sub")
    return principal_from_claims(claims, _MAP, subject=subject if isinstance(subject, str) and subject else "s",
                                 issuer="https://fuzz.example", issuer_name="fuzz", auth_method="bearer",
                                 person=_PERSON)


def fuzz_one(data: bytes) -> None:
    """Map claims built from ``data``; raise only when the mapping's contract is broken."""
    claims = _claims_from(data)
    try:
        principal = _map(claims)
    except ClaimRejected as exc:
        if not _REASON.fullmatch(exc.reason):
            raise AssertionError(f"refusal reason out of shape: {exc.reason[:80]!r}") from None
        return
    _check(principal)
    if _map(claims) != principal:
        raise AssertionError("the mapping is not deterministic")
