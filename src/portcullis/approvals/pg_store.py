"""The cluster implementation of :class:`~portcullis.approvals.store.ApprovalStore`: PostgreSQL.

Same contract as :class:`~portcullis.approvals.store.SqliteApprovalStore` (read its docstring); what
differs is how atomicity holds across replicas:

* ``transition`` is one transaction: ``SELECT … FOR UPDATE`` of the row, ``change``, ``UPDATE``,
  ``COMMIT``. A second transition of the same approval, on this replica or any other, waits on the row
  lock and then reads the committed result, so an approval is redeemed exactly once wherever it is redeemed.
* ``create`` with ``max_open`` takes a transaction-scoped advisory lock on the requester before counting,
  so concurrent proposals of one requester on different replicas never pass the cap.

Statements run in worker threads over the sync pool (:mod:`portcullis.storage.postgres`); a driver
failure (unreachable, connection killed, statement timeout) is :class:`ApprovalStoreUnavailable`.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import psycopg

from portcullis.approvals.model import Approval
from portcullis.approvals.store import (
    ApprovalStoreUnavailable,
    OpenApprovalsExceeded,
    UnknownCursor,
    _decode,
    _encode,
)
from portcullis.storage.migrations import Component
from portcullis.storage.postgres import Database

T = TypeVar("T")
Conn = psycopg.Connection[Any]

PG_COMPONENT = Component("approvals", (
    """CREATE TABLE approvals_approval (
        id            text PRIMARY KEY,
        created_at    double precision NOT NULL,
        expires_at    double precision NOT NULL,
        status        text NOT NULL,
        tool          text NOT NULL,
        requester_key text NOT NULL,
        body          text NOT NULL);
    CREATE INDEX approvals_approval_status ON approvals_approval (status, created_at);
    CREATE INDEX approvals_approval_requester ON approvals_approval (requester_key, tool, created_at);""",
))
_COUNT_OPEN = ("SELECT count(*) FROM approvals_approval WHERE requester_key = %s AND status = 'pending' "
               "AND expires_at > %s")


def _count(c: Conn, requester_key: str, now: float) -> int:
    row = c.execute(_COUNT_OPEN, (requester_key, now)).fetchone()
    return 0 if row is None else int(row[0])


def _unavailable(detail: str) -> Exception:
    return ApprovalStoreUnavailable(detail=f"approval store failed: {detail}")


class PostgresApprovalStore:
    """Approvals in the cluster's PostgreSQL (tables ``approvals_*``)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self._refreshing = False

    async def _run(self, fn: Callable[[Conn], T]) -> T:
        return await anyio.to_thread.run_sync(self._db.run, fn, _unavailable)

    def close(self) -> None:
        """The pool belongs to the :class:`Database` (closed by whoever opened it)."""

    def open_counts(self) -> dict[str, int]:
        """Approvals pending and approved-but-unused (the metrics scrape). The scrape runs on the event loop, so
        this never waits on the network: it returns the last counts read and starts a refresh in a thread."""
        with self._counts_lock:
            if not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh_counts, name="approvals-open-counts", daemon=True).start()
            return dict(self._counts)

    def _refresh_counts(self) -> None:
        try:
            rows = self._db.run(lambda c: c.execute("SELECT status, count(*) FROM approvals_approval WHERE status IN "
                                                    "('pending', 'approved') GROUP BY status").fetchall(), _unavailable)
            counts = {status: int(count) for status, count in rows}
        except ApprovalStoreUnavailable:
            counts = None  # the last counts stay; calls fail closed on their own
        with self._counts_lock:
            if counts is not None:
                self._counts = counts
            self._refreshing = False

    async def count_open(self, requester_key: str, now: float) -> int:
        return await self._run(lambda c: _count(c, requester_key, now))

    async def create(self, approval: Approval, *, max_open: int | None = None, now: float = 0.0) -> None:
        def insert(c: Conn) -> None:
            if max_open is not None:
                c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                          ("approvals:" + approval.requester_key,))
                if _count(c, approval.requester_key, now) >= max_open:
                    raise OpenApprovalsExceeded(approval.requester_key)
            c.execute("INSERT INTO approvals_approval (id, created_at, expires_at, status, tool, requester_key, body) "
                      "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                      (approval.id, approval.created_at, approval.expires_at, approval.status, approval.tool,
                       approval.requester_key, _encode(approval)))
        await self._run(insert)

    async def prune(self, *, created_before: float) -> int:
        return await self._run(lambda c: int(c.execute(
            "DELETE FROM approvals_approval WHERE status IN ('denied', 'expired', 'executed') AND created_at < %s",
            (created_before,)).rowcount))

    async def get(self, approval_id: str) -> Approval | None:
        def select(c: Conn) -> Approval | None:
            row = c.execute("SELECT body FROM approvals_approval WHERE id = %s", (approval_id,)).fetchone()
            return None if row is None else _decode(row[0])
        return await self._run(select)

    async def list(self, *, status: str | None = None, limit: int = 100,
                   before: str | None = None) -> builtins.list[Approval]:
        def select(c: Conn) -> builtins.list[Approval]:
            where: builtins.list[str] = []
            params: builtins.list[Any] = []
            if status is not None:
                where.append("status = %s")
                params.append(status)
            if before is not None:
                mark = c.execute("SELECT created_at, id FROM approvals_approval WHERE id = %s", (before,)).fetchone()
                if mark is None:
                    raise UnknownCursor(before)
                where.append("(created_at, id) < (%s, %s)")
                params.extend(mark)
            clause = f"WHERE {' AND '.join(where)} " if where else ""
            rows = c.execute(f"SELECT body FROM approvals_approval {clause}"  # noqa: S608 - fixed fragments, values bound
                             "ORDER BY created_at DESC, id DESC LIMIT %s", (*params, limit)).fetchall()
            return [_decode(body) for (body,) in rows]
        return await self._run(select)

    async def recent(self, *, requester_key: str, tool: str, limit: int, exclude: str) -> builtins.list[Approval]:
        def select(c: Conn) -> builtins.list[Approval]:
            rows = c.execute("SELECT body FROM approvals_approval WHERE requester_key = %s AND tool = %s AND id <> %s "
                             "ORDER BY created_at DESC LIMIT %s", (requester_key, tool, exclude, limit)).fetchall()
            return [_decode(body) for (body,) in rows]
        return await self._run(select)

    async def transition(self, approval_id: str, change: Callable[[Approval], Approval]) -> Approval:
        def atomically(c: Conn) -> Approval:
            row = c.execute("SELECT body FROM approvals_approval WHERE id = %s FOR UPDATE", (approval_id,)).fetchone()
            if row is None:
                raise KeyError(approval_id)
            updated = change(_decode(row[0]))
            if updated.id != approval_id:
                raise ValueError("a transition may not change the approval id")
            c.execute("UPDATE approvals_approval SET status = %s, expires_at = %s, body = %s WHERE id = %s",
                      (updated.status, updated.expires_at, _encode(updated), approval_id))
            return updated
        return await self._run(atomically)
