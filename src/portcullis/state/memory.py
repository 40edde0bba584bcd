"""The in-process state store and a failing test double.

:class:`InMemoryStateStore` keeps each key's window as bucketed counts
(:mod:`portcullis.state.buckets`; the semantics are in :mod:`portcullis.state.interface`) and
loses them when the process ends: it is the test double, and the store for tools that need no
persistence. The gateway's embedded default is :class:`~portcullis.state.sqlite.SqliteStateStore`,
the same buckets written through to a file.

Atomicity: every method is a coroutine with no ``await`` inside, so on one event loop it runs
start to finish without another task interleaving; check-and-add is therefore atomic. The store
is not thread-safe: use it from one event loop only.

Bounds (no unbounded per-client dictionaries): at most ``max_keys`` keys with live buckets, each
at most 65 buckets whatever it counts. A key whose buckets have all expired is dropped when next
touched; when a new key would exceed the cap, keys whose windows are empty are evicted first
(through a heap of expiry times, no full scan per call); if the table is still full the add raises
:class:`~portcullis.state.interface.StateFull` (fail closed), never forgets live counts.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

from portcullis.state.buckets import Plan, Windows
from portcullis.state.interface import (
    MAX_AMOUNT,
    MAX_AMOUNT_SCALE,
    MAX_KEY_CHARS,
    Amount,
    StateUnavailable,
    WindowResult,
)
from portcullis.state.values import Values

_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow])
_SCALE = Decimal(1).scaleb(-MAX_AMOUNT_SCALE)


class InMemoryStateStore:
    """A bounded, exact, single-event-loop :class:`~portcullis.state.interface.StateStore`."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._windows = Windows(max_keys=max_keys)
        self._values = Values(max_keys=max_keys)
        self.max_keys = max_keys

    def __len__(self) -> int:
        """The number of keys held (some may have expired and not been dropped yet)."""
        return len(self._windows)

    def buckets(self, key: str) -> int:
        """How many buckets ``key`` holds: at most 65 per window length, whatever it counts."""
        return self._windows.buckets(key)

    async def window_add(self, key: str, amount: Amount, *, window_s: float, limit: Amount,
                         now: float) -> WindowResult:
        """Add ``amount`` to ``key`` if the live total plus it stays ``<= limit``; atomic (no awaits)."""
        amount_d, limit_d = check_add(key, amount, window_s, limit, now)
        plan = self._windows.plan_add(key, amount_d, window_s=window_s, limit=limit_d, now=now)
        if isinstance(plan, Plan):
            self._windows.apply(plan.change)
            return plan.result
        return plan

    async def window_total(self, key: str, *, now: float) -> Decimal:
        """The sum of ``key``'s live entries at ``now``; ``0`` for an unknown or expired key."""
        check_key(key)
        check_now(now)
        return self._windows.total(key, now)

    async def window_remove(self, key: str, entry_id: str) -> None:
        """Undo one add by its entry id; unknown keys and ids are ignored."""
        change = self._windows.plan_remove(key, entry_id)
        if change is not None:
            self._windows.apply(change)

    async def value_set(self, key: str, value: str, *, ttl_s: float, now: float) -> None:
        """Set an expiring value (:mod:`portcullis.state.values`); StateFull when every slot is live."""
        self._values.set(key, value, ttl_s=ttl_s, now=now)

    async def value_get(self, key: str, *, now: float) -> str | None:
        """The live value of ``key``, or None."""
        return self._values.get(key, now)


class FailingStateStore:
    """A :class:`~portcullis.state.interface.StateStore` that is always unavailable (a test double).

    Every method raises :class:`~portcullis.state.interface.StateUnavailable`; ``calls`` counts them.
    """

    def __init__(self, detail: str = "failing state store (test double)") -> None:
        self.detail = detail
        self.calls = 0

    async def window_add(self, key: str, amount: Amount, *, window_s: float, limit: Amount,
                         now: float) -> WindowResult:
        """Raise :class:`StateUnavailable`."""
        raise self._fail()

    async def window_total(self, key: str, *, now: float) -> Decimal:
        """Raise :class:`StateUnavailable`."""
        raise self._fail()

    async def window_remove(self, key: str, entry_id: str) -> None:
        """Raise :class:`StateUnavailable`."""
        raise self._fail()

    async def value_set(self, key: str, value: str, *, ttl_s: float, now: float) -> None:
        """Raise :class:`StateUnavailable`."""
        raise self._fail()

    async def value_get(self, key: str, *, now: float) -> str | None:
        """Raise :class:`StateUnavailable`."""
        raise self._fail()

    def _fail(self) -> StateUnavailable:
        self.calls += 1
        return StateUnavailable(detail=self.detail)


# ----------------------------------------------------------------------------- input checks


def check_add(key: str, amount: Amount, window_s: float, limit: Amount, now: float) -> tuple[Decimal, Decimal]:
    """Validate a ``window_add``'s inputs (ValueError for a caller's bug); ``(amount, limit)`` as Decimals."""
    check_key(key)
    amount_d, limit_d = check_amount(amount, "amount"), check_amount(limit, "limit")
    if isinstance(window_s, bool) or not isinstance(window_s, int | float) or not (
            math.isfinite(window_s) and window_s > 0):
        raise ValueError("window_s must be a positive finite number")
    check_now(now)
    return amount_d, limit_d


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"key must be a string of 1 to {MAX_KEY_CHARS} characters")


def check_now(now: float) -> None:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError("now must be a finite number of seconds")


def check_amount(value: Amount, name: str) -> Decimal:
    """``value`` as a Decimal, if it is an in-range int or Decimal (see the interface's rule 4)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"{name} must be an int or Decimal")
    if isinstance(value, int):
        if not 0 <= value <= MAX_AMOUNT:
            raise ValueError(f"{name} must be from 0 to {MAX_AMOUNT}")
        return Decimal(value)
    if not value.is_finite() or not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{name} must be a finite number from 0 to {MAX_AMOUNT}")
    try:
        value.quantize(_SCALE, context=_EXACT)  # Inexact if it has digits past the last place
    except decimal.DecimalException as exc:
        raise ValueError(f"{name} must have at most {MAX_AMOUNT_SCALE} decimal places") from exc
    return value
