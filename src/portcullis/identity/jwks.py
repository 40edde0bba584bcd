"""The public keys of one issuer, by ``kid``, fetched and cached safely.

Contract:

- Keys come only from the issuer's configured source — a JWK Set file, a JWK Set URL, or OIDC
  discovery (whose ``issuer`` must equal the configured one exactly). Nothing in a token ever
  names a URL, a file or a query: ``kid`` is an opaque map key (≤ 128 printable ASCII characters).
- Only public signature keys are kept: symmetric (``kty: oct``) and private JWKs, keys for other
  uses, unsupported curves and RSA keys under 2048 bits are ignored. Each key is parsed once into
  a ``cryptography`` object and remembers the algorithms of its family (narrowed by the JWK's own
  ``alg``), so an RSA key never verifies an ES256 token and no key is ever an HMAC secret.
- A known ``kid`` is a dictionary lookup. An unknown one refreshes the set at most once per
  ``jwks_min_refresh_s``; concurrent misses share one fetch (single flight).
- A failed refresh keeps the previous keys until ``jwks_max_age_s`` after their last successful
  fetch; then they are dropped and every lookup answers ``None`` (fail closed). :meth:`JwksCache.
  keep_fresh` refreshes ahead of that in the background so an outage is survivable at all.
- HTTP goes through an injected ``fetch(url) -> bytes``; :class:`HttpsFetcher` is the default
  (:func:`~portcullis.identity.bounded_http.bounded_request`: https only, http only to loopback, no
  redirects, 5 s, 256 KiB). Errors are translated to
  :class:`JwksUnavailable` here; nothing above sees an HTTP library's exceptions.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, SECP384R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from portcullis.errors import PortcullisError
from portcullis.identity.bounded_http import bounded_request, url_allowed
from portcullis.identity.issuers import IssuerConfig

log = logging.getLogger("portcullis.identity")

Fetcher = Callable[[str], Awaitable[bytes]]
PublicKey = EllipticCurvePublicKey | RSAPublicKey | Ed25519PublicKey | Ed448PublicKey

MAX_JWKS_BYTES = 256 * 1024
MAX_KID_CHARS = 128
_KID = re.compile(rf"[\x20-\x7e]{{1,{MAX_KID_CHARS}}}")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_REFRESH_DEADLINE_S = 10.0  # discovery + key set together; a hung endpoint cannot hold the lock longer


class JwksUnavailable(PortcullisError):
    """The key set could not be fetched or parsed (operator detail in ``detail``)."""

    message = "key set unavailable"


def valid_kid(kid: object) -> bool:
    """True for a ``kid`` usable as a map key: a string of 1 to 128 printable ASCII characters."""
    return isinstance(kid, str) and _KID.fullmatch(kid) is not None


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One parsed public key and the algorithms it may verify."""

    kid: str | None
    key: PublicKey
    algorithms: frozenset[str]


# --------------------------------------------------------------------------- parsing


