"""Gateway-minted actor tokens: one short-lived signed token per upstream call.

The client's own token never travels past the gateway (MCP "no token passthrough"). Instead the
forward stage asks :class:`TokenMinter` for a token that is good for exactly one call to exactly
one service, and the service kit (:mod:`portcullis.service.verify`) checks it.

A token is a compact JWS (RFC 7515) signed with Ed25519 (``EdDSA``, the default) or P-256
(``ES256``)::

    header  {"alg": "EdDSA", "kid": "<RFC 7638 thumbprint>", "typ": "portcullis-actor+jwt"}
    claims  {"iss": "portcullis://<gateway>",          who minted it
             "aud": "portcullis-service:<service>",    the one service that may accept it
             "sub": "<principal.client_id>",
             "iat": t, "nbf": t, "exp": t + ttl_s,      ttl_s <= 60
             "jti": "<128 random bits>",                single use: the service remembers it
             "req": "<gateway request id>",            joins the service's logs to the audit record
             "tool": "<exposed tool name>",            as the client named it (billing.get_invoice)
             "target": "<tool name at the service>",   what the service checks the call against
             "act": Principal.to_claims()}

``target`` goes beyond a bare actor token: it binds the token to the one tool the gateway
authorised, so a token cannot be spent on another tool of the same service.

**Key continuity.** A stdio child learns the gateway's keys once, at spawn. So that a child that
started late, or has not been restarted yet, never refuses a token signed by a key published
after it started, the minter signs each published key set with *every* key the gateway holds
then (current, previous still published, and pre-published), as a JWS in the JSON general
serialization::

    {"payload": b64url({"iss": "<issuer>", "iat": t, "keys": [<JWKS entries>]}),
     "signatures": [{"protected": b64url({"alg", "kid", "typ": "portcullis-jwks+jws"}), "signature": …}, …]}

One such set is made at every rotation (:meth:`TokenMinter.rotate`) and the last
``chain_length`` are kept, public halves and signatures only. Each set is signed by the key that
signed before it, so they form a chain: :meth:`TokenMinter.key_sets_for` picks the links a
child needs from the newest set it can verify with keys it already holds. They ride in a call's
``_meta`` (``io.portcullis/gateway-keys``) while the child may lack the signing key, and the kit
adopts each only if a key it trusts at that moment signed it
(:meth:`portcullis.service.verify.GatewayTokenVerifier.adopt_key_set`): trust only ever passes
from a trusted key to the keys it vouches for.

Keys live in a :class:`KeyRing`: the ``current`` key signs, ``previous`` keys stay published in
the JWKS for ``overlap_s`` after they were retired, so a token signed just before a rotation still
verifies; :meth:`KeyRing.jwks` publishes public halves only. The minting path does no I/O and no
key parsing: the private key object and the encoded header are built once per key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from portcullis.identity.principal import Principal

ACTOR_TOKEN_TYP = "portcullis-actor+jwt"  # noqa: S105 - a JOSE type name, not a secret
ACTOR_TOKEN_META_KEY = "io.portcullis/actor-token"  # noqa: S105 - the `_meta` key the token rides in on stdio
KEY_SET_TYP = "portcullis-jwks+jws"  # the endorsed key set's JOSE type
GATEWAY_KEYS_META_KEY = "io.portcullis/gateway-keys"  # the `_meta` key an endorsed key set rides in
ALGORITHMS = ("EdDSA", "ES256")
MAX_TTL_S = 60
MAX_CLAIM_CHARS = 256  # req, tool, target, aud
MAX_KEY_SETS = 64  # endorsed key sets kept, and accepted by the kit in one call

Clock = Callable[[], float]
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def gateway_issuer(gateway_name: str) -> str:
    """The ``iss`` of tokens minted by the gateway called ``gateway_name``."""
    return f"portcullis://{gateway_name}"


def service_audience(service: str) -> str:
    """The ``aud`` of tokens for the service called ``service`` in ``gateway.yaml``."""
    return f"portcullis-service:{service}"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: the JOSE alphabet only, no padding. Raises ValueError."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(key: PrivateKey) -> dict[str, str]:
    """The public half of ``key`` as a bare JWK (no kid, use or alg)."""
    if isinstance(key, Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big"))}


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url): the same key gets the same kid on every replica."""
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing key: its id, algorithm, private key object and when it was made or retired."""

    kid: str
    alg: str
    private_key: PrivateKey = field(repr=False)
    created_at: float
    retired_at: float | None = None
    public: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        expected = "EdDSA" if isinstance(self.private_key, Ed25519PrivateKey) else "ES256"
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey) and not isinstance(
            self.private_key.curve, ec.SECP256R1
        ):
            raise ValueError("EC signing keys must be on P-256")
        if self.alg != expected:
            raise ValueError(f"a {expected} key cannot sign {self.alg}")
        object.__setattr__(self, "public", MappingProxyType(public_jwk(self.private_key)))

    @classmethod
    def generate(cls, alg: str = "EdDSA", *, now: float) -> SigningKey:
        """A fresh key made in memory (the embedded default; lost on restart)."""
        if alg == "EdDSA":
            key: PrivateKey = Ed25519PrivateKey.generate()
        elif alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"unsupported algorithm {alg!r}; use one of {ALGORITHMS}")
        return cls(jwk_thumbprint(public_jwk(key)), alg, key, now)

    @classmethod
    def from_pem(cls, pem: bytes, *, now: float, kid: str | None = None) -> SigningKey:
        """Load an unencrypted PKCS#8 PEM private key (Ed25519 or P-256).

        The caller resolves ``secret://`` references and passes the bytes. Without ``kid`` the
        RFC 7638 thumbprint is used, so every replica loading the same file agrees on it.
        """
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("signing keys must be Ed25519 or EC P-256")
        alg = "EdDSA" if isinstance(key, Ed25519PrivateKey) else "ES256"
        return cls(kid or jwk_thumbprint(public_jwk(key)), alg, key, now)

    def sign(self, data: bytes) -> bytes:
        """The JWS signature over ``data`` (ES256 as raw r || s, not DER)."""
        if isinstance(self.private_key, Ed25519PrivateKey):
            return self.private_key.sign(data)
        r, s = decode_dss_signature(self.private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def published(self) -> dict[str, str]:
        """The JWKS entry: public members plus kid, use and alg. Never ``d``."""
        return {**self.public, "kid": self.kid, "use": "sig", "alg": self.alg}


class KeyRing:
    """Signing keys with overlapping validity.

    ``keys[0]`` is current and signs; the others are previous keys, published until ``overlap_s``
    after their retirement and then dropped. ``overlap_s`` must cover the longest token lifetime
    plus the services' JWKS cache age, so no valid token outlives its key's publication.
    At most ``max_keys`` keys are kept; past that the oldest previous key goes first.
    """

    def __init__(self, keys: Sequence[SigningKey], *, clock: Clock = time.time, overlap_s: float = 600.0,
                 max_keys: int = 4, upcoming: Sequence[SigningKey] = ()) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        if overlap_s < MAX_TTL_S:
            raise ValueError(f"overlap_s must be at least the longest token lifetime ({MAX_TTL_S} s)")
        if max_keys < 2:
            raise ValueError("max_keys must allow a current and a previous key")
        if len({key.kid for key in keys}) != len(keys):
            raise ValueError("key ids must be unique")
        now = clock()
        self._clock, self._overlap_s, self._max_keys = clock, overlap_s, max_keys
        current, *previous = keys
        self._lock = threading.Lock()
        # Pre-published keys: in the JWKS before they sign, so a service that read the JWKS once (a
        # stdio child reads it at spawn) still verifies tokens after that many rotations.
        self._upcoming: tuple[SigningKey, ...] = tuple(upcoming)
        self._keys: tuple[SigningKey, ...] = self._live((
            replace(current, retired_at=None),
            *(key if key.retired_at is not None else replace(key, retired_at=now) for key in previous),
        ), now)

    @classmethod
    def generate(cls, alg: str = "EdDSA", *, clock: Clock = time.time, overlap_s: float = 600.0,
                 max_keys: int = 4, upcoming: int = 0) -> KeyRing:
        """A ring of in-memory keys (one process, no key files), with ``upcoming`` keys pre-published."""
        now = clock()
        return cls([SigningKey.generate(alg, now=now)], clock=clock, overlap_s=overlap_s, max_keys=max_keys,
                   upcoming=[SigningKey.generate(alg, now=now) for _ in range(upcoming)])

    @classmethod
    def from_pem(cls, pems: Sequence[bytes], *, clock: Clock = time.time, overlap_s: float = 600.0,
                 max_keys: int = 4) -> KeyRing:
        """A ring from PEM files: the first signs, the rest are previous keys still published."""
        now = clock()
        return cls([SigningKey.from_pem(pem, now=now) for pem in pems], clock=clock, overlap_s=overlap_s,
                   max_keys=max_keys)

    @property
    def current(self) -> SigningKey:
        """The key that signs new tokens."""
        return self._keys[0]

    @property
    def upcoming(self) -> tuple[SigningKey, ...]:
        """Pre-published keys, next to sign first."""
        return self._upcoming

    @property
    def previous(self) -> tuple[SigningKey, ...]:
        """Retired keys still published, newest first."""
        return self._live(self._keys, self._clock())[1:]

    def rotate(self, now: float | None = None) -> SigningKey:
        """Make a new current key (same algorithm), retire the old one, drop keys past overlap."""
        with self._lock:
            now = self._clock() if now is None else now
            keys = self._keys
            if self._upcoming:  # promote the oldest pre-published key; publish a new one behind it
                new, self._upcoming = self._upcoming[0], (*self._upcoming[1:], SigningKey.generate(keys[0].alg,
                                                                                                   now=now))
            else:
                new = SigningKey.generate(keys[0].alg, now=now)
            # One assignment: a concurrent reader sees the old ring or the new one, never a mix.
            self._keys = self._live((new, replace(keys[0], retired_at=now), *keys[1:]), now)
            return new

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set to publish: public keys of the current and previous keys only."""
        return {"keys": [key.published() for key in self.held()]}

    def held(self) -> tuple[SigningKey, ...]:
        """Every key the ring publishes: current, previous still within overlap, pre-published."""
        with self._lock:  # rotate() changes keys and upcoming together
            keys, upcoming = self._keys, self._upcoming
        return (*self._live(keys, self._clock()), *upcoming)

    def _live(self, keys: tuple[SigningKey, ...], now: float) -> tuple[SigningKey, ...]:
        """``keys`` without previous keys past their overlap or beyond ``max_keys``. Pure."""
        live = [key for key in keys[1:] if key.retired_at is not None and now < key.retired_at + self._overlap_s]
        return (keys[0], *live[: self._max_keys - 1])


