"""The SQLite layer: a read-only connection whose authorizer allows only the policy's reads.

Each query gets its own connection, opened in a worker thread and closed after:

1. opened through a ``file:`` URI with ``mode=ro`` (a missing file is an error, never created) —
   or, for a database image built in memory (:meth:`SqliteReadOnly.from_image`), a private copy
   deserialized into a fresh ``:memory:`` connection with ``PRAGMA query_only`` on;
2. extension loading off, no attached databases (``SQLITE_LIMIT_ATTACHED`` 0), values no longer
   than the result budget (``SQLITE_LIMIT_LENGTH``: ``randomblob(1e9)`` fails at once);
3. an authorizer that allows ``SQLITE_SELECT``, ``SQLITE_READ`` of allow-listed tables (and
   columns, when the policy restricts them) and ``SQLITE_FUNCTION`` of allow-listed functions, and
   denies every other action (PRAGMA, ATTACH, writes, DDL, transactions, recursive CTEs, ...);
4. a progress handler that interrupts past the step budget or the deadline;
5. rows read one past ``max_rows`` at most, and the result-size budget.

Driver errors are translated here by SQLite's error name; nothing above sees ``sqlite3``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread

from portcullis.kits.sql.engine import Params, QueryLimits, QueryResult, collect
from portcullis.kits.sql.errors import QueryRefused, SqlDeclarationError, SqlKitError, SqlLimitExceeded, SqlUnavailable
from portcullis.kits.sql.policy import ReadOnlyPolicy

_PROGRESS_EVERY = 1000  # VM instructions between progress-handler calls


class SqliteReadOnly:
    """Runs checked SQL against one SQLite file, read-only, under :class:`ReadOnlyPolicy` and limits."""

    def __init__(self, path: Path, policy: ReadOnlyPolicy, limits: QueryLimits | None = None) -> None:
        if policy.dialect != "sqlite":
            raise SqlDeclarationError("dialect_mismatch")
        self._uri = f"file:{quote(str(Path(path).absolute()))}?mode=ro"
        self._image: bytes | None = None
        self._policy = policy
        self._limits = limits or QueryLimits()

    @classmethod
    def from_image(cls, image: bytes, policy: ReadOnlyPolicy, limits: QueryLimits | None = None) -> SqliteReadOnly:
        """An engine over a serialized database (``sqlite3.Connection.serialize()``); each query gets a copy."""
        engine = cls(Path("/nonexistent"), policy, limits)
        engine._image = bytes(image)
        return engine

    @property
    def dialect(self) -> str:
        return "sqlite"

    async def fetch(self, sql: str, params: Params, max_rows: int) -> QueryResult:
        """Run ``sql`` with ``params`` bound by the driver; see the module docstring for the layers."""
        return await anyio.to_thread.run_sync(self._run, sql, params, max_rows)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, _src: str | None) -> int:
        """Step 3. A READ with an empty column is a table read without columns (``count(*)``)."""
        if action == sqlite3.SQLITE_SELECT:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and arg1 is not None and db in (None, "main"):
            table = arg1.lower()
            if table not in self._policy.tables:
                return sqlite3.SQLITE_DENY
            columns = self._policy.tables[table]
            if columns is None or not arg2 or arg2.lower() in columns:
                return sqlite3.SQLITE_OK
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and arg2 is not None and arg2.lower() in self._policy.functions:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    def _connect(self) -> sqlite3.Connection:
        if self._image is None:
            return sqlite3.connect(self._uri, uri=True, timeout=self._limits.timeout_s, isolation_level=None)
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            conn.deserialize(self._image)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise SqlUnavailable("cannot_open", detail=type(exc).__name__) from None
        try:
            conn.enable_load_extension(False)
        except AttributeError:  # built without extension support: nothing to turn off
            pass
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(1024, self._limits.max_result_bytes))
        conn.set_authorizer(self._authorize)
        return conn

    def _run(self, sql: str, params: Params, max_rows: int) -> QueryResult:
        conn = self._open()
        deadline = time.monotonic() + self._limits.timeout_s
        budget = [self._limits.max_steps // _PROGRESS_EVERY + 1]

        def progress() -> int:
            budget[0] -= 1
            return int(budget[0] < 0 or time.monotonic() > deadline)

        conn.set_progress_handler(progress, _PROGRESS_EVERY)
        try:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description or ()]
            return collect(columns, cursor, max_rows, self._limits.max_result_bytes)
        except SqlKitError:
            raise
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        finally:
            conn.close()


def _translate(exc: sqlite3.Error) -> SqlKitError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    detail = f"{type(exc).__name__}:{name}"
    if name == "SQLITE_INTERRUPT":
        return SqlLimitExceeded("time_budget", detail=detail)
    if name == "SQLITE_TOOBIG":
        return SqlLimitExceeded("value_too_large", detail=detail)
    if name in {"SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_IOERR", "SQLITE_BUSY"}:
        return SqlUnavailable("database_error", detail=detail)
    # a denied function is reported as SQLITE_ERROR "not authorized to use function"
    if name in {"SQLITE_AUTH", "SQLITE_READONLY"} or "not authorized" in str(exc):
        return QueryRefused("engine_refused", detail=detail)
    if isinstance(exc, sqlite3.ProgrammingError):  # e.g. more than one statement: sqlite3 runs only one
        return QueryRefused("engine_refused", detail=detail)
    return QueryRefused("engine_error", detail=detail)
