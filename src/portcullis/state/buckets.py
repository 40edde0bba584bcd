"""Bucketed sliding windows: the counting core both embedded state stores share.

A key's window is at most :data:`BUCKETS` + 1 buckets ``(expires_at, total)``, so its memory
(and its rows on disk) never grows with the number of calls counted: a limit of 20,000 or of
10^18 calls per window costs the same as a limit of 5. The rules, in the order
:meth:`Windows.plan_add` follows them:

1. The window of length ``window_s`` is cut into :data:`BUCKETS` slices of ``w = window_s / 64``
   seconds, aligned to multiples of ``w``. An add at ``now`` joins the bucket of its slice,
   ``i = floor(now / w)``, which expires at ``(i + 1) * w + window_s`` (never before
   ``now + window_s``). So an add counts for at least ``window_s`` and at most ``window_s + w``
   (1/64 longer): a limit is never looser than its rule, at most that much stricter.
2. A key's buckets are ordered by expiry. An add whose bucket would expire *before* the key's last
   bucket (the clock went back, or the rule's window was shortened) joins that last bucket: it
   counts longer, never shorter.
3. The key's total is the sum of its buckets with ``expires_at > now``; expired buckets are dropped
   whenever the key is touched, and a key with no live bucket is dropped.
4. Check-and-add is one step: the add happens only if ``total + amount <= limit``. Planning
   (:meth:`Windows.plan_add`) changes nothing; :meth:`Windows.apply` then makes the change. A
   persistent store writes the planned bucket between the two, so memory never holds a count the
   disk does not (or the reverse, beyond a failed write's rollback).
5. An entry id names the bucket and the amount (``<expires_at>/<amount>/<sequence>``); removing
   it subtracts the amount from that bucket if it is still live (never below zero). Remove each
   entry at most once: the id is not remembered after the add.
6. Arithmetic is exact (Decimal, 60 digits, inexact results trapped).
"""

from __future__ import annotations

import decimal
import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from portcullis.state.interface import StateFull, WindowResult

BUCKETS = 64  # slices per window: an add counts for at most window_s * (1 + 1/64)
EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow])
ZERO = Decimal(0)


@dataclass(slots=True)
class _Bucket:
    expires_at: float
    total: Decimal


@dataclass(slots=True)
class _Window:
    buckets: deque[_Bucket] = field(default_factory=deque)  # ordered by expiry
    total: Decimal = ZERO


class Change(NamedTuple):
    """One bucket's new total (``ZERO``: the bucket is gone). What a persistent store writes."""

    key: str
    expires_at: float
    total: Decimal


class Plan(NamedTuple):
    """An add that fits, not yet applied: the bucket to write and the result to report."""

    change: Change
    result: WindowResult


def bucket_expiry(now: float, window_s: float) -> float:
    """When an add at ``now`` stops counting in a window of ``window_s`` (rule 1).

    Total for every finite ``now`` and positive finite ``window_s``: where the slice index is not
    a finite number (a window too small for floats to slice), the add is its own bucket; and it
    always counts at ``now`` itself, even when ``now + window_s`` rounds back to ``now``."""
    width = window_s / BUCKETS
    slices = now / width if width > 0 else math.inf
    at_least = max(now + window_s, math.nextafter(now, math.inf))  # a window below float precision: one tick
    if not math.isfinite(slices):
        return at_least
    return max((math.floor(slices) + 1) * width + window_s, at_least)


