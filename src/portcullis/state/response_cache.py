"""The response-cache seam: stored tool results by key, bounded, with expiry.

Same style as :mod:`portcullis.state.interface`: a small protocol, an in-process implementation
now (:class:`MemoryResponseCache`), a Redis one later. The store knows nothing of principals,
tools or classifications: the cache stage (:mod:`portcullis.pipeline.stages.cache`) builds the key
(which carries the partition) and decides what may be stored; the store only keeps bytes.

Contract:

1. ``get(key, now)`` returns the stored bytes while ``now < expires_at``, else ``None`` (an
   expired entry is dropped when seen). Time is the caller's ``now``; a store never reads a clock.
2. ``put(key, value, expires_at, now)`` stores a copy; the entry replaces any under the same key.
   A value larger than ``max_bytes // 8`` is not stored (one answer must not empty the cache).
3. Bounded: at most ``max_entries`` entries and ``max_bytes`` bytes (value plus key); the least
   recently used entries go first (an expired entry is dropped when it is read or reaches the LRU end;
   no sweep, so a put costs O(1) however full the cache is).
4. A failing store raises :class:`~portcullis.state.interface.StateUnavailable`; the cache stage
   treats that as a miss (a cache only saves a forward: its failure costs a forward, never a check).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from portcullis.state.interface import StateUnavailable

ENTRY_OVERHEAD_BYTES = 64  # bookkeeping counted per entry besides its key and value


@dataclass(slots=True)
class CacheStats:
    """Counters since start (read by the metrics scrape)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class ResponseCacheStore(Protocol):
    def get(self, key: str, now: float) -> bytes | None: ...
    def put(self, key: str, value: bytes, expires_at: float, now: float) -> bool: ...
    def stats(self) -> CacheStats: ...


class MemoryResponseCache:
    """In-process LRU with expiry and an entry and byte bound (one event loop: no locks)."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._stats = CacheStats()

    def get(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            self._stats.misses += 1
            return None
        value, expires_at = entry
        if now >= expires_at:
            self._drop(key, value)
            self._stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self._stats.hits += 1
        return value

    def put(self, key: str, value: bytes, expires_at: float, now: float) -> bool:
        size = _size(key, value)
        if size > self._max_bytes // 8 or expires_at <= now:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self._stats.bytes -= _size(key, old[0])
            self._stats.entries -= 1
        self._make_room(size)
        self._entries[key] = (bytes(value), expires_at)
        self._stats.entries += 1
        self._stats.bytes += size
        self._stats.stores += 1
        return True

    def stats(self) -> CacheStats:
        s = self._stats
        return CacheStats(hits=s.hits, misses=s.misses, stores=s.stores, evictions=s.evictions,
                          entries=s.entries, bytes=s.bytes)

    def _make_room(self, size: int) -> None:
        while self._entries and (len(self._entries) + 1 > self._max_entries
                                 or self._stats.bytes + size > self._max_bytes):
            key, (value, _) = self._entries.popitem(last=False)
            self._stats.entries -= 1
            self._stats.bytes -= _size(key, value)
            self._stats.evictions += 1

    def _drop(self, key: str, value: bytes) -> None:
        del self._entries[key]
        self._stats.entries -= 1
        self._stats.bytes -= _size(key, value)


class FailingResponseCache:
    """Test double for an unreachable cache store: every operation raises ``StateUnavailable``."""

    def get(self, key: str, now: float) -> bytes | None:
        raise StateUnavailable(detail="response cache unreachable (test double)")

    def put(self, key: str, value: bytes, expires_at: float, now: float) -> bool:
        raise StateUnavailable(detail="response cache unreachable (test double)")

    def stats(self) -> CacheStats:
        return CacheStats()


def _size(key: str, value: bytes) -> int:
    return len(value) + len(key) + ENTRY_OVERHEAD_BYTES
