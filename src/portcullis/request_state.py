"""The gateway's sealed ``requestState`` for an upstream's 2026-07-28 ``input_required`` result.

An upstream that needs input from the caller answers ``input_required`` with its own
``requestState``, which the caller must send back on its retry. An upstream seals that state (if it
does) for the principal it sees, which is the gateway (pitfall P5): passed through as it is, one
caller could resume another caller's state, or retry it against other arguments. So the caller never
sees the upstream's state: it gets an AEAD envelope (AES-256-GCM) that holds it, sealed with a key
derived (HKDF-SHA256) from the key that seals 2025-era session ids (``sessions.key_ref``; without
one, a per-process random key, as for sessions), and bound to

* the caller's principal key, the method, the target (exposed tool name, prompt name or resource
  URI), the service, and a digest of the call's params without ``_meta``, ``inputResponses`` and
  ``requestState`` (so the retry must be the same call);
* an expiry (:data:`TTL_S`), the round number (at most :data:`MAX_ROUNDS` rounds per call), and the
  input keys asked (``inputResponses`` may only answer those);
* the upstream's own ``requestState`` (opaque, at most :data:`MAX_UPSTREAM_STATE_CHARS`).

The envelope starts with :data:`PREFIX`, which neither an approval's signed state (``apr_…``) nor a
session id (``pcs1.``) does, so the dispatcher never confuses them. Opening a forged, tampered,
truncated, expired, foreign-caller or other-call envelope raises one :class:`RequestStateRefused`
(-32602, one fixed message) whatever the cause; the precise reason (:data:`REASONS`) is on the
exception for the audit record only. Pure: the clock is injected, and nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portcullis.errors import InvalidParams

PREFIX = "pcr1."
_AAD = b"portcullis/request-state/v1"
_INFO = b"portcullis/request-state/v1"  # HKDF info: this key seals nothing else
_NONCE_BYTES = 12
TTL_S = 600
MAX_ROUNDS = 8
MAX_STATE_CHARS = 16 * 1024  # the sealed envelope a caller may send back
MAX_UPSTREAM_STATE_CHARS = 8 * 1024
MAX_INPUT_KEYS = 16
MAX_INPUT_KEY_CHARS = 128
MAX_RESPONSES_BYTES = 256 * 1024
MESSAGE = "Invalid params: requestState is not valid for this request"
#: the precise, internal reasons (audit record and log only; the caller always gets MESSAGE)
REASONS = ("foreign_format", "too_large", "not_base64", "unauthentic", "malformed", "expired", "other_principal",
           "other_method", "other_target", "other_service", "other_params", "too_many_rounds", "unknown_input_key",
           "responses_too_large", "responses_malformed")
_STRIPPED = frozenset({"_meta", "inputResponses", "requestState"})


class RequestStateRefused(InvalidParams):
    """A ``requestState`` (or the ``inputResponses`` with it) the gateway will not resume: one message
    for every cause; ``reason`` (one of :data:`REASONS`) is for the audit record only."""

    def __init__(self, reason: str) -> None:
        super().__init__(MESSAGE, detail=f"requestState refused: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Binding:
    """What one sealed state is bound to: who, which call, where."""

    principal_key: str
    method: str  # tools/call | resources/read | prompts/get
    target: str  # the exposed tool name, prompt name or resource URI
    service: str
    params_digest: str  # params_digest() of the call's params


@dataclass(frozen=True, slots=True)
class Opened:
    """What an envelope gives back on a genuine retry: the upstream's state and where the call is."""

    upstream_state: str | None
    round: int
    keys: tuple[str, ...]  # the input keys asked in that round


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``params`` without ``_meta``, ``inputResponses`` and ``requestState``."""
    kept = {k: v for k, v in params.items() if k not in _STRIPPED}
    try:
        return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except TypeError:
        raise InvalidParams("Invalid params") from None


def derive_key(secret: bytes) -> bytes:
    """The request-state key derived from a session key (HKDF-SHA256, its own ``info``)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


def is_sealed_state(value: Any) -> TypeGuard[str]:
    """Whether ``value`` claims to be one of these envelopes (checked only when opened)."""
    return isinstance(value, str) and value.startswith(PREFIX)


