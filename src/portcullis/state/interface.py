"""The state-store seam: shared mutable state that gateway decisions depend on.

Today the seam holds two primitives: an **atomic windowed counter**, which the limits engine
(:mod:`portcullis.policy.limits`) uses for "at most N calls" and "at most X in total" rules, and
**expiring values** (:mod:`portcullis.state.values`), which hold a caller's ``logging/setLevel`` level
so that every replica sharing the store relays the same log messages.
Approvals, rate limits and kill switches will sit behind the same seam later; only what is used
is defined now.

Implementations: :class:`~portcullis.state.sqlite.SqliteStateStore` (the embedded default: one
process, windows written through to a SQLite file so they survive restarts),
:class:`~portcullis.state.memory.InMemoryStateStore` (the same windows in process only: the test
double) and :class:`~portcullis.state.redis_store.RedisStateStore` (the same buckets in Redis, shared
by every replica: cluster mode, docs/cluster.md). :class:`~portcullis.state.memory.FailingStateStore`
is the test double for an unreachable store.

The windowed counter, precisely:

1. A key's window counts in buckets (:mod:`portcullis.state.buckets`): an add at ``now`` with
   ``window_s`` counts while the time is before its bucket's expiry, which is at least
   ``now + window_s`` and at most ``now + window_s * (1 + 1/64)``. So a limit is never looser
   than its rule: every add of the last ``window_s`` is always counted; one may count up to 1/64
   of the window longer. A key holds at most 65 buckets whatever it counts, so any limit up to
   :data:`MAX_AMOUNT` is honoured exactly (memory does not grow with the count). (A Redis store
   keeps the same buckets in a hash.)
2. ``window_add`` is an atomic check-and-add: it adds only if ``total + amount <= limit``, where
   ``total`` is the sum of the key's live entries, and says which happened. A refused add leaves
   the key unchanged and never creates it.
3. Time is the caller's ``now`` (float seconds from one clock that all users of the store share);
   a store never reads a clock. If ``now`` goes backwards, a new entry never expires before an
   older entry of the same key: it may count *longer* than ``window_s``, never shorter.
4. Amounts and limits are ``int`` or finite :class:`~decimal.Decimal` from ``0`` to
   :data:`MAX_AMOUNT` with at most :data:`MAX_AMOUNT_SCALE` decimal places, and arithmetic on them
   is exact (no rounding). A store rejects anything else with :class:`ValueError`.
5. Stores are bounded in keys, never in what one key counts. When one cannot take a new key it
   raises :class:`StateFull` rather than forget live state: a limit must never silently become
   unlimited. Every limit a valid :class:`~portcullis.policy.limits.LimitRule` can state (counts
   and totals up to :data:`MAX_AMOUNT`, windows up to 366 days) is one every store honours: the
   rule's schema is the one place that decides what a limit may say.
6. Any failure of the store itself (unreachable, full, timed out) is :class:`StateUnavailable`;
   nothing above a store sees a driver's exceptions. Callers deny when they see it (fail closed).
   :class:`ValueError` means the caller passed bad input (a bug), not an unavailable store.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from portcullis.errors import PortcullisError

Amount = Decimal | int
MAX_KEY_CHARS = 1024  # longer keys are rejected with ValueError
MAX_AMOUNT = 10**18  # largest amount or limit a store must take
MAX_AMOUNT_SCALE = 18  # most decimal places an amount or limit may have


class StateUnavailable(PortcullisError):
    """The state store could not answer; the caller must fail closed. ``detail`` is operator-only."""

    message = "state store unavailable"


class StateFull(StateUnavailable):
    """The store is at a configured capacity (keys, or entries in one key) and cannot add more."""

    message = "state store full"


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowResult:
    """The outcome of one :meth:`StateStore.window_add`.

    Fields:
        accepted: True if the amount was added (the window had room for it).
        total_before: the sum of the key's live entries before this call.
        total_after: the sum after it; equal to ``total_before`` when refused.
        entry_id: the id of the added entry (for :meth:`StateStore.window_remove`, at most once); ``None``
            when refused.
    """

    accepted: bool
    total_before: Decimal
    total_after: Decimal
    entry_id: str | None = None


class StateStore(Protocol):
    """Shared gateway state. Every method is atomic with respect to every other call on the store."""

    async def window_add(self, key: str, amount: Amount, *, window_s: float, limit: Amount,
                         now: float) -> WindowResult:
        """Add ``amount`` to ``key``'s window only if the live total plus ``amount`` stays ``<= limit``."""
        ...

    async def window_total(self, key: str, *, now: float) -> Decimal:
        """The sum of ``key``'s live entries at ``now`` (``0`` for an unknown key). Never creates a key."""
        ...

    async def window_remove(self, key: str, entry_id: str) -> None:
        """Undo one add (one that a later check refused), at most once per id. Unknown ids are ignored."""
        ...

    async def value_set(self, key: str, value: str, *, ttl_s: float, now: float) -> None:
        """Set ``key`` to ``value`` until ``now + ttl_s`` (:mod:`portcullis.state.values` states the rules)."""
        ...

    async def value_get(self, key: str, *, now: float) -> str | None:
        """``key``'s live value at ``now``, or None (never set, or expired)."""
        ...
