"""Sealed session ids for 2025-era MCP sessions.

The MCP SDK keeps legacy sessions in one process's memory, which pins a client to one replica.
Portcullis instead seals everything a replica needs into the ``Mcp-Session-Id`` itself:
AES-256-GCM over a small JSON payload (negotiated protocol version, the client requests the
caller declared it can answer, issue and expiry times, a random session nonce), with a key the
replicas share.

Of the caller's ``initialize`` capabilities only what the gateway decides on is kept: which of
the four client-request kinds (:data:`DECLARABLE`) it declared (:func:`declared_kinds`), a few
short names, so the id stays small however large the capabilities object was. A request the
caller never declared is never pushed to it (:mod:`portcullis.transport.push`). Any replica holding a
key can open any session; a forged, altered, expired or foreign id is simply "not found".

Keys rotate by listing several: the first seals, all are tried when opening.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portcullis.errors import UnknownSession

_PREFIX = "pcs1."
_AAD = b"portcullis/session/v1"
_NONCE_BYTES = 12
MAX_SESSION_ID_CHARS = 4096
#: the client-request kinds a caller can declare in ``initialize`` (the names of ``client_requests``)
DECLARABLE = ("sampling", "elicitation_form", "elicitation_url", "roots")


def declared_kinds(capabilities: Any) -> frozenset[str]:
    """The client-request kinds an ``initialize``'s ``params.capabilities`` declares.

    ``sampling: {}`` and ``roots: {}`` declare themselves; ``elicitation: {}`` is form mode only
    (2025-06-18, and 2025-11-25's reading of an empty object); ``elicitation: {form?, url?}`` names
    its modes. Anything that is not an object declares nothing (fail closed).
    """
    if not isinstance(capabilities, dict):
        return frozenset()
    kinds = {kind for kind in ("sampling", "roots") if isinstance(capabilities.get(kind), dict)}
    elicitation = capabilities.get("elicitation")
    if isinstance(elicitation, dict):
        form, url = isinstance(elicitation.get("form"), dict), isinstance(elicitation.get("url"), dict)
        if form or not ("form" in elicitation or "url" in elicitation):
            kinds.add("elicitation_form")
        if url:
            kinds.add("elicitation_url")
    return frozenset(kinds)


def capabilities_of(kinds: frozenset[str]) -> dict[str, Any]:
    """The client capabilities object that declares exactly ``kinds`` (the inverse of :func:`declared_kinds`)."""
    caps: dict[str, Any] = {kind: {} for kind in ("sampling", "roots") if kind in kinds}
    modes: dict[str, Any] = {mode: {} for mode in ("form", "url") if f"elicitation_{mode}" in kinds}
    if modes:
        caps["elicitation"] = modes
    return caps


@dataclass(frozen=True, slots=True)
class Session:
    """What a sealed session id carries."""

    session_nonce: str
    principal_key: str  # binds the session to who opened it (session hijacking defence)
    protocol_version: str
    declared: frozenset[str]  # client-request kinds the caller declared (DECLARABLE), nothing else
    issued_at: int
    expires_at: int


class SessionSealer:
    """Seals and opens session ids. ``clock`` returns Unix seconds (injected for tests)."""

    def __init__(self, keys: Sequence[bytes], *, ttl_s: int, clock: Callable[[], float]) -> None:
        if not keys:
            raise ValueError("at least one session key is required")
        if any(len(key) != 32 for key in keys):
            raise ValueError("session keys must be 32 bytes")
        self._aeads = [AESGCM(key) for key in keys]
        self._ttl_s = ttl_s
        self._clock = clock

    def seal(self, protocol_version: str, client_capabilities: dict[str, Any], principal_key: str = "") -> str:
        now = int(self._clock())
        payload = {"n": secrets.token_urlsafe(16), "v": protocol_version,
                   "k": sorted(declared_kinds(client_capabilities)), "p": principal_key, "iat": now,
                   "exp": now + self._ttl_s}
        plain = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[0].encrypt(nonce, plain, _AAD)
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, session_id: str) -> Session:
        """Return the session or raise :class:`UnknownSession` (never says why, to the client)."""
        if not session_id.startswith(_PREFIX) or len(session_id) > MAX_SESSION_ID_CHARS:
            raise UnknownSession(detail="session id has a foreign format")
        body = session_id[len(_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise UnknownSession(detail="session id is not base64url") from None
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for aead in self._aeads:
            try:
                plain = aead.decrypt(nonce, sealed, _AAD)
                break
            except (InvalidTag, ValueError):
                continue
        else:
            raise UnknownSession(detail="session id failed authentication")
        data = json.loads(plain)
        if int(self._clock()) >= data["exp"]:
            raise UnknownSession(detail="session id expired")
        # "c": an id sealed before the kinds were (the whole capabilities object): read the same way
        kinds = data["k"] if "k" in data else sorted(declared_kinds(data.get("c")))
        declared = frozenset(k for k in kinds if k in DECLARABLE) if isinstance(kinds, list) else frozenset()
        return Session(data["n"], data.get("p", ""), data["v"], declared, data["iat"], data["exp"])


def decode_keys(text: str) -> list[bytes]:
    """Parse a comma-separated list of base64 (standard or url-safe) 32-byte keys."""
    keys = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            key = base64.urlsafe_b64decode(part.replace("+", "-").replace("/", "_") + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("session key is not base64") from None
        if len(key) != 32:
            raise ValueError("session key must decode to 32 bytes")
        keys.append(key)
    if not keys:
        raise ValueError("no session key given")
    return keys
