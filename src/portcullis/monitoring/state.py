"""The monitor's state store seam, its SQLite implementation and an in-memory double.

:class:`MonitorStateStore` keeps one :class:`~.snapshot.Snapshot` per gateway: :meth:`save` replaces it
whole (one transaction), :meth:`load` reads it back (None: nothing saved yet), :meth:`reset` throws away
one that cannot be read. Every method is blocking and called off the event loop (a worker thread of the
monitor's background task). A failure raises :class:`MonitorStateUnavailable`; a file that is not a
readable snapshot raises it with ``corrupt`` set. A cluster store (PostgreSQL, issue 16) fills the same
interface, with the replica in its key: each replica's baselines describe the traffic it saw.

The SQLite file is ``monitor_state.sqlite3`` in the gateway's state directory. Several gateway processes
sharing a state directory share the file: the last one to close a window wins, and each restores that
view (better than none: the first-seen sets of one replica are most of another's).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from portcullis.errors import PortcullisError
from portcullis.monitoring.snapshot import SEEN_ARITY, KeyState, Snapshot

FILE_NAME = "monitor_state.sqlite3"
VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS monitor_meta (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
        taken_at REAL NOT NULL, window_s REAL NOT NULL, learning_left_s REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS monitor_keys (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, key TEXT NOT NULL,
        last INTEGER NOT NULL, baselines TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS monitor_seen (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, item TEXT NOT NULL)",
)
_TABLES = ("tool", "caller")


class MonitorStateUnavailable(PortcullisError):
    message = "monitor state unavailable"

    def __init__(self, *, detail: str, corrupt: bool = False) -> None:
        super().__init__(detail=detail)
        self.corrupt = corrupt


class MonitorStateStore(Protocol):
    def load(self, max_keys: int) -> Snapshot | None:
        """The saved snapshot (at most ``max_keys`` most recent rows per table), or None if there is none."""
        ...

    def save(self, snapshot: Snapshot) -> None:
        """Replace the saved snapshot with ``snapshot`` (atomically: a reader sees the old or the new one)."""
        ...

    def reset(self) -> None:
        """Throw away what is saved, readable or not, so that the next :meth:`save` starts over."""
        ...


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise ValueError("a key is not a list of pairs")
    return tuple((p[0], p[1]) for p in value)


class SqliteMonitorStateStore:
    """The embedded store: one SQLite file in the state directory (opened at first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                for statement in _SCHEMA:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def load(self, max_keys: int) -> Snapshot | None:
        try:
            with self._lock:
                conn = self._connection()
                meta = conn.execute("SELECT version, taken_at, window_s, learning_left_s FROM monitor_meta").fetchone()
                if meta is None:
                    return None
                if meta[0] != VERSION:
                    raise ValueError("a snapshot of another version")
                keys: list[KeyState] = []
                for table in _TABLES:
                    rows = conn.execute("SELECT tbl, key, last, baselines FROM monitor_keys WHERE tbl = ? "
                                        "ORDER BY seq DESC LIMIT ?", (table, max_keys)).fetchall()
                    keys += (KeyState(r[0], _pairs(r[1]), r[2], tuple(tuple(b) for b in json.loads(r[3])))
                             for r in reversed(rows))
                seen: list[tuple[str, tuple[str, ...]]] = []
                for table in SEEN_ARITY:
                    rows = conn.execute("SELECT tbl, item FROM monitor_seen WHERE tbl = ? ORDER BY seq DESC LIMIT ?",
                                        (table, max_keys)).fetchall()
                    seen += ((r[0], tuple(json.loads(r[1]))) for r in reversed(rows))
        except sqlite3.DatabaseError as exc:  # not a database, a damaged page, a locked file past the timeout
            corrupt = not isinstance(exc, sqlite3.OperationalError)
            raise MonitorStateUnavailable(detail=type(exc).__name__, corrupt=corrupt) from None
        except (ValueError, TypeError, IndexError) as exc:  # JSON or shapes not ours
            raise MonitorStateUnavailable(detail=type(exc).__name__, corrupt=True) from None
        return Snapshot(float(meta[1]), float(meta[2]), float(meta[3]), tuple(keys), tuple(seen))

    def save(self, snapshot: Snapshot) -> None:
        keys = [(k.table, json.dumps(k.key), k.last, json.dumps(k.baselines)) for k in snapshot.keys]
        seen = [(table, json.dumps(item)) for table, item in snapshot.seen]
        try:
            with self._lock:
                conn = self._connection()
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    for table in ("monitor_meta", "monitor_keys", "monitor_seen"):
                        conn.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed names, no input
                    conn.execute("INSERT INTO monitor_meta VALUES (1, ?, ?, ?, ?)",
                                 (VERSION, snapshot.taken_at, snapshot.window_s, snapshot.learning_left_s))
                    conn.executemany("INSERT INTO monitor_keys (tbl, key, last, baselines) VALUES (?, ?, ?, ?)", keys)
                    conn.executemany("INSERT INTO monitor_seen (tbl, item) VALUES (?, ?)", seen)
        except sqlite3.Error as exc:
            raise MonitorStateUnavailable(detail=type(exc).__name__) from None

    def reset(self) -> None:
        """Move the file (and its WAL companions) aside as ``….corrupt`` for a person to look at."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                try:
                    os.replace(source, Path(str(self.path) + suffix + ".corrupt"))
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise MonitorStateUnavailable(detail=type(exc).__name__) from None


class MemoryMonitorStateStore:
    """The in-memory double of :class:`MonitorStateStore` (tests)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.saves = 0
        self.fail: MonitorStateUnavailable | None = None  # a test sets it to make load and save raise it

    def load(self, max_keys: int) -> Snapshot | None:
        if self.fail is not None:
            raise self.fail
        return self.snapshot

    def save(self, snapshot: Snapshot) -> None:
        if self.fail is not None:
            raise self.fail
        self.snapshot, self.saves = snapshot, self.saves + 1

    def reset(self) -> None:
        self.snapshot, self.fail = None, None