class RequestStateSealer:
    """Seals and opens request states. ``secrets``: the session keys (first seals, all open);
    ``clock`` returns Unix seconds (injected for tests)."""

    def __init__(self, secrets: Sequence[bytes], *, clock: Callable[[], float], ttl_s: int = TTL_S,
                 max_rounds: int = MAX_ROUNDS) -> None:
        if not secrets:
            raise ValueError("at least one key is required")
        self._aeads = [AESGCM(derive_key(secret)) for secret in secrets]
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_rounds = max_rounds

    def seal(self, binding: Binding, *, upstream_state: str | None, keys: Sequence[str], round_: int) -> str:
        """The envelope for round ``round_`` (1 for the first ``input_required`` of a call)."""
        if upstream_state is not None and len(upstream_state) > MAX_UPSTREAM_STATE_CHARS:
            raise ValueError("upstream requestState too large")
        if round_ > self.max_rounds:
            raise RequestStateRefused("too_many_rounds")
        payload = {"p": binding.principal_key, "m": binding.method, "t": binding.target, "s": binding.service,
                   "d": binding.params_digest, "exp": int(self._clock()) + self.ttl_s, "r": round_,
                   "k": list(keys), "u": upstream_state}
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[0].encrypt(nonce, orjson.dumps(payload), _AAD)
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, state: Any, binding: Binding, responses: Any) -> Opened:
        """The upstream state of a genuine retry of this very call by this caller, or
        :class:`RequestStateRefused` (one message for every cause)."""
        data = self._decrypt(state)
        try:
            expires, round_, keys, upstream = int(data["exp"]), data["r"], data["k"], data["u"]
            bound = (data["p"], data["m"], data["t"], data["s"], data["d"])
        except (KeyError, TypeError, ValueError):
            raise RequestStateRefused("malformed") from None
        if not isinstance(round_, int) or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
                or not (upstream is None or isinstance(upstream, str)):
            raise RequestStateRefused("malformed")
        if int(self._clock()) >= expires:
            raise RequestStateRefused("expired")
        for reason, sealed, now in zip(("other_principal", "other_method", "other_target", "other_service",
                                        "other_params"), bound,
                                       (binding.principal_key, binding.method, binding.target, binding.service,
                                        binding.params_digest), strict=True):
            if sealed != now:
                raise RequestStateRefused(reason)
        if round_ < 1 or round_ > self.max_rounds:
            raise RequestStateRefused("too_many_rounds")
        check_responses(responses, keys)
        return Opened(upstream, round_, tuple(keys))

    def _decrypt(self, state: Any) -> dict[str, Any]:
        if not is_sealed_state(state):
            raise RequestStateRefused("foreign_format")
        if len(state) > MAX_STATE_CHARS:
            raise RequestStateRefused("too_large")
        body = state[len(PREFIX):]
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise RequestStateRefused("not_base64") from None
        plain = _first_opening(self._aeads, raw)
        if plain is None:
            raise RequestStateRefused("unauthentic")
        data = orjson.loads(plain)
        if not isinstance(data, dict):
            raise RequestStateRefused("malformed")
        return data


def _first_opening(aeads: Sequence[AESGCM], raw: bytes) -> bytes | None:
    """The plaintext under the first key that authenticates ``raw`` (nonce + ciphertext), or None."""
    nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    for aead in aeads:
        try:
            return aead.decrypt(nonce, sealed, _AAD)
        except (InvalidTag, ValueError):
            continue
    return None


def check_responses(responses: Any, asked: Sequence[str]) -> None:
    """``inputResponses``: absent, or an object answering only keys that were asked, each answer an
    object, all of it bounded (:class:`RequestStateRefused` otherwise)."""
    if responses is None:
        return
    if not isinstance(responses, Mapping) or len(responses) > MAX_INPUT_KEYS:
        raise RequestStateRefused("responses_malformed")
    if any(key not in asked for key in responses):
        raise RequestStateRefused("unknown_input_key")
    if not all(isinstance(v, Mapping) for v in responses.values()):
        raise RequestStateRefused("responses_malformed")
    try:
        size = len(orjson.dumps(responses))
    except TypeError:
        raise RequestStateRefused("responses_malformed") from None
    if size > MAX_RESPONSES_BYTES:
        raise RequestStateRefused("responses_too_large")


def check_keys(keys: Sequence[Any]) -> bool:
    """Whether an upstream's input keys are few and short enough to seal and relay."""
    return len(keys) <= MAX_INPUT_KEYS and all(isinstance(k, str) and 0 < len(k) <= MAX_INPUT_KEY_CHARS
                                               for k in keys)
