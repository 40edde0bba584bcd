"""Bearer-token verification: the gateway as an OAuth 2.1 resource server.

:meth:`BearerVerifier.verify` turns an access token into a :class:`VerifiedToken` or raises
:class:`InvalidToken`. The checks are numbered steps below and run in this order; every one fails
closed. Nothing the token says is trusted until its signature has been verified with a key the
configuration chose: the header only *selects* among configured keys and pinned algorithms, and
``iss`` only selects the issuer's key set before being checked again after the signature.

``InvalidToken.reason_code`` is a short fixed string for the operator log; the client only ever
sees ``invalid_token``. Neither the token nor any part of it appears in an exception or a log.
Time claims are checked against the injected clock (PyJWT's own would read the wall clock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt
from jwt.types import Options

from portcullis.errors import PortcullisError
from portcullis.identity.claims import ClaimRejected, scope_list
from portcullis.identity.issuers import IssuerConfig, normalise_typ
from portcullis.identity.jwks import JwksCache, valid_kid


class InvalidToken(PortcullisError):
    """401: the token is missing, malformed, forged, expired or not meant for this gateway."""

    status, message = 401, "invalid_token"

    def __init__(self, reason_code: str) -> None:
        super().__init__(detail=reason_code)
        self.reason_code = reason_code  # operator log only


class InsufficientScope(PortcullisError):
    """403: the token is valid but lacks a scope the call needs."""

    status, message = 403, "insufficient_scope"

    def __init__(self, required_scopes: Sequence[str]) -> None:
        self.required_scopes = tuple(required_scopes)
        super().__init__(detail="missing scope: " + " ".join(self.required_scopes))


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified access token says about its caller."""

    issuer_name: str
    subject: str
    scopes: tuple[str, ...]
    claims: Mapping[str, Any]
    jti: str | None
    expires_at: int
    token_id_hash: str  # sha256 of the token, for correlating log lines without the token itself

    def require_scopes(self, *required: str) -> None:
        """Raise :class:`InsufficientScope` (listing every required scope) unless all are granted."""
        if not set(required).issubset(self.scopes):
            raise InsufficientScope(required)


def _json_object(segment: str) -> dict[str, Any]:
    """One base64url JSON segment that must be an object, else the token is malformed."""
    try:
        value = _b64json(segment)
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidToken("malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Header members that point at keys or change the processing rules; never fetched, never used.
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit", "b64"})
_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "bad_signature"),  # before DecodeError, its base class
    (jwt.InvalidAlgorithmError, "alg_not_allowed"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "unknown_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidKeyError, "bad_key"),
    (jwt.DecodeError, "malformed"),
)


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _number(value: Any) -> float | None:
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    return None


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """Scopes from ``scope`` (space separated, RFC 8693/9068) or ``scp`` (a list, or a string),
    checked as the claim mapping checks every list claim (:func:`~portcullis.identity.claims.scope_list`)."""
    try:
        return scope_list(claims)
    except ClaimRejected as exc:
        raise InvalidToken(exc.reason) from None


@dataclass(frozen=True, slots=True)
class _Issuer:
    """An issuer's configuration with everything per-call precomputed."""

    config: IssuerConfig
    cache: JwksCache
    algorithms: frozenset[str]
    allowed_typ: frozenset[str]
    alg_lists: Mapping[str, list[str]]
    options: Options


def _prepare(config: IssuerConfig, cache: JwksCache) -> _Issuer:
    # exp / nbf / iat are checked in step 5 against the injected clock instead of PyJWT's wall clock.
    options = Options(require=list(config.required_claims), verify_exp=False, verify_nbf=False,
                      verify_iat=False, enforce_minimum_key_length=True)
    return _Issuer(config, cache, frozenset(config.algorithms), config.allowed_typ_normalised,
                   {alg: [alg] for alg in config.algorithms}, options)


