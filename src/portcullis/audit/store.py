"""Where audit records live: the ``AuditStore`` seam and its embedded SQLite implementation.

Contract of every store:

* ``append(batch)`` writes the whole batch in one transaction and returns only once it is
  durable. It refuses (:class:`ChainConflict`) a batch that does not continue the stored head
  — first index = head index + 1, first ``prev_hash`` = head hash, links inside the batch — so
  two writers can never fork the chain. Nothing of a refused or failed batch is written.
* ``head()`` is ``(index, hash)`` of the last record, or ``None`` for an empty chain.
* ``read(from_index, limit)`` returns records in index order; ``checkpoints()`` in index order.
* Driver exceptions never escape: they become :class:`AuditUnavailable` (detail for operators).

``SqliteAuditStore`` runs stdlib ``sqlite3`` in worker threads (never blocking the event loop),
in WAL mode with ``synchronous=FULL`` so a commit is on disk when ``append`` returns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import anyio.to_thread

from portcullis.audit.errors import AuditUnavailable, ChainConflict
from portcullis.audit.record import AuditRecord, Checkpoint, canonical_bytes, continues

T = TypeVar("T")


@runtime_checkable
class AuditStore(Protocol):
    """The storage seam of the audit trail (SQLite embedded; PostgreSQL for clusters)."""

    async def append(self, batch: Sequence[AuditRecord]) -> None: ...
    async def head(self) -> tuple[int, str] | None: ...
    async def read(self, from_index: int, limit: int) -> list[AuditRecord]: ...
    async def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...
    async def checkpoints(self) -> list[Checkpoint]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_record (
    idx        INTEGER PRIMARY KEY,
    ts         REAL    NOT NULL,
    request_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    fields     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    idx       INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    ts        REAL NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""
_HEAD = "SELECT idx, hash FROM audit_record ORDER BY idx DESC LIMIT 1"


class SqliteAuditStore:
    """The embedded audit store: one SQLite file. Open with ``await SqliteAuditStore.open(path)``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one statement sequence at a time; threads come from anyio's pool

    @classmethod
    async def open(cls, path: str | Path) -> SqliteAuditStore:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            return cls(await anyio.to_thread.run_sync(connect))
        except sqlite3.Error as exc:
            raise AuditUnavailable(detail=f"audit store open failed: {exc}") from None

    async def aclose(self) -> None:
        await self._run(self._conn.close)

    async def __aenter__(self) -> SqliteAuditStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        try:
            return await anyio.to_thread.run_sync(locked)
        except sqlite3.Error as exc:
            raise AuditUnavailable(detail=f"audit store failed: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ records

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        rows = [(r.index, r.ts, r.request_id, r.kind, canonical_bytes(r.fields).decode("utf-8"), r.prev_hash, r.hash)
                for r in batch]

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
        out = []
        for idx, ts, request_id, kind, fields, prev_hash, hash_ in rows:
            try:
                parsed = json.loads(fields)
            except ValueError:
                parsed = {"__unparseable__": fields}  # verification will report the hash mismatch
            out.append(AuditRecord(idx, ts, request_id, kind, parsed, prev_hash, hash_))
        return out

    # ------------------------------------------------------------------ checkpoints

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        c = checkpoint
        await self._run(lambda: self._conn.execute(
            "INSERT INTO audit_checkpoint VALUES (?, ?, ?, ?, ?)",
            (c.index, c.hash, c.ts, c.key_id, c.signature)))

    async def checkpoints(self) -> list[Checkpoint]:
        rows = await self._run(lambda: self._conn.execute("SELECT * FROM audit_checkpoint ORDER BY idx").fetchall())
        return [Checkpoint(*row) for row in rows]
