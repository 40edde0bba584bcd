"""The actor principal: who is acting on a call, as the gateway established it.

A :class:`Principal` is built by the gateway's identify stage from a *verified* credential
(never from text a model wrote) and travels to a tool service inside the gateway-minted actor
token (:mod:`portcullis.identity.minting`) as its ``act`` claim. The service kit turns that claim
back into a :class:`Principal` (:meth:`Principal.from_claims`), so the claim form is a wire
format: strict types, bounded sizes, unknown keys ignored (a newer gateway may add some).

Every field is validated when the object is made, whichever way it is made, so a ``Principal``
in hand is always well formed: identifiers are short printable strings, ``roles`` and ``scopes``
are tuples, ``attributes`` is a read-only mapping of strings, ``issuer_name`` is a configured
source name and ``person`` is only ever true for a user without an agent. The stricter rules for
what a *token* may put into these fields (types, Unicode, sizes, duplicates) are the claim
mapping's, :mod:`portcullis.identity.claims`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

AUTH_METHODS = frozenset({"bearer", "mtls", "dev", "internal"})  # internal: the gateway's own (approvals/system.py)

MAX_ID_CHARS = 256  # user, agent, client, session, source app, tenant
MAX_ISSUER_CHARS = 2048  # the issuer's own id (an ``iss`` URL may be long; the configuration allows 2048)
MAX_ITEMS = 32  # roles, scopes, attributes: each at most this many entries
MAX_ITEM_CHARS = 128  # one role, one scope, one attribute value
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The name of the identity source that vouched for the principal: a configured issuer's ``name``,
# or one of the built-in sources. Never holds ``/``, ``:`` or ``*`` (the caller-pattern syntax).
ISSUER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
DEV_SOURCE, MTLS_SOURCE, ANONYMOUS_SOURCE = "dev", "mtls", "anonymous"
BUILT_IN_SOURCES = frozenset({DEV_SOURCE, MTLS_SOURCE, ANONYMOUS_SOURCE})

_OPTIONAL_IDS = ("user_id", "agent_id", "session_id", "source_app", "tenant")
_REQUIRED_IDS = ("client_id",)

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Credential:
    """The credential a principal was established from, for the audit trail only: the token's
    ``jti`` and, from an OAuth Transaction Token, its ``txn`` (the caller's transaction).

    Not part of who the principal is: it takes no part in a :class:`Principal`'s equality
    (so sessions, caches and approvals see the same principal across its tokens), is not in the
    claim form (it never travels to a service) and not in log lines. Each value is a checked,
    bounded identifier (:mod:`~portcullis.identity.claims` refuses a token whose claim is not).
    """

    jti: str | None = None
    txn: str | None = None

    def __post_init__(self) -> None:
        for name in ("jti", "txn"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value, MAX_ID_CHARS)

    def to_json(self) -> dict[str, str | None]:
        return {"jti": self.jti, "txn": self.txn}


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is acting: the human (if any), the agent, the OAuth client and where the call came from.

    Fields:
        client_id: the OAuth client (or mTLS certificate subject) that presented the credential.
        user_id: the human on whose behalf the call is made, when there is one.
        agent_id: the agent (model-driven program) making the call, when it is identified.
        session_id: an opaque id of the client's session for correlation. Never the
            ``Mcp-Session-Id`` value itself: that is a sealed credential and must not travel on.
        source_app: the application the call came through (for example a chat front end).
        tenant: the tenant the call is made in.
        roles: roles granted by the identity provider, in its order.
        scopes: OAuth scopes of the credential.
        attributes: further attributes for policy (``department``, ``employment_type``,
            ``region``, …), read-only.
        auth_method: how the credential was verified: ``"bearer"``, ``"mtls"`` or ``"dev"``; ``"internal"``
            only for the gateway's own synthetic requester (:mod:`portcullis.approvals.system`), which no
            credential yields.
        issuer: who vouched for the identity (the OIDC issuer, the client CA, ``"dev"``). Not the
            gateway: the gateway is the issuer of the actor *token*, not of the identity.
        issuer_name: the configured name of that source, what caller patterns scope on
            (``issuer:corp/role:finance``): an ``identity.issuers`` entry's ``name``, ``"dev"`` (the
            development issuer), ``"mtls"`` (client certificates) or ``"anonymous"``. ``None`` only
            for principals not made by the gateway's authenticator (tests, old claim forms): such a
            principal matches no issuer-scoped pattern.
        person: the credential is a person's, decided from the issuer's configured positive signal
            (``identity.issuers[].person``), never from a missing ``agent_id``. Only people approve.
            Always false for a principal without ``user_id`` or with ``agent_id``.
    """

    client_id: str
    auth_method: str
    issuer: str
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    source_app: str | None = None
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    issuer_name: str | None = None
    person: bool = False
    # the credential presented (jti, txn): audit only, never part of equality, the hash or the claim form
    credential: Credential | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in _REQUIRED_IDS:
            _check_text(name, getattr(self, name), MAX_ID_CHARS)
        _check_text("issuer", self.issuer, MAX_ISSUER_CHARS)
        if self.issuer_name is not None and (not isinstance(self.issuer_name, str)
                                             or not ISSUER_NAME.fullmatch(self.issuer_name)):
            raise ValueError("issuer_name must be 1 to 63 of a-z 0-9 _ - starting with a letter")
        if not isinstance(self.person, bool):
            raise ValueError("person must be a boolean")
        if self.person and (self.user_id is None or self.agent_id is not None):
            raise ValueError("a person is a user without an agent")
        for name in _OPTIONAL_IDS:
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value, MAX_ID_CHARS)
        if self.auth_method not in AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {sorted(AUTH_METHODS)}")
        object.__setattr__(self, "roles", _text_tuple("roles", self.roles))
        object.__setattr__(self, "scopes", _text_tuple("scopes", self.scopes))
        object.__setattr__(self, "attributes", _frozen_attributes(self.attributes))
        if self.credential is not None and not isinstance(self.credential, Credential):
            raise ValueError("credential must be a Credential")

    # ----------------------------------------------------------------------- the claim form

    def to_claims(self) -> dict[str, Any]:
        """The JSON-ready claim form (the ``act`` claim). ``None`` and empty fields are left out."""
        claims: dict[str, Any] = {
            "client_id": self.client_id,
            "auth_method": self.auth_method,
            "issuer": self.issuer,
        }
        if self.issuer_name is not None:
            claims["issuer_name"] = self.issuer_name
        if self.person:
            claims["person"] = True
        for name in _OPTIONAL_IDS:
            value = getattr(self, name)
            if value is not None:
                claims[name] = value
        if self.roles:
            claims["roles"] = list(self.roles)
        if self.scopes:
            claims["scopes"] = list(self.scopes)
        if self.attributes:
            claims["attributes"] = dict(self.attributes)
        return claims

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Rebuild a principal from :meth:`to_claims` output.

        Strict: each present claim must have exactly the JSON type :meth:`to_claims` writes
        (a number is not a string, a string is not a list); unknown keys are ignored; sizes
        are bounded as in the constructor. Raises :class:`ValueError` on anything else.
        """
        if not isinstance(claims, Mapping):
            raise ValueError("principal claims must be an object")
        values: dict[str, Any] = {}
        for name in (*_REQUIRED_IDS, "issuer", "auth_method"):
            value = claims.get(name)
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            values[name] = value
        for name in (*_OPTIONAL_IDS, "issuer_name"):
            value = claims.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            values[name] = value
        for name in ("roles", "scopes"):
            value = claims.get(name, [])
            if not isinstance(value, list):
                raise ValueError(f"{name} must be a list")
            values[name] = tuple(value)
        attributes = claims.get("attributes", {})
        if not isinstance(attributes, dict):
            raise ValueError("attributes must be an object")
        values["attributes"] = attributes
        person = claims.get("person", False)
        if not isinstance(person, bool):
            raise ValueError("person must be a boolean")
        values["person"] = person
        return cls(**values)

    def log_fields(self) -> dict[str, Any]:
        """Fields for a structured log line: identifiers, roles and scopes.

        Attributes are left out (they can be personal data; the audit record keeps them), and a
        principal holds no token material to leak.
        """
        return {
            "principal.client_id": self.client_id,
            "principal.user_id": self.user_id,
            "principal.agent_id": self.agent_id,
            "principal.session_id": self.session_id,
            "principal.source_app": self.source_app,
            "principal.tenant": self.tenant,
            "principal.roles": list(self.roles),
            "principal.scopes": list(self.scopes),
            "principal.auth_method": self.auth_method,
            "principal.issuer": self.issuer,
            "principal.issuer_name": self.issuer_name,
            "principal.person": self.person,
        }


def _check_text(name: str, value: object, limit: int) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if not value or len(value) > limit:
        raise ValueError(f"{name} must be 1 to {limit} characters")
    if _CONTROL.search(value):
        raise ValueError(f"{name} must not contain control characters")


def _text_tuple(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list):
        raise ValueError(f"{name} must be a tuple of strings")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"{name} has more than {MAX_ITEMS} entries")
    for item in value:
        _check_text(name, item, MAX_ITEM_CHARS)
    return tuple(value)


def _frozen_attributes(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError("attributes must be a mapping of strings")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"attributes has more than {MAX_ITEMS} entries")
    for key, item in value.items():
        if not isinstance(key, str) or not _ATTRIBUTE_KEY.fullmatch(key):
            raise ValueError("attribute names are 1 to 64 of A-Z a-z 0-9 _ . : -")
        _check_text(f"attributes[{key}]", item, MAX_ITEM_CHARS)
    return MappingProxyType(dict(value))  # a copy: the caller may still hold the original


def principal_key(principal: Principal) -> str:
    """A short, stable key of who the principal is (issuer, client, user, agent, tenant): what sealed
    session ids and request states are bound to (a principal's roles or token may change, it may not)."""
    who = "\x1f".join(str(v) for v in (principal.issuer, principal.client_id, principal.user_id, principal.agent_id,
                                       principal.tenant))
    return hashlib.sha256(who.encode()).hexdigest()[:32]
