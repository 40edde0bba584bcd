"""Shared gateway state behind one seam (:class:`StateStore`).

- :mod:`.interface` — the :class:`StateStore` protocol, its semantics, and its errors.
- :mod:`.memory` — :class:`InMemoryStateStore` (the embedded default) and :class:`FailingStateStore`
  (a test double that is always unavailable, for your own tests too).
"""

from portcullis.state.interface import StateFull, StateStore, StateUnavailable, WindowResult
from portcullis.state.memory import FailingStateStore, InMemoryStateStore

__all__ = [
    "FailingStateStore",
    "InMemoryStateStore",
    "StateFull",
    "StateStore",
    "StateUnavailable",
    "WindowResult",
]
