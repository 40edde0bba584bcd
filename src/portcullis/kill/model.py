"""Kill switches as values: the kinds, the checks on operator input, and the snapshot the request path reads.

Everything here is pure. The request path only ever calls :meth:`Snapshot.for_call` (or
:meth:`Snapshot.for_read`): a few dict lookups on an immutable mapping, nothing else (the cost is in
docs/kill-switches.md). Identity targets (agent, client, user, source app, tenant) compare as deny rules
and revocations do, case-folded (NFKC + casefold): blocking ``billing-bot`` also blocks ``Billing-Bot``.
Tool and service names compare exactly (they are the operator's own, exposed names).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from portcullis.errors import PortcullisError
from portcullis.identity.claims import fold
from portcullis.identity.principal import Principal

#: What a switch can disable or block. ``credential`` is not here: revoking a token, a client's or an
#: agent's credentials is ``portcullis token revoke`` (portcullis.identity.revocation), not duplicated.
KINDS = ("tool", "service", "tenant", "agent", "client", "user", "source_app")
IDENTITY_KINDS = frozenset({"tenant", "agent", "client", "user", "source_app"})
MAX_TARGET_CHARS = 256
MAX_REASON_CHARS = 500
MAX_ACTOR_CHARS = 256
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})  # controls, bidi, invisible, unassigned
ID_PREFIX = "ks_"


class KillSwitchInputError(PortcullisError):
    """Operator input a switch cannot hold (unknown kind, empty, overlong, control characters)."""


def _clean_text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise KillSwitchInputError(f"{name} must be a string")
    if not value.strip():
        raise KillSwitchInputError(f"{name} must not be empty")
    if len(value) > limit:
        raise KillSwitchInputError(f"{name} is longer than {limit} characters")
    if value != value.strip():
        raise KillSwitchInputError(f"{name} must not start or end with whitespace")
    if any(c < " " or c == "\x7f" for c in value) or (
            not value.isascii() and any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value)):
        raise KillSwitchInputError(f"{name} must not hold control, format or invisible characters")
    return value


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise KillSwitchInputError(f"kind must be one of {', '.join(KINDS)}")
    return kind


def check_target(value: object) -> str:
    return _clean_text("target", value, MAX_TARGET_CHARS)


def check_reason(value: object) -> str:
    return _clean_text("reason", value, MAX_REASON_CHARS)


def check_actor(value: object) -> str:
    return _clean_text("actor", value, MAX_ACTOR_CHARS)


def check_expires(value: object, now: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= now:
        raise KillSwitchInputError("expires_at must be a time in the future (seconds since the epoch)")
    return float(value)


def match_key(kind: str, target: str) -> str:
    """The key a target is looked up by: folded for identities, exact for tools and services."""
    return fold(target) if kind in IDENTITY_KINDS else target


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """One switch as stored: active while ``lifted_at`` is None and ``expires_at`` (if any) is ahead."""

    id: str
    kind: str
    target: str
    reason: str
    actor: str
    set_at: float
    expires_at: float | None = None
    lifted_at: float | None = None
    lifted_by: str | None = None
    lift_reason: str | None = None

    def active(self, now: float) -> bool:
        return self.lifted_at is None and (self.expires_at is None or now < self.expires_at)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "reason": self.reason, "actor": self.actor,
                "set_at": self.set_at, "expires_at": self.expires_at, "lifted_at": self.lifted_at,
                "lifted_by": self.lifted_by, "lift_reason": self.lift_reason}


@dataclass(frozen=True, slots=True)
class Hit:
    """Which switch contains a call: the audit record names it; the caller learns only the id."""

    switch_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The active switches, keyed ``(kind, match_key)`` → ``(id, expires_at or +inf)``; immutable."""

    keys: Mapping[tuple[str, str], tuple[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    switches: tuple[KillSwitch, ...] = ()
    kinds: frozenset[str] = frozenset()  # the kinds with an active switch: only those are looked up

    @classmethod
    def of(cls, switches: Iterable[KillSwitch], now: float) -> Snapshot:
        live = tuple(s for s in switches if s.active(now))
        keys: dict[tuple[str, str], tuple[str, float]] = {}
        for s in sorted(live, key=lambda s: s.set_at):  # the oldest switch of a key names the hits
            keys.setdefault((s.kind, match_key(s.kind, s.target)),
                            (s.id, math.inf if s.expires_at is None else s.expires_at))
        return cls(MappingProxyType(keys), live, frozenset(kind for kind, _ in keys))

    def _hit(self, kind: str, value: str | None, now: float) -> Hit | None:
        if value is None or kind not in self.kinds:
            return None
        found = self.keys.get((kind, fold(value) if kind in IDENTITY_KINDS else value))
        if found is None or now >= found[1]:
            return None
        return Hit(found[0], kind)

    def for_principal(self, principal: Principal, now: float) -> Hit | None:
        if not self.keys:
            return None
        return (self._hit("agent", principal.agent_id, now) or self._hit("client", principal.client_id, now)
                or self._hit("user", principal.user_id, now) or self._hit("tenant", principal.tenant, now)
                or self._hit("source_app", principal.source_app, now))

    def for_call(self, tool: str, service: str, principal: Principal, now: float) -> Hit | None:
        """The switch that contains this call, or None (the common case: one truth test on an empty mapping)."""
        if not self.keys:
            return None
        return (self._hit("tool", tool, now) or self._hit("service", service, now)
                or self.for_principal(principal, now))

    def for_read(self, service: str, principal: Principal, now: float) -> Hit | None:
        """The switch that contains a resource read, prompt get or completion of ``service``'s surface."""
        if not self.keys:
            return None
        return self._hit("service", service, now) or self.for_principal(principal, now)

    def visible(self, names: frozenset[str], service_of: Callable[[str], str | None], principal: Principal,
                now: float) -> frozenset[str]:
        """What ``tools/list`` shows of ``names``: nothing to a blocked caller (or a disabled tenant), and no
        disabled tool or tool of a disabled service to anyone."""
        if not self.keys:
            return names
        if self.for_principal(principal, now) is not None:
            return frozenset()
        return frozenset(n for n in names if self._hit("tool", n, now) is None
                         and self._hit("service", service_of(n) or "", now) is None)
