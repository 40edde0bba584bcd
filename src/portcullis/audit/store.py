"""Where audit records live: the ``AuditStore`` seam and its embedded SQLite implementation.

Contract of every store:

* ``append(batch)`` writes the whole batch in one transaction and returns only once it is
  durable. It refuses (:class:`ChainConflict`) a batch that does not continue the stored head
  — first index = head index + 1, first ``prev_hash`` = head hash, links inside the batch — so
  two writers can never fork the chain. Nothing of a refused or failed batch is written.
* ``head()`` is ``(index, hash)`` of the last record, or ``None`` for an empty chain.
* ``read(from_index, limit)`` returns records in index order; ``checkpoints()`` in index order.
* Driver exceptions never escape: they become :class:`AuditUnavailable` (detail for operators).

``SqliteAuditStore.open_readonly`` is for forensics (``portcullis audit``): a ``mode=ro``
connection that never creates, migrates or writes the file; :meth:`SqliteAuditStore.snapshot`
holds one read transaction so pages and checkpoints read inside it describe one moment.

``SqliteAuditStore`` runs stdlib ``sqlite3`` in WAL mode with one of two durability levels:

* ``durability="power"``: ``synchronous=FULL``; statements run in worker threads, so the event
  loop never waits on ``fsync``. A commit is on stable storage when ``append`` returns — it
  survives a power cut — at the price of one ``fsync`` (~0.2-0.7 ms here) per group commit.
* ``durability="process"`` (the gateway's default): ``synchronous=NORMAL`` and statements run
  *inline* on the calling (event-loop) thread, ~20 µs per small transaction, with no thread
  hop. A commit is in the WAL in the OS page cache when ``append`` returns: it survives the
  gateway process being killed (``kill -9``) at any moment, not a kernel crash or power cut.
  Automatic WAL checkpoints are off for this connection (they would stall the loop for
  milliseconds); call :meth:`SqliteAuditStore.checkpoint_wal` periodically (the gateway does,
  every second). It checkpoints in a worker thread on the writer's own connection, holding the
  store's lock, so no append lands in the middle: the checkpoint completes, and the next append
  starts the WAL over (truncated to ``journal_size_limit``) instead of growing it for ever. A
  checkpoint on a second connection never completes under steady load (measured: a 28 MB WAL
  after 10,000 records) and a growing WAL file is a disk that fills up.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, Protocol, TypeVar, runtime_checkable

import anyio.to_thread

from portcullis.audit.errors import AuditUnavailable, ChainConflict
from portcullis.audit.record import GENESIS_HASH, AuditRecord, Checkpoint, canonical_bytes, continues

T = TypeVar("T")


@runtime_checkable
class AuditStore(Protocol):
    """The storage seam of the audit trail (SQLite embedded; PostgreSQL for clusters)."""

    async def append(self, batch: Sequence[AuditRecord]) -> None: ...
    async def head(self) -> tuple[int, str] | None: ...
    async def read(self, from_index: int, limit: int) -> list[AuditRecord]: ...
    async def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...
    async def checkpoints(self) -> list[Checkpoint]: ...


class ChainingAuditStore(AuditStore, Protocol):
    """A store shared by several writers (``pg_store.py``): it chains each batch onto the head it reads
    under its own lock (``chain(head)`` is pure) and returns the records once durable."""

    chains_at_append: bool

    async def append_chained(self, chain: Callable[[tuple[int, str] | None], list[AuditRecord]]
                             ) -> list[AuditRecord]: ...


WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_record (
    idx        INTEGER PRIMARY KEY,
    ts         REAL    NOT NULL,
    request_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    fields     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    idx       INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    ts        REAL NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_record_request_id ON audit_record (request_id);
"""
_HEAD = "SELECT idx, hash FROM audit_record ORDER BY idx DESC LIMIT 1"
# Insert one record only if it continues the head: nothing at or past its index, and either the
# chain is empty and it starts at 0 from the genesis hash, or the record before it has its prev_hash.
_APPEND_ONE = """
INSERT INTO audit_record SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
WHERE NOT EXISTS (SELECT 1 FROM audit_record WHERE idx >= ?1)
  AND CASE WHEN ?1 = 0 THEN ?6 = ?8 AND NOT EXISTS (SELECT 1 FROM audit_record)
           ELSE (SELECT hash FROM audit_record WHERE idx = ?1 - 1) IS ?6 END
"""


