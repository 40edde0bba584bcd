"""A detector's learned state as plain values: taken at a window close, restored at the next start.

:func:`take` copies what a restart would otherwise lose — per key, each rule's baseline (mean, variance,
windows folded) and the last window closed; the first-seen sets (identities on high-risk tools, egress
destinations, argument shapes); how much of the learning period was left — into a :class:`Snapshot`,
least recently used first, so a restore keeps the same eviction order. Every table is bounded by
``max_keys`` already, so a snapshot is too. :func:`restore` puts one back into a fresh detector:

* first-seen items restored are known (no alert for them); anything else is new as before. The learning
  period resumes where it stopped: a snapshot taken after ``learn_s`` means no learning at all, one
  taken ten minutes into a fresh start leaves the other fifty;
* each key's window resumes after the last one closed, with no calls: the window open at the snapshot and
  the downtime count as silence, by the same rule as a silence in memory — up to ``max_gap_windows``
  windows folded in as zero-call windows, a longer one (a stale snapshot) not folded at all;
* baselines taken with another ``window_s`` are dropped (a count per minute is no count per five
  minutes); the first-seen sets stay.

A snapshot that does not have this shape raises :class:`ValueError` (the monitor then starts fresh).
Pure: no I/O and no clock; :mod:`.state` stores snapshots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from portcullis.monitoring.baseline import Baseline
from portcullis.monitoring.detectors import CALLER_RULES, MAX_TEXT, SPIKE_RULES, Detector, Window

RULES_OF = {"tool": SPIKE_RULES, "caller": CALLER_RULES}
SEEN_ARITY = {"identity": 3, "destination": 2, "shape": 2}
Key = tuple[tuple[str, str], ...]
_Row = TypeVar("_Row", bound=tuple[Any, ...])


@dataclass(frozen=True, slots=True)
class KeyState:
    """One key of a window table: its last closed window and its baselines (rule, mean, variance, n)."""

    table: str  # "tool" | "caller"
    key: Key
    last: int  # the bucket number (time // window_s) of the last window closed
    baselines: tuple[tuple[str, float, float, int], ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    window_s: float
    learning_left_s: float  # of the learning period, when the snapshot was taken
    keys: tuple[KeyState, ...]  # per table, least recently used first
    seen: tuple[tuple[str, tuple[str, ...]], ...]  # (table, item), likewise


def take(detector: Detector, now: float) -> Snapshot:
    keys = tuple(KeyState(name, key, w.bucket - 1, tuple((rule, b.mean, b.var, b.n)
                                                          for rule, b in w.baselines.items() if b.n))
                 for name, table in detector.window_tables().items() for key, w in table.items())
    seen = tuple((name, item) for name, table in detector.seen_tables().items() for item, _ in table.items())
    return Snapshot(now, detector.s.window_s, max(0.0, detector.learn_until - now), keys, seen)


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError("a key part is not a short string")
    return value


def _key(key: Key) -> Key:
    if not isinstance(key, tuple) or not key or len(key) > 4:
        raise ValueError("a key is not a short tuple")
    for part in key:
        if not isinstance(part, tuple) or len(part) != 2:
            raise ValueError("a key part is not a name and a value")
        _text(part[0])
        _text(part[1])
    return key


def _baseline(mean: object, var: object, n: object) -> Baseline:
    if not (isinstance(mean, float | int) and isinstance(var, float | int) and type(n) is int
            and math.isfinite(mean) and math.isfinite(var) and var >= 0 and n >= 0):
        raise ValueError("a baseline is not finite numbers")
    base = Baseline()
    base.mean, base.var, base.n = float(mean), float(var), n
    return base


def restore(detector: Detector, snapshot: Snapshot, now: float) -> int:
    """Put ``snapshot`` into a detector that has seen nothing yet; the number of keys and items restored.
    Checks everything before changing anything: a malformed snapshot raises ValueError, the detector
    untouched."""
    s = detector.s
    if not (math.isfinite(snapshot.learning_left_s) and snapshot.learning_left_s >= 0):
        raise ValueError("the learning period left is not a duration")
    same_window = snapshot.window_s == s.window_s
    windows: list[tuple[str, Key, Window]] = []
    for state in snapshot.keys if same_window else ():
        rules = RULES_OF.get(state.table)
        if rules is None or type(state.last) is not int:
            raise ValueError("a key of an unknown table")
        window = Window(state.last + 1, rules)
        for rule, mean, var, n in state.baselines:
            if rule in window.baselines:  # a rule this version no longer has: ignored
                window.baselines[rule] = _baseline(mean, var, n)
        windows.append((state.table, _key(state.key), window))
    seen: list[tuple[str, tuple[str, ...]]] = []
    for name, item in snapshot.seen:
        if SEEN_ARITY.get(name) != (len(item) if isinstance(item, tuple) else -1):
            raise ValueError("a first-seen item of an unknown table")
        seen.append((name, tuple(_text(part) for part in item)))
    tables, seen_tables = detector.window_tables(), detector.seen_tables()
    for name, key, window in _most_recent(windows, s.max_keys):
        tables[name].get_or_add(key, lambda w=window: w)  # type: ignore[misc]
    for name, item in _most_recent(seen, s.max_keys):
        seen_tables[name].get_or_add(item, lambda: True)
    detector.learn_until = now + min(s.learn_s, snapshot.learning_left_s)
    return len(windows) + len(seen)


def _most_recent(rows: list[_Row], cap: int) -> list[_Row]:
    """Per table (the first field), the last ``cap`` rows in their order: a lowered ``max_keys`` keeps the
    most recently used keys and evicts nothing at restore."""
    counts: dict[str, int] = {}
    kept: list[_Row] = []
    for row in reversed(rows):
        if counts.get(row[0], 0) < cap:
            counts[row[0]] = counts.get(row[0], 0) + 1
            kept.append(row)
    return kept[::-1]