@dataclass(frozen=True, slots=True)
class EndorsedKeys:
    """The published key set signed by every held key (see the module docstring), and which keys it names.

    ``current_kid`` is the key signing tokens when it was made; ``kids`` every key in it."""

    current_kid: str
    kids: frozenset[str]
    document: dict[str, Any]  # never changed after it is made; shared by every call that carries it


class TokenMinter:
    """Signs actor tokens for single upstream calls.

    Args:
        keyring: the keys; the ring's current key signs each token.
        issuer: this gateway's issuer id, normally :func:`gateway_issuer` of its name.
        ttl_s: token lifetime, 1 to 60 seconds. Short: a token is for one call about to be made.
        clock: seconds since the epoch; injected so tests need no sleeps.
    """

    def __init__(self, keyring: KeyRing, *, issuer: str, ttl_s: int = 30, clock: Clock = time.time,
                 chain_length: int = 64) -> None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be a whole number of seconds from 1 to {MAX_TTL_S}")
        if not 1 <= chain_length <= MAX_KEY_SETS:
            raise ValueError(f"chain_length must be 1 to {MAX_KEY_SETS}")
        _check_claim("issuer", issuer)
        self._ring, self._issuer, self._ttl_s, self._clock = keyring, issuer, ttl_s, clock
        self._headers: dict[str, str] = {}
        self._endorsed_for: tuple[str, ...] = ()
        self._chain: deque[EndorsedKeys] = deque(maxlen=chain_length)  # oldest first
        self.endorsed_keys()

    @property
    def issuer(self) -> str:
        return self._issuer

    def rotate(self) -> SigningKey:
        """Rotate the ring and endorse the new key set at once (so the chain has no gap)."""
        key = self._ring.rotate()
        self.endorsed_keys()
        return key

    def key_sets_for(self, known: frozenset[str]) -> list[EndorsedKeys] | None:
        """What a service holding the keys ``known`` needs to verify tokens signed now: ``None`` if it
        has the signing key, else the endorsed key sets from the newest one signed by a key it
        holds, oldest first (just the newest when it holds none of them: it cannot catch up and
        must be restarted)."""
        latest = self.endorsed_keys()
        if latest.current_kid in known:
            return None
        chain = list(self._chain)
        for index in range(len(chain) - 1, -1, -1):
            if chain[index].kids & known:
                return chain[index:]
        return [latest]

    def endorsed_keys(self) -> EndorsedKeys:
        """The published key set, signed by every held key; remade only when the ring has rotated.

        Cheap on the call path: a cached object unless the current or a pre-published key changed
        (about 50 µs per held key to re-sign, once per rotation)."""
        ring = self._ring
        marker = (ring.current.kid, *(key.kid for key in ring.upcoming))
        if self._chain and marker == self._endorsed_for:
            return self._chain[-1]
        held = ring.held()
        payload = _encode({"iss": self._issuer, "iat": int(self._clock()),
                           "keys": [key.published() for key in held]})
        signatures = []
        for key in held:
            protected = _encode({"alg": key.alg, "kid": key.kid, "typ": KEY_SET_TYP})
            signature = key.sign(f"{protected}.{payload}".encode("ascii"))
            signatures.append({"protected": protected, "signature": b64url(signature)})
        endorsed = EndorsedKeys(held[0].kid, frozenset(key.kid for key in held),
                                {"payload": payload, "signatures": signatures})
        self._chain.append(endorsed)
        self._endorsed_for = marker
        return endorsed

    def mint(self, principal: Principal, *, audience: str, request_id: str, tool: str, target: str,
             approval: dict[str, Any] | None = None) -> str:
        """A token for one call of ``target`` (``tool`` as the client named it) at ``audience``.

        ``approval`` (``{"id", "args", "by"}``: the approval id, the canonical-argument hash it
        binds, the approvers' user ids) goes in the ``apv`` claim of a call that runs on a human
        approval, so the service kit can tell it from a call that skipped one."""
        for name, value in (("audience", audience), ("request_id", request_id), ("tool", tool), ("target", target)):
            _check_claim(name, value)
        key = self._ring.current
        header = self._headers.get(key.kid)
        if header is None:
            header = self._headers[key.kid] = _encode({"alg": key.alg, "kid": key.kid, "typ": ACTOR_TOKEN_TYP})
            if len(self._headers) > 16:  # rotated-away keys; keep the cache bounded
                self._headers = {key.kid: header}
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "aud": audience,
            "sub": principal.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl_s,
            "jti": b64url(os.urandom(16)),
            "req": request_id,
            "tool": tool,
            "target": target,
            "act": principal.to_claims(),
        }
        if approval is not None:
            claims["apv"] = approval
        signing_input = f"{header}.{_encode(claims)}"
        return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def _encode(obj: Mapping[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _check_claim(name: str, value: object) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_CHARS:
        raise ValueError(f"{name} must be a string of 1 to {MAX_CLAIM_CHARS} characters")
