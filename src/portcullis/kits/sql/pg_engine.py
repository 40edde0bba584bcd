"""The PostgreSQL layer: a read-only role, a READ ONLY transaction, a statement timeout.

Each query (asyncpg, one connection per query, closed after):

1. connects as the read-only role that :func:`portcullis.kits.sql.pg_setup.create_readonly_role`
   made (SELECT grants on allow-listed tables only, ``default_transaction_read_only`` on) — never as
   an owner that a ``RESET ROLE`` could return to;
2. runs in a ``READ ONLY`` transaction with ``SET LOCAL statement_timeout`` (and lock and idle
   timeouts), so ``pg_sleep`` and runaway joins end on the server; a client-side deadline backs it;
3. is prepared as one statement (PostgreSQL's extended protocol refuses a second one) and read
   through a cursor, one row past ``max_rows`` at most, under the result-size budget;
4. is rolled back: a read-only kit has nothing to commit.

Driver errors are translated here; nothing above sees asyncpg.
"""

from __future__ import annotations

import math

import anyio
import asyncpg

from portcullis.kits.sql.engine import Params, QueryLimits, QueryResult, collect
from portcullis.kits.sql.errors import QueryRefused, SqlDeclarationError, SqlKitError, SqlLimitExceeded, SqlUnavailable
from portcullis.kits.sql.policy import IDENTIFIER

_CLIENT_GRACE_S = 2.0  # the client deadline trails the server's timeout, so the server's fires first


class PostgresReadOnly:
    """Runs checked SQL as a read-only PostgreSQL role; ``dsn`` must name that role."""

    def __init__(self, dsn: str, *, schema: str, limits: QueryLimits | None = None) -> None:
        if not IDENTIFIER.fullmatch(schema):
            raise SqlDeclarationError("bad_schema_name")
        self._dsn = dsn
        self._schema = schema
        self._limits = limits or QueryLimits()

    @property
    def dialect(self) -> str:
        return "postgres"

    async def fetch(self, sql: str, params: Params, max_rows: int) -> QueryResult:
        """Run ``sql`` with positional ``params`` bound by the driver; see the module docstring."""
        if not isinstance(params, list | tuple):
            raise SqlDeclarationError("postgres_params_are_positional")
        timeout_ms = max(1, math.ceil(self._limits.timeout_s * 1000))
        try:
            with anyio.fail_after(self._limits.timeout_s * 2 + _CLIENT_GRACE_S):
                conn = await self._connect()
                try:
                    return await self._run(conn, sql, params, max_rows, timeout_ms)
                finally:
                    await _close(conn)
        except SqlKitError:
            raise
        except TimeoutError:
            raise SqlLimitExceeded("time_budget", detail="client_deadline") from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise _translate(exc) from None

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                self._dsn,
                timeout=self._limits.timeout_s + _CLIENT_GRACE_S,
                statement_cache_size=0,
                server_settings={
                    "search_path": self._schema,
                    "default_transaction_read_only": "on",
                    "application_name": "portcullis-sql-kit",
                },
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise SqlUnavailable("cannot_connect", detail=type(exc).__name__) from None

    async def _run(
        self, conn: asyncpg.Connection, sql: str, params: Params, max_rows: int, timeout_ms: int
    ) -> QueryResult:
        transaction = conn.transaction(readonly=True)
        await transaction.start()
        try:
            # integers only: nothing from a caller reaches these statements
            await conn.execute(
                f"SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL lock_timeout = {timeout_ms}; "
                f"SET LOCAL idle_in_transaction_session_timeout = {timeout_ms + 1000}"
            )
            statement = await conn.prepare(sql)
            columns = [a.name for a in statement.get_attributes()]
            cursor = await statement.cursor(*params)
            rows = await cursor.fetch(max_rows + 1)
            return collect(columns, (tuple(r.values()) for r in rows), max_rows, self._limits.max_result_bytes)
        finally:
            await transaction.rollback()


async def _close(conn: asyncpg.Connection) -> None:
    """Close politely, shielded from the deadline that may have fired; drop the socket if that fails."""
    with anyio.CancelScope(shield=True):
        try:
            await conn.close(timeout=_CLIENT_GRACE_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            conn.terminate()


def _translate(exc: BaseException) -> SqlKitError:
    detail = type(exc).__name__
    if isinstance(exc, asyncpg.QueryCanceledError | asyncpg.LockNotAvailableError):
        return SqlLimitExceeded("time_budget", detail=detail)
    if isinstance(exc, asyncpg.ProgramLimitExceededError):
        return SqlLimitExceeded("value_too_large", detail=detail)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError | asyncpg.ReadOnlySQLTransactionError):
        return QueryRefused("engine_refused", detail=detail)
    if isinstance(exc, asyncpg.InterfaceError):  # e.g. two statements in one prepared statement
        return QueryRefused("engine_refused", detail=detail)
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError):
        return SqlUnavailable("database_error", detail=detail)
    return QueryRefused("engine_error", detail=detail)
