"""The kill-switch store seam, its SQLite implementation and an in-memory double.

:class:`KillSwitchStore` is what the gateway, the admin API and the CLI use; a cluster store
(PostgreSQL, with Redis pub/sub for the wake-up, issue 16) fills the same interface. Every method is
blocking and called off the event loop (a worker thread). Besides the switches, the store keeps an
append-only *event* log (``set`` / ``lift``): a running gateway turns each event it has not yet audited
into a ``kill_switch`` audit record and marks it (:meth:`KillSwitchStore.pending_events`,
:meth:`KillSwitchStore.mark_audited`), so a switch set by the CLI while the gateway runs (or while it
is stopped) is in the audit chain too.

The SQLite file is ``kill_switches.sqlite3`` in the gateway's state directory (WAL mode; the CLI and
any number of gateway processes on the same host share it).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from portcullis.errors import PortcullisError
from portcullis.kill.model import (
    ID_PREFIX,
    KillSwitch,
    check_actor,
    check_expires,
    check_kind,
    check_reason,
    check_target,
)

FILE_NAME = "kill_switches.sqlite3"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kill_switches (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL,
        set_at REAL NOT NULL, expires_at REAL, lifted_at REAL, lifted_by TEXT, lift_reason TEXT)""",
    """CREATE TABLE IF NOT EXISTS kill_switch_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, switch_id TEXT NOT NULL, event TEXT NOT NULL, at REAL NOT NULL,
        actor TEXT NOT NULL, reason TEXT NOT NULL, audited INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS kill_switch_events_pending ON kill_switch_events (audited, seq)",
)
_SELECT = ("SELECT id, kind, target, reason, actor, set_at, expires_at, lifted_at, lifted_by, lift_reason "
           "FROM kill_switches ")


class KillSwitchStoreUnavailable(PortcullisError):
    message = "kill switch store unavailable"


class UnknownSwitch(PortcullisError):
    message = "no such active kill switch"


@dataclass(frozen=True, slots=True)
class Event:
    """One change: ``set`` or ``lift`` of a switch, by whom and why."""

    seq: int
    switch: KillSwitch
    event: str
    at: float
    actor: str
    reason: str


class KillSwitchStore(Protocol):
    def set(self, kind: str, target: str, reason: str, actor: str, expires_at: float | None = None) -> KillSwitch:
        """Store a new active switch (inputs checked by :mod:`portcullis.kill.model`); its id is new."""
        ...

    def lift(self, switch_id: str, reason: str, actor: str) -> KillSwitch:
        """Lift an active switch; :class:`UnknownSwitch` when there is none with that id."""
        ...

    def active(self, now: float) -> tuple[KillSwitch, ...]:
        """Every switch active at ``now`` (not lifted, not expired)."""
        ...

    def history(self, limit: int = 100) -> tuple[KillSwitch, ...]:
        """The most recent switches, active or not, newest first."""
        ...

    def pending_events(self, limit: int = 100) -> tuple[Event, ...]:
        """Events not yet in the audit trail, oldest first."""
        ...

    def mark_audited(self, seq: int) -> None:
        ...


def new_id() -> str:
    return ID_PREFIX + secrets.token_hex(12)


def _checked(kind: str, target: str, reason: str, actor: str, expires_at: float | None, now: float
             ) -> KillSwitch:
    return KillSwitch(new_id(), check_kind(kind), check_target(target), check_reason(reason), check_actor(actor),
                      now, check_expires(expires_at, now))


class SqliteKillSwitchStore:
    """The embedded store: one SQLite file in the state directory."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path, self._clock = path, clock
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise KillSwitchStoreUnavailable(detail=f"cannot open the kill switch store: {type(exc).__name__}"
                                             ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        try:
            with self._lock:
                return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise KillSwitchStoreUnavailable(detail=type(exc).__name__) from None

    def set(self, kind: str, target: str, reason: str, actor: str, expires_at: float | None = None) -> KillSwitch:
        switch = _checked(kind, target, reason, actor, expires_at, self._clock())
        try:
            with self._lock, self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("INSERT INTO kill_switches (id, kind, target, reason, actor, set_at, expires_at) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (switch.id, switch.kind, switch.target, switch.reason, switch.actor,
                                    switch.set_at, switch.expires_at))
                self._conn.execute("INSERT INTO kill_switch_events (switch_id, event, at, actor, reason) "
                                   "VALUES (?, 'set', ?, ?, ?)",
                                   (switch.id, switch.set_at, switch.actor, switch.reason))
        except sqlite3.Error as exc:
            raise KillSwitchStoreUnavailable(detail=type(exc).__name__) from None
        return switch

    def lift(self, switch_id: str, reason: str, actor: str) -> KillSwitch:
        reason, actor, now = check_reason(reason), check_actor(actor), self._clock()
        try:
            with self._lock, self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                changed = self._conn.execute(
                    "UPDATE kill_switches SET lifted_at = ?, lifted_by = ?, lift_reason = ? "
                    "WHERE id = ? AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                    (now, actor, reason, switch_id, now)).rowcount
                if changed != 1:
                    raise UnknownSwitch(detail="no active switch with that id")
                self._conn.execute("INSERT INTO kill_switch_events (switch_id, event, at, actor, reason) "
                                   "VALUES (?, 'lift', ?, ?, ?)", (switch_id, now, actor, reason))
                row = self._conn.execute(_SELECT + "WHERE id = ?", (switch_id,)).fetchone()
        except sqlite3.Error as exc:
            raise KillSwitchStoreUnavailable(detail=type(exc).__name__) from None
        return KillSwitch(*row)

    def active(self, now: float) -> tuple[KillSwitch, ...]:
        rows = self._run(_SELECT + "WHERE lifted_at IS NULL "
                         "AND (expires_at IS NULL OR expires_at > ?) ORDER BY set_at", (now,))
        return tuple(KillSwitch(*row) for row in rows)

    def history(self, limit: int = 100) -> tuple[KillSwitch, ...]:
        rows = self._run(_SELECT + "ORDER BY set_at DESC LIMIT ?", (limit,))
        return tuple(KillSwitch(*row) for row in rows)

    def pending_events(self, limit: int = 100) -> tuple[Event, ...]:
        rows = self._run(
            "SELECT e.seq, e.event, e.at, e.actor, e.reason, s.id, "
            " s.kind, s.target, s.reason, s.actor, s.set_at, s.expires_at"
            ", s.lifted_at, s.lifted_by, s.lift_reason "
            "FROM kill_switch_events e JOIN kill_switches s ON s.id = e.switch_id "
            "WHERE e.audited = 0 ORDER BY e.seq LIMIT ?", (limit,))
        return tuple(Event(int(r[0]), KillSwitch(*r[5:]), str(r[1]), float(r[2]), str(r[3]),
                           str(r[4])) for r in rows)

    def mark_audited(self, seq: int) -> None:
        self._run("UPDATE kill_switch_events SET audited = 1 WHERE seq = ?", (seq,))


class MemoryKillSwitchStore:
    """The in-memory double of :class:`KillSwitchStore` (tests; one process only)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._switches: dict[str, KillSwitch] = {}
        self._events: list[tuple[Event, bool]] = []
        self._lock = threading.Lock()
        self.fail = False  # a test sets it to make every call raise KillSwitchStoreUnavailable

    def _check(self) -> None:
        if self.fail:
            raise KillSwitchStoreUnavailable(detail="test double set to fail")

    def set(self, kind: str, target: str, reason: str, actor: str, expires_at: float | None = None) -> KillSwitch:
        self._check()
        switch = _checked(kind, target, reason, actor, expires_at, self._clock())
        with self._lock:
            self._switches[switch.id] = switch
            self._events.append((Event(len(self._events) + 1, switch, "set", switch.set_at, switch.actor,
                                       switch.reason), False))
        return switch

    def lift(self, switch_id: str, reason: str, actor: str) -> KillSwitch:
        self._check()
        reason, actor, now = check_reason(reason), check_actor(actor), self._clock()
        with self._lock:
            switch = self._switches.get(switch_id)
            if switch is None or not switch.active(now):
                raise UnknownSwitch(detail="no active switch with that id")
            switch = self._switches[switch_id] = replace(switch, lifted_at=now, lifted_by=actor, lift_reason=reason)
            self._events.append((Event(len(self._events) + 1, switch, "lift", now, actor, reason), False))
        return switch

    def active(self, now: float) -> tuple[KillSwitch, ...]:
        self._check()
        return tuple(s for s in self._switches.values() if s.active(now))

    def history(self, limit: int = 100) -> tuple[KillSwitch, ...]:
        self._check()
        return tuple(sorted(self._switches.values(), key=lambda s: -s.set_at))[:limit]

    def pending_events(self, limit: int = 100) -> tuple[Event, ...]:
        self._check()
        return tuple(e for e, done in self._events if not done)[:limit]

    def mark_audited(self, seq: int) -> None:
        with self._lock:
            self._events = [(e, done or e.seq == seq) for e, done in self._events]