def _family(jwk: Mapping[str, Any]) -> tuple[PublicKey, frozenset[str]] | None:
    """The public key and its algorithm family, or None for anything not a usable public key."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and crv in ("P-256", "P-384"):
        key: Any = ECAlgorithm.from_jwk(dict(jwk))
        if not isinstance(key, EllipticCurvePublicKey):
            return None
        expected = SECP256R1 if crv == "P-256" else SECP384R1
        if not isinstance(key.curve, expected):
            return None
        return key, frozenset({"ES256" if crv == "P-256" else "ES384"})
    if kty == "RSA":
        key = RSAAlgorithm.from_jwk(dict(jwk))
        if not isinstance(key, RSAPublicKey) or key.key_size < _MIN_RSA_BITS:
            return None
        return key, frozenset({"RS256", "PS256"})
    if kty == "OKP" and crv in ("Ed25519", "Ed448"):
        key = OKPAlgorithm.from_jwk(dict(jwk))
        if not isinstance(key, Ed25519PublicKey | Ed448PublicKey):
            return None
        return key, frozenset({"EdDSA"})
    return None  # oct (symmetric), unsupported curves and key types


def parse_jwks(raw: bytes) -> dict[str | None, VerificationKey]:
    """Usable public signature keys of a JWK Set, by kid (None for kid-less keys).

    A kid that appears twice is ambiguous, so both keys are dropped. Raises
    :class:`JwksUnavailable` if the document is not a JWK Set or holds no usable key.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise JwksUnavailable(detail="key set is not JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise JwksUnavailable(detail="key set has no 'keys' list")
    keys: dict[str | None, VerificationKey] = {}
    ambiguous: set[str | None] = set()
    for jwk in entries:
        if not isinstance(jwk, dict) or not _PRIVATE_MEMBERS.isdisjoint(jwk):
            continue  # private or symmetric material is never used
        if jwk.get("use", "sig") != "sig":
            continue
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        kid = jwk.get("kid")
        if kid is not None and not valid_kid(kid):
            continue
        try:
            parsed = _family(jwk)
        except (PyJWTError, ValueError, TypeError, KeyError):
            parsed = None
        if parsed is None:
            continue
        key, algorithms = parsed
        if "alg" in jwk:
            algorithms = algorithms & {jwk["alg"]} if isinstance(jwk["alg"], str) else frozenset()
            if not algorithms:
                continue
        if kid in keys:
            ambiguous.add(kid)
        keys[kid] = VerificationKey(kid, key, algorithms)
    for kid in ambiguous:
        del keys[kid]
    if not keys:
        raise JwksUnavailable(detail="key set holds no usable public signature key")
    return keys


# --------------------------------------------------------------------------- fetching


class HttpsFetcher:
    """The default fetcher: one GET, https (or loopback http), no redirects, bounded time and size."""

    def __init__(self, *, timeout_s: float = 5.0, max_bytes: int = MAX_JWKS_BYTES,
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._transport = transport  # a MockTransport in tests

    async def __call__(self, url: str) -> bytes:
        return await bounded_request("GET", url, what="key set fetch", error=JwksUnavailable,
                                     timeout_s=self._timeout_s, max_bytes=self._max_bytes, transport=self._transport)


# --------------------------------------------------------------------------- the cache


class JwksCache:
    """Keys of one issuer by kid. ``clock`` returns Unix seconds (injected for tests)."""

    def __init__(self, config: IssuerConfig, *, fetch: Fetcher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._fetch = fetch or HttpsFetcher()
        self._clock = clock
        self._keys: dict[str | None, VerificationKey] = {}
        self._fetched_at: float | None = None  # last successful refresh
        self._attempted_at: float | None = None  # last refresh attempt, successful or not
        self._attempts = 0  # generation counter for single flight
        self._lock = anyio.Lock()

    @property
    def refresh_interval_s(self) -> float:
        """How often :meth:`keep_fresh` refreshes: four chances before the keys would expire."""
        return max(self._config.jwks_min_refresh_s, self._config.jwks_max_age_s / 4)

    async def get_key(self, kid: str | None) -> VerificationKey | None:
        """The key for ``kid`` (or the only key, when ``kid`` is None), refreshing on a miss."""
        key = self._lookup(kid)
        if key is not None:
            return key
        await self._refresh_on_miss()
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> VerificationKey | None:
        if self._fetched_at is not None and self._clock() - self._fetched_at >= self._config.jwks_max_age_s:
            if self._keys:
                log.warning("key set expired; keys dropped", extra={"fields": {"issuer": self._config.name}})
            self._keys = {}  # fail closed: stale keys are never used
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh_on_miss(self) -> None:
        generation = self._attempts
        async with self._lock:
            if self._attempts != generation:
                return  # another task refreshed while this one waited: share its result
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._config.jwks_min_refresh_s:
                return  # the floor: unknown kids cannot make the gateway hammer the AS
            try:
                await self._refresh_locked()
            except JwksUnavailable as exc:
                log.warning("key set refresh failed", extra={"fields": {
                    "issuer": self._config.name, "reason": exc.detail}})

    async def refresh(self) -> None:
        """Fetch the key set now (at start-up, or on a schedule). Raises :class:`JwksUnavailable`."""
        async with self._lock:
            await self._refresh_locked()

    async def keep_fresh(self, *, sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        """Refresh every :attr:`refresh_interval_s` forever; run it in the gateway's task group."""
        while True:
            await sleep(self.refresh_interval_s)
            try:
                await self.refresh()
            except JwksUnavailable as exc:
                log.warning("key set refresh failed", extra={"fields": {
                    "issuer": self._config.name, "reason": exc.detail}})

    async def _refresh_locked(self) -> None:
        self._attempts += 1
        self._attempted_at = self._clock()
        try:
            with anyio.fail_after(_REFRESH_DEADLINE_S):
                raw = await self._read_source()
        except TimeoutError:
            raise JwksUnavailable(detail="key set refresh timed out") from None
        keys = parse_jwks(raw)
        self._keys = keys
        self._fetched_at = self._clock()

    async def _read_source(self) -> bytes:
        cfg = self._config
        if cfg.jwks_file is not None:
            return await _read_file(cfg.jwks_file)
        if cfg.jwks_url is not None:
            return await self._fetch_translated(cfg.jwks_url)
        if cfg.discovery_url is not None:
            return await self._fetch_translated(await self._discover(cfg.discovery_url))
        raise JwksUnavailable(detail="issuer has no key source")  # IssuerConfig rules this out

    async def _discover(self, url: str) -> str:
        try:
            doc = json.loads(await self._fetch_translated(url))
        except (ValueError, RecursionError):
            raise JwksUnavailable(detail="discovery document is not JSON") from None
        if not isinstance(doc, dict):
            raise JwksUnavailable(detail="discovery document is not an object")
        if doc.get("issuer") != self._config.issuer:
            raise JwksUnavailable(detail="discovery 'issuer' differs from the configured issuer")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not url_allowed(jwks_uri):
            raise JwksUnavailable(detail="discovery 'jwks_uri' missing or not https")
        return jwks_uri

    async def _fetch_translated(self, url: str) -> bytes:
        try:
            raw = await self._fetch(url)
        except JwksUnavailable:
            raise
        except Exception as exc:  # a custom fetcher's errors are translated here, at the boundary
            raise JwksUnavailable(detail=f"key set fetch failed: {type(exc).__name__}") from None
        if len(raw) > MAX_JWKS_BYTES:
            raise JwksUnavailable(detail="key set larger than the size cap")
        return raw


async def _read_file(path: str) -> bytes:
    try:
        file = anyio.Path(path)
        if (await file.stat()).st_size > MAX_JWKS_BYTES:
            raise JwksUnavailable(detail="key set file larger than the size cap")
        return await file.read_bytes()
    except OSError as exc:
        raise JwksUnavailable(detail=f"key set file unreadable: {type(exc).__name__}") from None
