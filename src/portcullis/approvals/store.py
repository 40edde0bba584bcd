"""Where approvals live: the ``ApprovalStore`` seam and its embedded SQLite implementation.

Contract of every store:

* ``create`` adds a new approval; ids never repeat. With ``max_open`` it first counts the
  requester's open approvals (``pending`` and not yet past ``expires_at``) and refuses with
  :class:`OpenApprovalsExceeded` when there are already ``max_open`` — count and insert in one
  transaction, so concurrent proposals never pass the cap.
* ``list`` pages newest first (``created_at``, then id); ``before`` is the id of the last approval of
  the previous page (keyset paging: a page never repeats or skips an approval that was already there).
* ``prune(statuses, created_before)`` deletes finished approvals (never ``pending`` or ``approved``).
* ``transition(id, change)`` is the only way an approval changes: it reads the approval, calls
  ``change(current)`` and writes what it returns, **atomically** (no other transition of the
  same approval can interleave, in this process or another). ``change`` may raise to refuse;
  then nothing is written. This is what makes "single use" and "two distinct approvers" hold
  under concurrency.
* Driver failures become :class:`ApprovalStoreUnavailable` (callers fail closed).

``SqliteApprovalStore`` keeps one file in the state directory (owner-only), WAL mode,
``synchronous=FULL`` (approvals are rare and must survive a power cut), statements in worker
threads. A transition is ``BEGIN IMMEDIATE`` → read → write → ``COMMIT``. Pending approvals
therefore survive a gateway restart. PostgreSQL (cluster mode) implements the same seam with
``SELECT … FOR UPDATE``.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio.to_thread

from portcullis.approvals.model import Approval, Vote
from portcullis.errors import GatewayCallError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approval (
    id            TEXT PRIMARY KEY,
    created_at    REAL NOT NULL,
    status        TEXT NOT NULL,
    tool          TEXT NOT NULL,
    requester_key TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approval_status ON approval (status, created_at);
CREATE INDEX IF NOT EXISTS approval_requester ON approval (requester_key, tool, created_at);
"""

# the requester's pending approvals not yet past their expiry (an expired one nobody swept frees its slot)
_COUNT_OPEN = ("SELECT count(*) FROM approval WHERE requester_key = ? AND status = 'pending' "
               "AND json_extract(body, '$.expires_at') > ?")


class ApprovalStoreUnavailable(GatewayCallError):
    """The approval store could not answer; the call is not forwarded (fail closed)."""


class OpenApprovalsExceeded(Exception):
    """The requester already has ``max_open`` open approvals; nothing was stored."""


class UnknownCursor(Exception):
    """A paging cursor that names no stored approval."""


class ApprovalStore(Protocol):
    async def create(self, approval: Approval, *, max_open: int | None = None, now: float = 0.0) -> None: ...
    async def count_open(self, requester_key: str, now: float) -> int: ...
    async def get(self, approval_id: str) -> Approval | None: ...
    async def list(self, *, status: str | None = None, limit: int = 100,
                   before: str | None = None) -> builtins.list[Approval]: ...
    async def prune(self, *, created_before: float) -> int: ...
    async def recent(self, *, requester_key: str, tool: str, limit: int, exclude: str) -> builtins.list[Approval]: ...
    async def transition(self, approval_id: str, change: Callable[[Approval], Approval]) -> Approval: ...


