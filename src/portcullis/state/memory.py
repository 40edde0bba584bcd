"""The in-process state store (the embedded default) and a failing test double.

:class:`InMemoryStateStore` keeps each key's window as an exact sliding log (see
:mod:`portcullis.state.interface` for the semantics) with a running total.

Atomicity: every method is a coroutine with no ``await`` inside, so on one event loop it runs
start to finish without another task interleaving; check-and-add is therefore atomic. The store
is not thread-safe: use it from one event loop only.

Bounds (no unbounded per-client dictionaries):

1. At most ``max_keys`` keys. A key whose entries have all expired is dropped when next touched.
   When a new key would exceed the cap, keys whose windows are empty are evicted first (found
   through a heap of expiry times, so no full scan per call); if the table is still full the add
   raises :class:`~portcullis.state.interface.StateFull` (fail closed), never forgets live entries.
2. At most ``max_entries_per_key`` live entries in one key; one more raises ``StateFull``. Set it
   at least as high as the largest ``max_calls`` of any limit rule.
"""

from __future__ import annotations

import decimal
import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from portcullis.state.interface import (
    MAX_AMOUNT,
    MAX_AMOUNT_SCALE,
    MAX_KEY_CHARS,
    Amount,
    StateFull,
    StateUnavailable,
    WindowResult,
)

# 60 digits hold any sum of two in-range amounts exactly; Inexact is trapped so that can never rot.
_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow])
_ZERO = Decimal(0)
_SCALE = Decimal(1).scaleb(-MAX_AMOUNT_SCALE)

Entry = tuple[float, Decimal, str]  # expires_at, amount, entry_id


@dataclass(slots=True)
class _Window:
    entries: deque[Entry] = field(default_factory=deque)  # ordered by expires_at
    total: Decimal = _ZERO


class InMemoryStateStore:
    """A bounded, exact, single-event-loop :class:`~portcullis.state.interface.StateStore`."""

    def __init__(self, *, max_keys: int = 100_000, max_entries_per_key: int = 10_000) -> None:
        if max_keys < 1 or max_entries_per_key < 1:
            raise ValueError("max_keys and max_entries_per_key must be at least 1")
        self.max_keys = max_keys
        self.max_entries_per_key = max_entries_per_key
        self._windows: dict[str, _Window] = {}
        self._expiry: list[tuple[float, str]] = []  # heap; may hold stale items, compacted below
        self._last_id = 0

    def __len__(self) -> int:
        """The number of keys held (some may have expired and not been dropped yet)."""
        return len(self._windows)

    async def window_add(self, key: str, amount: Amount, *, window_s: float, limit: Amount,
                         now: float) -> WindowResult:
        """Add ``amount`` to ``key`` if the live total plus it stays ``<= limit``; atomic (no awaits)."""
        _check_key(key)
        amount_d, limit_d = _check_amount(amount, "amount"), _check_amount(limit, "limit")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError("window_s must be a positive finite number")
        _check_now(now)
        window = self._live(key, now)
        before = window.total if window is not None else _ZERO
        after = _EXACT.add(before, amount_d)
        if after > limit_d:
            return WindowResult(accepted=False, total_before=before, total_after=before)
        if window is None:
            window = self._new_window(key, now)
        elif len(window.entries) >= self.max_entries_per_key:
            raise StateFull(detail=f"{self.max_entries_per_key} live entries in one key")
        expires_at = now + window_s
        if window.entries:  # a clock that went backwards must not make a new entry expire first
            expires_at = max(expires_at, window.entries[-1][0])
        if not math.isfinite(expires_at):
            raise ValueError("now + window_s is not finite")
        self._last_id += 1
        entry_id = str(self._last_id)
        window.entries.append((expires_at, amount_d, entry_id))
        window.total = after
        self._push_expiry(expires_at, key)
        return WindowResult(accepted=True, total_before=before, total_after=after, entry_id=entry_id)

    async def window_total(self, key: str, *, now: float) -> Decimal:
        """The sum of ``key``'s live entries at ``now``; ``0`` for an unknown or expired key."""
        _check_key(key)
        _check_now(now)
        window = self._live(key, now)
        return window.total if window is not None else _ZERO

    async def window_remove(self, key: str, entry_id: str) -> None:
        """Remove one entry by id; unknown keys and ids are ignored."""
        window = self._windows.get(key)
        if window is None:
            return
        for index in range(len(window.entries) - 1, -1, -1):  # newest first: rollbacks undo recent adds
            if window.entries[index][2] == entry_id:
                window.total = _EXACT.subtract(window.total, window.entries[index][1])
                del window.entries[index]
                break
        if not window.entries:
            del self._windows[key]

    # ------------------------------------------------------------------------- bounds

    def _live(self, key: str, now: float) -> _Window | None:
        """``key``'s window with expired entries dropped, or ``None`` (and the key gone) if empty."""
        window = self._windows.get(key)
        if window is None:
            return None
        entries = window.entries
        while entries and entries[0][0] <= now:
            window.total = _EXACT.subtract(window.total, entries.popleft()[1])
        if not entries:
            del self._windows[key]
            return None
        return window

    def _new_window(self, key: str, now: float) -> _Window:
        if len(self._windows) >= self.max_keys:
            self._evict_expired(now)
        if len(self._windows) >= self.max_keys:
            raise StateFull(detail=f"{self.max_keys} keys with live entries")
        window = self._windows[key] = _Window()
        return window

    def _evict_expired(self, now: float) -> None:
        """Drop every key whose last entry expired by ``now``, earliest expiry first."""
        while self._expiry and self._expiry[0][0] <= now:
            _, key = heapq.heappop(self._expiry)
            window = self._windows.get(key)
            if window is not None and (not window.entries or window.entries[-1][0] <= now):
                del self._windows[key]

    def _push_expiry(self, expires_at: float, key: str) -> None:
        # Every add pushes the key's new last expiry; stale items are skipped when popped. Rebuild
        # when stale items outnumber live keys, so the heap stays within about twice max_keys.
        heapq.heappush(self._expiry, (expires_at, key))
        if len(self._expiry) > 2 * len(self._windows) + 64:
            self._expiry = [(w.entries[-1][0], k) for k, w in self._windows.items() if w.entries]
            heapq.heapify(self._expiry)


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

    def _fail(self) -> StateUnavailable:
        self.calls += 1
        return StateUnavailable(detail=self.detail)


# ----------------------------------------------------------------------------- input checks


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"key must be a string of 1 to {MAX_KEY_CHARS} characters")


def _check_now(now: float) -> None:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError("now must be a finite number of seconds")


def _check_amount(value: Amount, name: str) -> Decimal:
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
