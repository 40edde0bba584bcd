"""Short-lived values in a state store: a string per key that expires (``value_set`` / ``value_get``).

What a caller set for itself that every replica must see the same way, such as its ``logging/setLevel``
level (:class:`portcullis.transport.streaming.LogLevels`). The rules, for every store:

1. A value is a string of at most :data:`MAX_VALUE_CHARS` characters; it expires ``ttl_s`` after ``now``
   (at most :data:`MAX_TTL_S`); an expired value reads as absent. Setting a key again replaces its value
   and its expiry.
2. A store holds at most ``max_keys`` live values. When a new key would pass that, expired values go first;
   if none has expired, :class:`~portcullis.state.interface.StateFull` (never forget a live value).
3. Time is the caller's ``now``, as for windows; a store never reads a clock.

:class:`Values` is the in-memory table the embedded stores share (a dict plus a heap of expiry times, so
no full scan per call).
"""

from __future__ import annotations

import heapq
import math

from portcullis.state.interface import MAX_KEY_CHARS, StateFull

MAX_VALUE_CHARS = 256
MAX_TTL_S = 366 * 86400.0


def check_value(key: str, value: str, ttl_s: float, now: float) -> None:
    """ValueError for a caller's bug: a bad key, value, TTL or time."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"key must be a string of 1 to {MAX_KEY_CHARS} characters")
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError("now must be a finite number of seconds")
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"value must be a string of at most {MAX_VALUE_CHARS} characters")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not (math.isfinite(ttl_s)
                                                                              and 0 < ttl_s <= MAX_TTL_S):
        raise ValueError(f"ttl_s must be a positive number of at most {MAX_TTL_S} seconds")


class Values:
    """Bounded expiring string values (see the module docstring). Not thread-safe; no awaits inside."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._expiries: list[tuple[float, str]] = []  # may hold stale entries of keys set again
        self.max_keys = max_keys

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, now: float) -> str | None:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise ValueError(f"key must be a string of 1 to {MAX_KEY_CHARS} characters")
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def set(self, key: str, value: str, *, ttl_s: float, now: float) -> None:
        check_value(key, value, ttl_s, now)
        if key not in self._data and len(self._data) >= self.max_keys:
            self._prune(now)
            if len(self._data) >= self.max_keys:
                raise StateFull(detail=f"state store holds {self.max_keys} live values")
        expires_at = now + ttl_s
        self._data[key] = (value, expires_at)
        heapq.heappush(self._expiries, (expires_at, key))
        if len(self._expiries) > 2 * len(self._data) + 64:  # keys set again left stale entries: rebuild
            self._expiries = [(at, k) for k, (_, at) in self._data.items()]
            heapq.heapify(self._expiries)

    def _prune(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            item = self._data.get(key)
            if item is not None and item[1] <= now:
                del self._data[key]
