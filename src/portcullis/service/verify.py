"""Verify a gateway-minted actor token at a tool service.

:meth:`GatewayTokenVerifier.verify` follows these steps, in order, and stops at the first that
fails with :class:`ServiceAuthError` (``reason`` names the step for the operator log; the client
only ever sees "unauthenticated"):

1. A token is present, a string, and at most ``max_token_bytes`` long.
2. It has three base64url segments, and the header is a JSON object without duplicate keys.
3. The header has only ``alg``, ``kid`` and ``typ``: ``jwk``, ``jku``, ``x5u``, ``x5c``, ``crit``
   and anything else are refused (keys come from the configured JWKS, never from the token).
4. ``typ`` is ``portcullis-actor+jwt``.
5. ``alg`` is one of the configured algorithms (EdDSA, ES256); the header only *names* which,
   and it must match the algorithm of the key it selects.
6. ``kid`` selects a key in the JWKS (refreshed when stale or when the kid is unknown; when the
   call carries the gateway's endorsed key set, that is adopted first if a key this service
   already trusts signed it, see :meth:`GatewayTokenVerifier.adopt_key_set`).
7. The signature verifies with that key.
8. The claims are a JSON object with the minted types; ``iss`` and ``aud`` are exactly this
   service's issuer and audience.
9. Times: not expired (``exp`` > now), ``iat`` and ``nbf`` not beyond ``leeway_s`` in the future,
   lifetime ``exp - iat`` at most ``max_ttl_s``.
10. ``act`` is a valid principal whose ``client_id`` is ``sub``.
11. When the caller names a ``target``, the token was minted for exactly that target.
12. ``jti`` has not been seen before. It is remembered until its ``exp`` in a bounded cache; when
    the cache is full of unexpired entries new tokens are refused (fail closed), never forgotten.

The replay cache is per process: a service run as several replicas behind one audience needs
the gateway to pin each call to one replica, or a shared cache (a future seam).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from portcullis.errors import PortcullisError
from portcullis.identity.minting import (
    ACTOR_TOKEN_TYP,
    ALGORITHMS,
    KEY_SET_TYP,
    MAX_CLAIM_CHARS,
    MAX_KEY_SETS,
    MAX_TTL_S,
    b64url_decode,
)
from portcullis.identity.principal import Principal

logger = logging.getLogger("portcullis.service")

UNAUTHENTICATED_CODE = -31401  # outside -32768..-32000, as the 2026-07-28 revision asks of applications
JwksSource = Mapping[str, Any] | Callable[[], Awaitable[Mapping[str, Any]]]

_HEADER_NAMES = frozenset({"alg", "kid", "typ"})
_MAX_KEY_SET_PAYLOAD = 16_384  # base64url characters of an endorsed key set
_MAX_KEY_SET_SIGNATURES = 16
_MAX_KEY_SET_KEYS = 32
_FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit")
_MAX_HEADER_CHARS = 512


class ServiceAuthError(PortcullisError):
    """An actor token was refused. ``str()`` is always "unauthenticated"; ``reason`` is for logs."""

    message = "unauthenticated"
    code = UNAUTHENTICATED_CODE

    def __init__(self, reason: str) -> None:
        super().__init__(detail=reason)
        self.reason = reason


class VerifiedCall(NamedTuple):
    """What a valid token says: who acts, and the full claim set (``req``, ``tool``, ``jti``, …)."""

    principal: Principal
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _PublicKey:
    alg: str
    key: Ed25519PublicKey | ec.EllipticCurvePublicKey

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            if isinstance(self.key, Ed25519PublicKey):
                self.key.verify(signature, data)
            else:
                if len(signature) != 64:
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
                self.key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def parse_jwks(jwks: Mapping[str, Any], algorithms: tuple[str, ...]) -> dict[str, _PublicKey]:
    """The usable verification keys of a JWKS by kid. Raises ValueError on a set that must not be
    trusted at all: private key material, duplicate kids, or not a key set."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    found: dict[str, _PublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, Mapping):
            raise ValueError("a JWK must be an object")
        if "d" in jwk:
            raise ValueError("the JWKS contains private key material")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if kid in found:
            raise ValueError("duplicate kid in the JWKS")
        key = _public_key(jwk)
        if key is not None and key.alg in algorithms and jwk.get("use", "sig") == "sig":
            found[kid] = key
    return found