class Windows:
    """Every key's buckets, at most ``max_keys`` keys with live buckets (one event loop, no awaits)."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._windows: dict[str, _Window] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (a key's last expiry, key); may hold stale items
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._windows)

    def buckets(self, key: str) -> int:
        """How many buckets ``key`` holds (live or not yet dropped)."""
        window = self._windows.get(key)
        return 0 if window is None else len(window.buckets)

    def total(self, key: str, now: float) -> Decimal:
        window = self._live(key, now)
        return ZERO if window is None else window.total

    def plan_add(self, key: str, amount: Decimal, *, window_s: float, limit: Decimal,
                 now: float) -> Plan | WindowResult:
        """A :class:`Plan` if ``amount`` fits, else the refusal (nothing changes either way).

        Raises :class:`StateFull` when a new key would exceed ``max_keys`` live keys."""
        window = self._live(key, now)
        before = ZERO if window is None else window.total
        after = EXACT.add(before, amount)
        if after > limit:
            return WindowResult(accepted=False, total_before=before, total_after=before)
        if window is None and len(self._windows) >= self.max_keys:
            self._evict_expired(now)
            if len(self._windows) >= self.max_keys:
                raise StateFull(detail=f"{self.max_keys} keys with live entries")
        expires_at = bucket_expiry(now, window_s)
        if not math.isfinite(expires_at):
            raise ValueError("now + window_s is not finite")
        bucket_total = amount
        if window is not None and window.buckets:
            last = window.buckets[-1]
            if expires_at <= last.expires_at:  # rule 2: the same bucket, or a clock that went back
                expires_at, bucket_total = last.expires_at, EXACT.add(last.total, amount)
        self._sequence += 1
        entry_id = f"{expires_at!r}/{amount}/{self._sequence}"
        return Plan(Change(key, expires_at, bucket_total),
                    WindowResult(accepted=True, total_before=before, total_after=after, entry_id=entry_id))

    def plan_remove(self, key: str, entry_id: str) -> Change | None:
        """The bucket change that undoes entry ``entry_id``, or None if there is nothing to undo."""
        window = self._windows.get(key)
        try:
            expiry_text, amount_text, _ = entry_id.split("/")
            expires_at, amount = float(expiry_text), Decimal(amount_text)
        except (ValueError, decimal.DecimalException):
            return None
        if window is None or not amount.is_finite() or amount <= 0:
            return None
        for bucket in reversed(window.buckets):  # newest first: rollbacks undo recent adds
            if bucket.expires_at == expires_at:
                return Change(key, expires_at, max(EXACT.subtract(bucket.total, amount), ZERO))
        return None

    def apply(self, change: Change) -> None:
        """Set one bucket's total (a planned add or remove, or a row loaded from disk)."""
        window = self._windows.get(change.key)
        if window is None:
            if change.total == ZERO:
                return
            window = self._windows[change.key] = _Window()
        buckets = window.buckets
        if not buckets or buckets[-1].expires_at < change.expires_at:  # the common case: a new last bucket
            if change.total != ZERO:
                buckets.append(_Bucket(change.expires_at, change.total))
                window.total = EXACT.add(window.total, change.total)
                self._push_expiry(change.expires_at, change.key)
        else:
            for index in range(len(buckets) - 1, -1, -1):
                bucket = buckets[index]
                if bucket.expires_at == change.expires_at:
                    window.total = EXACT.add(EXACT.subtract(window.total, bucket.total), change.total)
                    if change.total == ZERO:
                        del buckets[index]
                    else:
                        bucket.total = change.total
                    break
                if bucket.expires_at < change.expires_at:
                    if change.total != ZERO:
                        buckets.insert(index + 1, _Bucket(change.expires_at, change.total))
                        window.total = EXACT.add(window.total, change.total)
                    break
            else:
                if change.total != ZERO:
                    buckets.appendleft(_Bucket(change.expires_at, change.total))
                    window.total = EXACT.add(window.total, change.total)
        if not buckets:
            del self._windows[change.key]

    # ------------------------------------------------------------------------- bounds

    def _live(self, key: str, now: float) -> _Window | None:
        """``key``'s window with expired buckets dropped, or None (and the key gone) if empty."""
        window = self._windows.get(key)
        if window is None:
            return None
        buckets = window.buckets
        while buckets and buckets[0].expires_at <= now:
            window.total = EXACT.subtract(window.total, buckets.popleft().total)
        if not buckets:
            del self._windows[key]
            return None
        return window

    def _evict_expired(self, now: float) -> None:
        """Drop every key whose last bucket expired by ``now``, earliest expiry first."""
        while self._expiry and self._expiry[0][0] <= now:
            _, key = heapq.heappop(self._expiry)
            window = self._windows.get(key)
            if window is not None and (not window.buckets or window.buckets[-1].expires_at <= now):
                del self._windows[key]

    def _push_expiry(self, expires_at: float, key: str) -> None:
        # Stale items are skipped when popped; rebuilt when they outnumber live keys, so the heap
        # stays within about twice max_keys.
        heapq.heappush(self._expiry, (expires_at, key))
        if len(self._expiry) > 2 * len(self._windows) + 64:
            self._expiry = [(w.buckets[-1].expires_at, k) for k, w in self._windows.items() if w.buckets]
            heapq.heapify(self._expiry)