def _encode(approval: Approval) -> str:
    return json.dumps(approval.to_json(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _decode(body: str) -> Approval:
    obj = json.loads(body)
    return Approval(
        id=obj["id"], tool=obj["tool"], arguments=obj["arguments"], arguments_hash=obj["arguments_hash"],
        requester=obj["requester"], requester_key=obj["requester_key"], policy_version=obj["policy_version"],
        rule_ids=tuple(obj["rule_ids"]), reasons=tuple(obj["reasons"]), required=int(obj["required"]),
        created_at=float(obj["created_at"]), expires_at=float(obj["expires_at"]), status=obj["status"],
        justification=obj.get("justification", ""), risk=obj.get("risk"),
        votes=tuple(Vote.from_json(v) for v in obj.get("votes", [])), request_id=obj.get("request_id", ""),
        tool_risk=obj.get("tool_risk", ""))


class SqliteApprovalStore:
    """The embedded approval store (one SQLite file)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        if not path.exists():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: Path) -> SqliteApprovalStore:
        try:
            return cls(path)
        except (sqlite3.Error, OSError) as exc:
            raise ApprovalStoreUnavailable(detail=f"approval store {path} cannot be opened: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        try:
            return await anyio.to_thread.run_sync(locked)
        except sqlite3.Error as exc:
            raise ApprovalStoreUnavailable(detail=f"approval store failed: {type(exc).__name__}: {exc}") from None

    def open_counts(self) -> dict[str, int]:
        """Approvals pending and approved-but-unused, by status (for the metrics scrape; one indexed query)."""
        with self._lock:
            rows = self._conn.execute("SELECT status, count(*) FROM approval WHERE status IN ('pending', 'approved') "
                                      "GROUP BY status").fetchall()
        return {status: int(count) for status, count in rows}

    def _count_open(self, requester_key: str, now: float) -> int:
        row = self._conn.execute(_COUNT_OPEN, (requester_key, now)).fetchone()
        return int(row[0])

    async def count_open(self, requester_key: str, now: float) -> int:
        """How many of this requester's approvals are pending and not yet past their expiry."""
        return await self._run(lambda: self._count_open(requester_key, now))

    async def create(self, approval: Approval, *, max_open: int | None = None, now: float = 0.0) -> None:
        def insert() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if max_open is not None and self._count_open(approval.requester_key, now) >= max_open:
                    raise OpenApprovalsExceeded(approval.requester_key)
                self._conn.execute("INSERT INTO approval (id, created_at, status, tool, requester_key, body) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", (approval.id, approval.created_at, approval.status,
                                                                 approval.tool, approval.requester_key,
                                                                 _encode(approval)))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        await self._run(insert)

    async def prune(self, *, created_before: float) -> int:
        """Delete denied, expired and executed approvals created before ``created_before``; returns how many."""
        def delete() -> int:
            cursor = self._conn.execute("DELETE FROM approval WHERE status IN ('denied', 'expired', 'executed') "
                                        "AND created_at < ?", (created_before,))
            return int(cursor.rowcount)
        return await self._run(delete)

    async def get(self, approval_id: str) -> Approval | None:
        def select() -> Approval | None:
            row = self._conn.execute("SELECT body FROM approval WHERE id = ?", (approval_id,)).fetchone()
            return None if row is None else _decode(row[0])
        return await self._run(select)

    async def list(self, *, status: str | None = None, limit: int = 100,
                   before: str | None = None) -> builtins.list[Approval]:
        def select() -> builtins.list[Approval]:
            where: builtins.list[str] = []
            params: builtins.list[Any] = []
            if status is not None:
                where.append("status = ?")
                params.append(status)
            if before is not None:
                mark = self._conn.execute("SELECT created_at, id FROM approval WHERE id = ?", (before,)).fetchone()
                if mark is None:
                    raise UnknownCursor(before)
                where.append("(created_at < ? OR (created_at = ? AND id < ?))")
                params.extend((mark[0], mark[0], mark[1]))
            clause = f"WHERE {' AND '.join(where)} " if where else ""
            rows = self._conn.execute(f"SELECT body FROM approval {clause}ORDER BY created_at DESC, id DESC "  # noqa: S608 - fixed fragments, values bound
                                      "LIMIT ?", (*params, limit))
            return [_decode(body) for (body,) in rows.fetchall()]
        return await self._run(select)

    async def recent(self, *, requester_key: str, tool: str, limit: int, exclude: str) -> builtins.list[Approval]:
        def select() -> builtins.list[Approval]:
            rows = self._conn.execute("SELECT body FROM approval WHERE requester_key = ? AND tool = ? AND id != ? "
                                      "ORDER BY created_at DESC LIMIT ?", (requester_key, tool, exclude, limit))
            return [_decode(body) for (body,) in rows.fetchall()]
        return await self._run(select)

    async def transition(self, approval_id: str, change: Callable[[Approval], Approval]) -> Approval:
        def atomically() -> Approval:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT body FROM approval WHERE id = ?", (approval_id,)).fetchone()
                if row is None:
                    raise KeyError(approval_id)
                updated = change(_decode(row[0]))
                if updated.id != approval_id:
                    raise ValueError("a transition may not change the approval id")
                self._conn.execute("UPDATE approval SET status = ?, body = ? WHERE id = ?",
                                   (updated.status, _encode(updated), approval_id))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return updated
        return await self._run(atomically)


def approval_store_path(state_dir: Path, configured: str | None, env: dict[str, str] | Any) -> Path:
    """``$PORTCULLIS_APPROVALS_PATH``, else ``approvals.path``, else ``approvals.sqlite3`` in the state dir."""
    return Path(env.get("PORTCULLIS_APPROVALS_PATH") or configured or state_dir / "approvals.sqlite3")