def _inline(durability: str) -> bool:
    if durability not in ("process", "power"):
        raise ValueError("durability must be 'process' or 'power'")
    return durability == "process"


def _create_private(path: str | Path) -> None:
    """Create the store file owner-only (0600) if it does not exist yet.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode, so they are private too.
    """
    text = str(path)
    if text == ":memory:" or text.startswith("file:"):
        return
    try:
        fd = os.open(text, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # exists already, or cannot be created: sqlite3.connect reports the latter
        return
    os.close(fd)


def _claim(path: str | Path) -> int | None:
    """Take the writer's lock on ``path`` (``<path>.lock``, flock): one gateway process per chain.

    Two writers on one chain would fork it; the second one is refused at start instead, with a
    message that says what to do. The lock goes with the process, so kill -9 releases it.
    """
    text = str(path)
    if text == ":memory:" or text.startswith("file:"):
        return None
    try:
        fd = os.open(text + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise AuditUnavailable(detail=f"audit store lock {text}.lock cannot be opened: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise AuditUnavailable(detail=(
            f"audit store {text} is in use by another gateway process; give each gateway its own audit "
            "file (audit.path in gateway.yaml, or $PORTCULLIS_AUDIT_PATH)")) from None
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def _connect(path: str | Path, inline: bool) -> sqlite3.Connection:
    _create_private(path)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=200")  # another writer on this file: fail closed fast
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL" if inline else "PRAGMA synchronous=FULL")
        if inline:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint_wal() does it off the loop
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")  # a restarted WAL is cut back
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteAuditStore:
    """The embedded audit store: one SQLite file. Open with ``await SqliteAuditStore.open(path)``."""

    def __init__(self, conn: sqlite3.Connection, *, path: str | Path | None = None, inline: bool = False,
                 lock_fd: int | None = None) -> None:
        self._conn = conn
        self._lock_fd = lock_fd
        self._path = path
        self.inline = inline  # statements run on the caller's thread (durability="process")
        self._lock = threading.Lock()  # one statement sequence at a time; threads come from anyio's pool

    @classmethod
    async def open(cls, path: str | Path, *, durability: Literal["process", "power"] = "power") -> SqliteAuditStore:
        """Open (creating if needed) the store at ``path``; see the module docstring for ``durability``."""
        return await anyio.to_thread.run_sync(functools.partial(cls.open_sync, path, durability=durability))

    @classmethod
    def open_sync(cls, path: str | Path, *, durability: Literal["process", "power"] = "power") -> SqliteAuditStore:
        """:meth:`open` for start-up code (blocks the calling thread while SQLite opens the file)."""
        inline = _inline(durability)
        lock_fd = _claim(path)
        try:
            conn = _connect(path, inline)
        except sqlite3.Error as exc:
            _release(lock_fd)
            raise AuditUnavailable(detail=f"audit store open failed: {exc}") from None
        except BaseException:
            _release(lock_fd)
            raise
        return cls(conn, path=path, inline=inline, lock_fd=lock_fd)

    async def checkpoint_wal(self) -> None:
        """Move committed WAL frames into the database file, off the event loop (see the module
        docstring). Appends wait for it (for about a millisecond at a steady load)."""

        def checkpoint() -> None:
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            await anyio.to_thread.run_sync(checkpoint)
        except sqlite3.Error as exc:
            raise AuditUnavailable(detail=f"audit WAL checkpoint failed: {exc}") from None

    @classmethod
    async def open_readonly(cls, path: str | Path) -> SqliteAuditStore:
        """Open an existing store read-only (``mode=ro``): nothing is created, migrated or written.

        A missing file, a file that is not SQLite, or a database without the audit table is
        :class:`AuditUnavailable`; so is any later attempt to write through this store.
        """
        target = Path(path).resolve()
        if not target.is_file():
            raise AuditUnavailable(detail=f"no audit store at {target}")

        def connect() -> sqlite3.Connection:
            uri = target.as_uri() + "?mode=ro"  # as_uri percent-encodes, so '?' or '#' in a path stay literal
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            try:
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_record'")
                if found.fetchone() is None:
                    raise sqlite3.DatabaseError("no audit_record table")
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            return cls(await anyio.to_thread.run_sync(connect))
        except sqlite3.Error as exc:
            raise AuditUnavailable(detail=f"not a readable audit store: {target}: {exc}") from None

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """Hold one read transaction: every read inside sees the store as of its first read."""
        await self._run(lambda: self._conn.execute("BEGIN DEFERRED"))
        try:
            yield
        finally:
            await self._run(lambda: self._conn.execute("COMMIT") if self._conn.in_transaction else None)

    async def aclose(self) -> None:
        try:
            await self._run(self._conn.close)
        finally:
            fd, self._lock_fd = self._lock_fd, None
            _release(fd)

    async def __aenter__(self) -> SqliteAuditStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        try:
            if self.inline:
                return locked()
            return await anyio.to_thread.run_sync(locked)
        except sqlite3.Error as exc:
            raise AuditUnavailable(detail=f"audit store failed: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ records

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        rows = [(r.index, r.ts, r.request_id, r.kind,
                 (r.fields_json if r.fields_json is not None else canonical_bytes(r.fields)).decode("utf-8"),
                 r.prev_hash, r.hash) for r in batch]

        if len(rows) == 1:  # one statement, its own transaction: continuity is checked inside it
            row_ = rows[0]

            def write_one() -> None:
                cursor = self._conn.execute(_APPEND_ONE, (*row_, GENESIS_HASH))
                if cursor.rowcount != 1:
                    raise ChainConflict(detail="append does not continue the stored head")

            try:
                await self._run(write_one)
            except sqlite3.IntegrityError:  # pragma: no cover - the WHERE clause refuses first
                raise ChainConflict(detail="append does not continue the stored head") from None
            return

        def write() -> None:
            self._conn.execute("BEGIN IMMEDIATE")  # take the write lock before reading the head
            try:
                row = self._conn.execute(_HEAD).fetchone()
                if not continues(None if row is None else (row[0], row[1]), batch):
                    raise ChainConflict(detail="append does not continue the stored head")
                self._conn.executemany("INSERT INTO audit_record VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

        await self._run(write)

    async def head(self) -> tuple[int, str] | None:
        row = await self._run(lambda: self._conn.execute(_HEAD).fetchone())
        return None if row is None else (int(row[0]), str(row[1]))

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        query = "SELECT * FROM audit_record WHERE idx >= ? ORDER BY idx LIMIT ?"
        rows = await self._run(lambda: self._conn.execute(query, (from_index, limit)).fetchall())
        return [_to_record(row) for row in rows]

    async def select_records(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        """Run one ``SELECT`` whose rows are ``audit_record``'s seven columns in table order.

        ``sql`` is fixed text written in code (``query.py``), never built from input; every
        value travels in ``params``. Used by forensics search on a read-only store.
        """
        rows = await self._run(lambda: self._conn.execute(sql, tuple(params)).fetchall())
        return [_to_record(row) for row in rows]

    async def prune_through(self, index: int) -> int:
        """Delete the records up to and including ``index`` (retention; see ``retention.py``); returns how many.

        Refused (:class:`AuditUnavailable`, nothing deleted) unless a checkpoint is stored at
        exactly ``index`` and a newer record exists (the head is never deleted, so the chain
        continues from it). Checkpoints are never deleted.
        """
        def delete() -> int:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                pinned = self._conn.execute("SELECT 1 FROM audit_checkpoint WHERE idx = ?", (index,)).fetchone()
                newer = self._conn.execute("SELECT 1 FROM audit_record WHERE idx > ? LIMIT 1", (index,)).fetchone()
                if pinned is None or newer is None:
                    raise AuditUnavailable(detail=f"audit prune through {index} refused: it must end at a "
                                                  "checkpoint and leave a newer record")
                count = self._conn.execute("DELETE FROM audit_record WHERE idx <= ?", (index,)).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            return int(count)

        return await self._run(delete)

    # ------------------------------------------------------------------ checkpoints

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        c = checkpoint
        await self._run(lambda: self._conn.execute(
            "INSERT INTO audit_checkpoint VALUES (?, ?, ?, ?, ?)",
            (c.index, c.hash, c.ts, c.key_id, c.signature)))

    async def checkpoints(self) -> list[Checkpoint]:
        rows = await self._run(lambda: self._conn.execute("SELECT * FROM audit_checkpoint ORDER BY idx").fetchall())
        return [Checkpoint(*row) for row in rows]


def _to_record(row: Sequence[object]) -> AuditRecord:
    idx, ts, request_id, kind, fields, prev_hash, hash_ = row
    try:
        parsed = json.loads(fields)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        parsed = {"__unparseable__": fields}  # verification will report the hash mismatch
    return AuditRecord(idx, ts, request_id, kind, parsed, prev_hash, hash_)  # type: ignore[arg-type]