class BearerVerifier:
    """Verifies access tokens from the configured issuers. ``clock`` returns Unix seconds."""

    def __init__(self, issuers: Sequence[IssuerConfig], caches: Mapping[str, JwksCache], *,
                 clock: Callable[[], float] = time.time) -> None:
        if not issuers:
            raise ValueError("at least one trusted issuer is required")
        self._by_iss: dict[str, _Issuer] = {}
        for cfg in issuers:
            if cfg.issuer in self._by_iss or any(i.config.name == cfg.name for i in self._by_iss.values()):
                raise ValueError(f"issuer {cfg.name!r} is configured twice")
            if cfg.name not in caches:
                raise ValueError(f"no key cache for issuer {cfg.name!r}")
            self._by_iss[cfg.issuer] = _prepare(cfg, caches[cfg.name])
        self._any_alg = frozenset().union(*(i.algorithms for i in self._by_iss.values()))
        self._max_chars = max(cfg.max_token_bytes for cfg in issuers)
        self._clock = clock

    async def verify(self, token: str) -> VerifiedToken:
        """The verified token, or :class:`InvalidToken` with a reason code for the operator log."""
        # (1) Shape before any parsing: a size cap, three non-empty base64url segments. An empty
        #     signature ("header.payload.") never reaches a verifier.
        if not isinstance(token, str):
            raise InvalidToken("malformed")
        if len(token) > self._max_chars:
            raise InvalidToken("too_large")
        if _SHAPE.fullmatch(token) is None:
            raise InvalidToken("malformed")
        header_b64, payload_b64, _ = token.split(".")

        # (2) The header, not trusted: it may only pick among what the configuration allows.
        #     alg is compared case-sensitively with pinned asymmetric algorithms, so none / None /
        #     HS256 (key confusion, blank secrets) are rejected here; key-carrying and
        #     rule-changing members are rejected outright; kid is an opaque, bounded map key.
        header = _json_object(header_b64)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._any_alg:
            raise InvalidToken("alg_not_allowed")
        if not _FORBIDDEN_HEADERS.isdisjoint(header):
            raise InvalidToken("header_not_allowed")
        kid = header.get("kid")
        if kid is not None and not valid_kid(kid):
            raise InvalidToken("bad_kid")
        typ = header.get("typ")

        # (3) The issuer, chosen by the unverified iss only to select its key set and rules;
        #     PyJWT compares iss with the configured string again after the signature (step 5).
        payload = _json_object(payload_b64)
        iss = payload.get("iss")
        if iss is None:
            raise InvalidToken("missing_claim")
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise InvalidToken("unknown_issuer")
        cfg = issuer.config
        if len(token) > cfg.max_token_bytes:
            raise InvalidToken("too_large")
        if alg not in issuer.algorithms:
            raise InvalidToken("alg_not_allowed")
        if typ is not None and (not isinstance(typ, str) or normalise_typ(typ) not in issuer.allowed_typ):
            raise InvalidToken("typ_not_allowed")

        # (4) The key, by kid from that issuer's configured set only (no kid: the set's only key).
        #     Its family must cover alg: an RSA key never checks ES256, no key is an HMAC secret.
        key = await issuer.cache.get_key(kid)
        if key is None:
            raise InvalidToken("unknown_kid")
        if alg not in key.algorithms:
            raise InvalidToken("key_alg_mismatch")

        # (5) Signature with the pinned algorithm, then aud (the gateway's canonical URI), exact
        #     iss and required claims; then exp / nbf / iat against our clock with the leeway.
        #     Zero or out-of-range ECDSA r, s fail in cryptography's verifier.
        try:
            claims = jwt.decode(token, key.key, algorithms=issuer.alg_lists[alg], audience=cfg.audience,
                                issuer=cfg.issuer, leeway=cfg.leeway_s, options=issuer.options)
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        except (ValueError, TypeError, OverflowError):
            raise InvalidToken("malformed") from None
        now, leeway = self._clock(), cfg.leeway_s
        exp = _number(claims.get("exp"))
        if exp is None:
            raise InvalidToken("bad_claim")
        if exp <= now - leeway:
            raise InvalidToken("expired")
        for name, reason in (("nbf", "nbf_in_future"), ("iat", "iat_in_future")):
            if name in claims:
                value = _number(claims[name])
                if value is None:
                    raise InvalidToken("bad_claim")
                if value > now + leeway:
                    raise InvalidToken(reason)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("missing_claim")

        # (6) The caller, as the rest of the gateway sees it.
        jti = claims.get("jti")
        return VerifiedToken(
            issuer_name=cfg.name,
            subject=subject,
            scopes=_scopes(claims),
            claims=MappingProxyType(claims),
            jti=jti if isinstance(jti, str) else None,
            expires_at=int(exp),
            token_id_hash=hashlib.sha256(token.encode("ascii")).hexdigest()[:32],
        )


def _reason(exc: jwt.PyJWTError) -> str:
    for kind, reason in _PYJWT_REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid"
