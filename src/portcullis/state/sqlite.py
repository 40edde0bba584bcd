"""The embedded default state store: bucketed windows kept in memory and written through to SQLite.

Limits that say "per day" must survive a restart, so every change to a window is on disk before
the call that caused it goes on: :class:`SqliteStateStore` keeps the buckets of
:mod:`portcullis.state.buckets` in memory (reads never touch the disk) and writes each changed
bucket as one row, ``(key, expires_at, total)``, before applying it in memory. A restart loads the
rows back, so the windows, and every limit counted in them, carry on where they were.

Cost and durability. A write is one SQLite WAL upsert committed with ``synchronous=NORMAL`` on
the event loop's thread, about 12 µs here (measured with ``bench/state_store.py``), so no thread
hop. Like the audit store in ``durability: process`` it survives the gateway being killed at any
moment (the commit is in the OS page cache), not a power cut. Automatic WAL checkpoints are off
(they would stall the loop for milliseconds); :meth:`SqliteStateStore.maintain`, called every
second by the gateway, checkpoints in a worker thread and deletes expired rows in small batches.

Atomicity. A method plans its change in memory, writes it and applies it with no ``await`` in
between, so on one event loop check-and-add is atomic. One gateway process owns a file: a second
one is refused at open (``flock`` on ``<file>.lock``), since two processes would each count only
their own calls.

Failures. Any SQLite error (disk full, file gone, locked, corrupt) is
:class:`~portcullis.state.interface.StateUnavailable`, and the change is not applied in memory
either, so the limits engine denies the call (fail closed) and the counts stay as the disk has
them. A row that does not parse at open refuses the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path

import anyio.to_thread

from portcullis.state.buckets import Change, Plan, Windows
from portcullis.state.interface import Amount, StateUnavailable, WindowResult
from portcullis.state.memory import check_add, check_key, check_now
from portcullis.state.values import Values

_SCHEMA = """
CREATE TABLE IF NOT EXISTS window_bucket (
    key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    total TEXT NOT NULL,
    UNIQUE (key, expires_at)
);
CREATE INDEX IF NOT EXISTS window_bucket_expiry ON window_bucket (expires_at);
"""
_UPSERT = ("INSERT INTO window_bucket (key, expires_at, total) VALUES (?, ?, ?) "
           "ON CONFLICT (key, expires_at) DO UPDATE SET total = excluded.total")
_DELETE = "DELETE FROM window_bucket WHERE key = ? AND expires_at = ?"
_PRUNE = ("DELETE FROM window_bucket WHERE rowid IN "
          "(SELECT rowid FROM window_bucket WHERE expires_at <= ? LIMIT 512)")
_WAL_LIMIT_BYTES = 16 * 1024 * 1024


class SqliteStateStore:
    """A persistent :class:`~portcullis.state.interface.StateStore` (see the module docstring).

    Open with :meth:`open` at start-up; call :meth:`maintain` periodically; :meth:`close` at the end.
    """

    def __init__(self, conn: sqlite3.Connection, windows: Windows, *, path: Path, lock_fd: int) -> None:
        self._conn = conn
        self._windows = windows
        self._path = path
        self._lock_fd: int | None = lock_fd
        self._lock = threading.Lock()  # the loop's writes and the worker thread's checkpoint
        self._values = Values(max_keys=windows.max_keys)  # in memory only (see value_set)
        self.max_keys = windows.max_keys

    @classmethod
    def open(cls, path: str | Path, *, max_keys: int = 100_000) -> SqliteStateStore:
        """Open (creating if needed) the store at ``path`` and load its windows. Blocks; call at start.

        Raises :class:`StateUnavailable` when the file cannot be opened, is owned by another
        process, or holds a row that does not parse."""
        path = Path(path)
        lock_fd = _claim(path)
        try:
            conn = _connect(path)
            windows = Windows(max_keys=max_keys)
            try:
                for key, expires_at, total in conn.execute(
                        "SELECT key, expires_at, total FROM window_bucket ORDER BY key, expires_at"):
                    windows.apply(Change(_text(key), _finite(expires_at), _amount(total)))
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            os.close(lock_fd)
            raise StateUnavailable(detail=f"state store {path} cannot be opened: {exc}") from None
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(conn, windows, path=path, lock_fd=lock_fd)

    def __len__(self) -> int:
        return len(self._windows)

    def buckets(self, key: str) -> int:
        """How many buckets ``key`` holds in memory (at most 65 per window length)."""
        return self._windows.buckets(key)

    async def window_add(self, key: str, amount: Amount, *, window_s: float, limit: Amount,
                         now: float) -> WindowResult:
        """Add ``amount`` to ``key`` if the live total plus it stays ``<= limit``; on disk before it counts."""
        amount_d, limit_d = check_add(key, amount, window_s, limit, now)
        plan = self._windows.plan_add(key, amount_d, window_s=window_s, limit=limit_d, now=now)
        if not isinstance(plan, Plan):
            return plan
        self._write(plan.change)
        self._windows.apply(plan.change)
        return plan.result

    async def window_total(self, key: str, *, now: float) -> Decimal:
        """The sum of ``key``'s live entries at ``now`` (from memory; never touches the disk)."""
        check_key(key)
        check_now(now)
        if self._lock_fd is None:
            raise StateUnavailable(detail="state store closed")
        return self._windows.total(key, now)

    async def window_remove(self, key: str, entry_id: str) -> None:
        """Undo one add by its entry id; unknown keys and ids are ignored."""
        change = self._windows.plan_remove(key, entry_id)
        if change is not None:
            self._write(change)
            self._windows.apply(change)

    async def value_set(self, key: str, value: str, *, ttl_s: float, now: float) -> None:
        """Set an expiring value. Kept in memory, not in the file: the values held today (a session's log
        level) live no longer than a session, and one process owns the file, so no other process reads them;
        after a restart they read as unset."""
        if self._lock_fd is None:
            raise StateUnavailable(detail="state store closed")
        self._values.set(key, value, ttl_s=ttl_s, now=now)

    async def value_get(self, key: str, *, now: float) -> str | None:
        """The live value of ``key``, or None."""
        if self._lock_fd is None:
            raise StateUnavailable(detail="state store closed")
        return self._values.get(key, now)

    async def maintain(self, now: float) -> None:
        """Delete rows that expired by ``now`` (a few batches, on the loop) and checkpoint the WAL
        in a worker thread. Raises :class:`StateUnavailable` when SQLite fails."""
        check_now(now)
        try:
            with self._lock:
                for _ in range(8):
                    if self._conn.execute(_PRUNE, (now,)).rowcount < 512:
                        break
        except sqlite3.Error as exc:
            raise StateUnavailable(detail=f"state store prune failed: {exc}") from None

        def checkpoint() -> None:
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            await anyio.to_thread.run_sync(checkpoint)
        except sqlite3.Error as exc:
            raise StateUnavailable(detail=f"state store checkpoint failed: {exc}") from None

    def close(self) -> None:
        """Checkpoint, close the file and release it; later calls fail closed."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        with self._lock:
            try:
                with contextlib.suppress(sqlite3.Error):  # a WAL left behind is replayed at the next open
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                self._conn.close()
                os.close(fd)

    def _write(self, change: Change) -> None:
        """One bucket to disk, or :class:`StateUnavailable` (and nothing changes in memory)."""
        if self._lock_fd is None:
            raise StateUnavailable(detail="state store closed")
        try:
            with self._lock:
                if change.total == 0:
                    self._conn.execute(_DELETE, (change.key, change.expires_at))
                else:
                    self._conn.execute(_UPSERT, (change.key, change.expires_at, str(change.total)))
        except sqlite3.Error as exc:
            raise StateUnavailable(detail=f"state store write failed: {type(exc).__name__}: {exc}") from None


def _claim(path: Path) -> int:
    """The writer's lock on ``<path>.lock`` (flock): one gateway process per counters file."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateUnavailable(detail=f"state store lock {path}.lock cannot be opened: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateUnavailable(detail=f"state store {path} is in use by another gateway process; give each "
                               "gateway its own state directory") from None
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # private from the start
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=200")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # maintain() checkpoints off the loop
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise StateUnavailable(detail="state store holds a malformed key")
    return value


def _finite(value: object) -> float:
    if not isinstance(value, float) or not math.isfinite(value):
        raise StateUnavailable(detail="state store holds a malformed expiry")
    return value


def _amount(value: object) -> Decimal:
    try:
        amount = Decimal(value) if isinstance(value, str) else Decimal("NaN")
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount <= 0:
        raise StateUnavailable(detail="state store holds a malformed total")
    return amount
