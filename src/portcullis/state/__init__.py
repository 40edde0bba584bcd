"""Shared gateway state behind one seam (:class:`StateStore`).

- :mod:`.interface` — the :class:`StateStore` protocol, its semantics, and its errors.
- :mod:`.buckets` — the bucketed sliding windows both embedded stores count in.
- :mod:`.sqlite` — :class:`SqliteStateStore`, the embedded default: windows that survive restarts.
- :mod:`.memory` — :class:`InMemoryStateStore` (the same windows, in process only: the test double)
  and :class:`FailingStateStore` (a test double that is always unavailable, for your own tests too).
- :mod:`.redis_store` — :class:`~portcullis.state.redis_store.RedisStateStore`, cluster mode (imported from
  its module: the embedded path never loads the Redis driver).
"""

from portcullis.state.interface import StateFull, StateStore, StateUnavailable, WindowResult
from portcullis.state.memory import FailingStateStore, InMemoryStateStore
from portcullis.state.sqlite import SqliteStateStore

__all__ = [
    "FailingStateStore",
    "InMemoryStateStore",
    "SqliteStateStore",
    "StateFull",
    "StateStore",
    "StateUnavailable",
    "WindowResult",
]