def _public_key(jwk: Mapping[str, Any]) -> _PublicKey | None:
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("alg", "EdDSA") == "EdDSA":
            return _PublicKey("EdDSA", Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])))
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and jwk.get("alg", "ES256") == "ES256":
            x, y = (int.from_bytes(b64url_decode(jwk[c]), "big") for c in ("x", "y"))
            return _PublicKey("ES256", ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key())
    except (KeyError, TypeError, ValueError):
        return None
    return None


class ReplayCache:
    """Seen ``jti`` values, each kept until its token's ``exp``; at most ``max_entries`` at once.

    Expired entries are evicted first; when every entry is still live a new token is refused
    rather than an old one forgotten (forgetting would let that token be replayed).
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("the replay cache needs room for at least one entry")
        self._max = max_entries
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, jti: str, exp: int, now: float) -> None:
        """Record ``jti`` until ``exp``; raise ServiceAuthError if it was seen or there is no room."""
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] <= now:
            _, old = heapq.heappop(heap)
            del expiry[old]
        if jti in expiry:
            raise ServiceAuthError("replayed jti")
        if len(expiry) >= self._max:
            raise ServiceAuthError("replay cache full")
        expiry[jti] = exp
        heapq.heappush(heap, (exp, jti))


class GatewayTokenVerifier:
    """Checks actor tokens for one service (see the module docstring for the steps).

    Args:
        jwks: the gateway's JWKS, or an async callable fetching it. Fetched keys are cached for
            ``jwks_max_age_s``; an unknown kid triggers a refetch at most every
            ``jwks_min_refresh_s``. When no fetch has succeeded within ``jwks_max_age_s`` every
            token is refused.
        audience: this service's audience, e.g. ``portcullis-service:billing``.
        issuer: the gateway's issuer id, e.g. ``portcullis://gateway``.
        clock: seconds since the epoch.
        algorithms: accepted signature algorithms, from configuration (never from a token).
        max_ttl_s: longest accepted lifetime (``exp - iat``), at most 60.
        leeway_s: tolerated clock skew for ``iat`` / ``nbf`` in the future.
        replay_cache_size: most ``jti`` values remembered at once; size it to at least the peak
            calls per second times ``max_ttl_s``.
    """

    def __init__(self, jwks: JwksSource, *, audience: str, issuer: str, clock: Callable[[], float] = time.time,
                 algorithms: tuple[str, ...] = ("EdDSA",), max_ttl_s: int = MAX_TTL_S, leeway_s: int = 5,
                 replay_cache_size: int = 100_000, max_token_bytes: int = 16_384,
                 jwks_max_age_s: float = 300.0, jwks_min_refresh_s: float = 1.0) -> None:
        if not algorithms or not set(algorithms) <= set(ALGORITHMS):
            raise ValueError(f"algorithms must be a non-empty subset of {ALGORITHMS}")
        if not 1 <= max_ttl_s <= MAX_TTL_S:
            raise ValueError(f"max_ttl_s must be 1 to {MAX_TTL_S}")
        if not 0 <= leeway_s <= 30:
            raise ValueError("leeway_s must be 0 to 30")
        if not audience or not issuer:
            raise ValueError("audience and issuer are required")
        self.audience, self.issuer = audience, issuer
        self._clock, self._algorithms = clock, tuple(algorithms)
        self._max_ttl_s, self._leeway_s, self._max_token_bytes = max_ttl_s, leeway_s, max_token_bytes
        self._replay = ReplayCache(replay_cache_size)
        self._jwks_max_age_s, self._jwks_min_refresh_s = jwks_max_age_s, jwks_min_refresh_s
        self._lock = anyio.Lock()
        self._fetched_at = self._attempted_at = -math.inf
        self._key_set_iat = -math.inf  # iat of the last endorsed key set adopted (never go back)
        self._key_set_payload = ""
        if callable(jwks):
            self._source: Callable[[], Awaitable[Mapping[str, Any]]] | None = jwks
            self._keys: dict[str, _PublicKey] = {}
        else:
            self._source = None
            self._keys = parse_jwks(jwks, self._algorithms)

    async def verify(self, token: str | None, *, target: str | None = None,
                     key_set: object = None) -> VerifiedCall:
        """The principal and claims of a valid token; ServiceAuthError(reason) otherwise.

        With ``target``, the token must have been minted for exactly that target (the tool name
        at this service), so a token for one tool cannot be spent on another. ``key_set`` is the
        gateway's endorsed key set if the call carried one: adopted (when a trusted key signed
        it) only if the token's kid is unknown.
        """
        # 1-2. present, bounded, well formed
        if token is None or token == "":
            raise ServiceAuthError("missing token")
        if not isinstance(token, str) or len(token) > self._max_token_bytes:
            raise ServiceAuthError("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or len(parts[0]) > _MAX_HEADER_CHARS:
            raise ServiceAuthError("malformed token")
        header = _json_object(parts[0])
        # 3. no key material or extensions from the token itself
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise ServiceAuthError(f"forbidden header {name}")
        if not header.keys() <= _HEADER_NAMES:
            raise ServiceAuthError("unexpected header")
        # 4. the token type
        if header.get("typ") != ACTOR_TOKEN_TYP:
            raise ServiceAuthError("wrong typ")
        # 5. the algorithm, pinned by configuration
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise ServiceAuthError("wrong alg")
        # 6. the key
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise ServiceAuthError("malformed token")
        key = await self._key(kid)
        if key is None and key_set is not None and self.adopt_key_set(key_set):
            key = self._keys.get(kid)
        if key is None:
            raise ServiceAuthError("unknown kid")
        if key.alg != alg:
            raise ServiceAuthError("wrong alg")
        # 7. the signature
        try:
            signature = b64url_decode(parts[2])
        except ValueError:
            raise ServiceAuthError("malformed token") from None
        if not key.verifies(signature, f"{parts[0]}.{parts[1]}".encode("ascii")):
            raise ServiceAuthError("bad signature")
        # 8. claim types, issuer, audience
        claims = _json_object(parts[1])
        _check_types(claims)
        if claims["iss"] != self.issuer:
            raise ServiceAuthError("wrong iss")
        if claims["aud"] != self.audience:
            raise ServiceAuthError("wrong aud")
        # 9. times
        now = self._clock()
        iat, nbf, exp = claims["iat"], claims["nbf"], claims["exp"]
        if exp <= now:
            raise ServiceAuthError("expired")
        if iat > now + self._leeway_s:
            raise ServiceAuthError("issued in the future")
        if nbf > now + self._leeway_s:
            raise ServiceAuthError("not yet valid")
        if exp - iat > self._max_ttl_s or exp <= iat:
            raise ServiceAuthError("lifetime too long")
        # 10. the actor
        try:
            principal = Principal.from_claims(claims["act"])
        except ValueError:
            raise ServiceAuthError("bad act claim") from None
        if principal.client_id != claims["sub"]:
            raise ServiceAuthError("sub does not match act")
        # 11. the call it was minted for
        if target is not None and claims["target"] != target:
            raise ServiceAuthError("wrong target")
        # 12. single use
        self._replay.remember(claims["jti"], exp, now)
        return VerifiedCall(principal, claims)

    def adopt_key_set(self, document: object) -> bool:
        """Replace the trusted keys with an endorsed key set if a key trusted now signed it; given a
        list (at most 64, oldest first, a chain), each in turn, so each link may vouch for the next.

        Steps: (1) bounded shape: a ``payload`` string and at most 16 ``signatures``; (2) the
        payload is a JSON object naming this service's issuer, an integer ``iat`` not before the
        last adopted set's (no rollback to an older set) nor beyond ``leeway_s`` in the future,
        and a key set that parses like a JWKS (no private keys, no duplicate kids, at least one
        usable key); (3) the first signature whose protected header has exactly ``alg``, ``kid``,
        ``typ`` (``portcullis-jwks+jws``) and names a key trusted *now* with that algorithm
        verifies over ``protected.payload``. Anything else leaves the keys unchanged (logged).
        Returns whether the keys changed.
        """
        if isinstance(document, list):
            if len(document) > MAX_KEY_SETS:
                logger.warning("gateway key set refused", extra={"fields": {"reason": "chain too long"}})
                return False
            return any([self.adopt_key_set(link) for link in document if not isinstance(link, list)])
        try:
            keys, iat, payload = self._endorsed(document)
        except ValueError as exc:
            logger.warning("gateway key set refused", extra={"fields": {"reason": str(exc)}})
            return False
        if payload == self._key_set_payload:
            return False
        self._keys, self._key_set_iat, self._key_set_payload = keys, iat, payload
        logger.info("gateway key set adopted", extra={"fields": {"kids": sorted(keys)}})
        return True

    def _endorsed(self, document: object) -> tuple[dict[str, _PublicKey], float, str]:
        if not isinstance(document, Mapping):
            raise ValueError("not an object")
        payload, signatures = document.get("payload"), document.get("signatures")
        if not isinstance(payload, str) or len(payload) > _MAX_KEY_SET_PAYLOAD:
            raise ValueError("bad payload")
        if not isinstance(signatures, list) or not 0 < len(signatures) <= _MAX_KEY_SET_SIGNATURES:
            raise ValueError("bad signatures")
        try:
            claims = _json_object(payload)
        except ServiceAuthError:
            raise ValueError("bad payload") from None
        iat, listed = claims.get("iat"), claims.get("keys")
        if claims.get("iss") != self.issuer:
            raise ValueError("wrong iss")
        if type(iat) is not int or iat < self._key_set_iat or iat > self._clock() + self._leeway_s:
            raise ValueError("stale or future iat")
        if not isinstance(listed, list) or len(listed) > _MAX_KEY_SET_KEYS:
            raise ValueError("bad keys")
        keys = parse_jwks({"keys": listed}, self._algorithms)
        if not keys:
            raise ValueError("no usable key")
        for entry in signatures:
            if not isinstance(entry, Mapping):
                continue
            protected, signature = entry.get("protected"), entry.get("signature")
            if not isinstance(protected, str) or not isinstance(signature, str) or len(protected) > _MAX_HEADER_CHARS:
                continue
            try:
                header = _json_object(protected)
                raw = b64url_decode(signature)
            except (ServiceAuthError, ValueError):
                continue
            kid = header.get("kid")
            trusted = self._keys.get(kid) if isinstance(kid, str) else None
            if (header.keys() != _HEADER_NAMES or header.get("typ") != KEY_SET_TYP or trusted is None
                    or header.get("alg") != trusted.alg):
                continue
            # one attempt per set: every signature of a genuine set verifies, so a set whose first
            # trusted signature does not is forged (and a hostile set costs one verification at most)
            if trusted.verifies(raw, f"{protected}.{payload}".encode("ascii")):
                return keys, iat, payload
            break
        raise ValueError("no signature by a trusted key")

    async def _key(self, kid: str) -> _PublicKey | None:
        source = self._source
        if source is None:
            return self._keys.get(kid)
        now = self._clock()
        fresh = now - self._fetched_at < self._jwks_max_age_s
        if (not fresh or kid not in self._keys) and now - self._attempted_at >= self._jwks_min_refresh_s:
            async with self._lock:
                if now - self._attempted_at >= self._jwks_min_refresh_s:  # another task may just have
                    self._attempted_at = now
                    await self._refresh(source, now)
        if now - self._fetched_at >= self._jwks_max_age_s:
            raise ServiceAuthError("jwks unavailable")
        return self._keys.get(kid)

    async def _refresh(self, source: Callable[[], Awaitable[Mapping[str, Any]]], now: float) -> None:
        try:
            self._keys = parse_jwks(await source(), self._algorithms)
        except Exception as exc:  # a foreign callable: any failure is "no fresh keys", logged
            logger.warning("jwks fetch failed", extra={"fields": {"error": type(exc).__name__}})
            return
        self._fetched_at = now


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = _DECODER.decode(b64url_decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):
        raise ServiceAuthError("malformed token") from None
    if not isinstance(value, dict):
        raise ServiceAuthError("malformed token")
    return value


def _check_types(claims: Mapping[str, Any]) -> None:
    for name in ("iss", "aud", "sub", "jti", "req", "tool", "target"):
        value = claims.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_CHARS:
            raise ServiceAuthError(f"bad {name} claim")
    for name in ("iat", "nbf", "exp"):
        if type(claims.get(name)) is not int:
            raise ServiceAuthError(f"bad {name} claim")
    if not 16 <= len(claims["jti"]) <= 64:
        raise ServiceAuthError("bad jti claim")
    if not isinstance(claims.get("act"), dict):
        raise ServiceAuthError("bad act claim")
    approval = claims.get("apv")
    if approval is not None and not (isinstance(approval, dict) and isinstance(approval.get("id"), str)
                                     and isinstance(approval.get("args"), str)):
        raise ServiceAuthError("bad apv claim")
