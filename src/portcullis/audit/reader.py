"""The read seam of forensics: :class:`AuditReader`, over the SQLite file or the cluster's PostgreSQL.

Every forensic read (``audit search``/``timeline``, ``incident report``, ``policy diff``, the approvers'
recent calls) goes through an :class:`AuditReader`; the SQL is ``query.py``'s, written once and spelled
per database by ``sql_dialect.py``. A reader never writes:

* SQLite: the file is opened ``mode=ro`` (:meth:`SqliteAuditStore.open_readonly`).
* PostgreSQL: the CLI opens its pool with ``default_transaction_read_only``; every read of
  :class:`PostgresAuditStore` runs in a ``READ ONLY`` transaction (also on the gateway's own pool), under
  the configured ``statement_timeout``.

An unreachable or unusable store is :class:`~portcullis.audit.errors.AuditUnavailable` with a fixed
detail (never the URL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from portcullis.audit.query import (
    AuditQuery,
    RequestTimeline,
    edge_sql,
    group_requests,
    search_sql,
    timeline_query,
    timeline_sql,
)
from portcullis.audit.record import AuditRecord, Checkpoint
from portcullis.audit.sql_dialect import POSTGRES, SQLITE, Dialect

if TYPE_CHECKING:
    from portcullis.audit.pg_store import PostgresAuditStore
    from portcullis.storage.config import PostgresConfig


class AuditReader(Protocol):
    """Read-only queries of one audit store."""

    async def search(self, query: AuditQuery) -> list[AuditRecord]:
        """The newest ``query.limit`` records matching ``query``, newest first."""
        ...

    async def timeline(self, query: AuditQuery) -> list[RequestTimeline]:
        """The latest ``query.limit`` requests with a record matching ``query`` (principal, time, request
        id), oldest first, each with all its records in index order."""
        ...

    async def window_edges(self, since: float, until: float) -> tuple[AuditRecord, AuditRecord] | None:
        """The first and last record (by index) whose time is in ``[since, until]``; ``None`` when none is."""
        ...

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` records from ``from_index`` on, in index order (the chain, for verification)."""
        ...

    async def checkpoints(self) -> list[Checkpoint]: ...

    def snapshot(self) -> AbstractAsyncContextManager[None]:
        """Hold one read transaction: the reads inside see one moment."""
        ...


class _RecordSource(Protocol):
    async def select_records(self, sql: str, params: Sequence[object]) -> list[AuditRecord]: ...
    async def read(self, from_index: int, limit: int) -> list[AuditRecord]: ...
    async def checkpoints(self) -> list[Checkpoint]: ...
    def snapshot(self) -> AbstractAsyncContextManager[None]: ...


class StoreReader:
    """An :class:`AuditReader` over a store's ``select_records`` in the store's dialect."""

    def __init__(self, store: _RecordSource, dialect: Dialect) -> None:
        self._store = store
        self.dialect = dialect

    async def search(self, query: AuditQuery) -> list[AuditRecord]:
        return await self._store.select_records(*search_sql(self.dialect, query))

    async def timeline(self, query: AuditQuery) -> list[RequestTimeline]:
        return group_requests(await self._store.select_records(*timeline_sql(self.dialect, query)))

    async def window_edges(self, since: float, until: float) -> tuple[AuditRecord, AuditRecord] | None:
        first = await self._store.select_records(edge_sql(self.dialect, newest=False), (since, until))
        last = await self._store.select_records(edge_sql(self.dialect, newest=True), (since, until))
        return (first[0], last[0]) if first and last else None

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return await self._store.read(from_index, limit)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self._store.checkpoints()

    def snapshot(self) -> AbstractAsyncContextManager[None]:
        return self._store.snapshot()


@asynccontextmanager
async def open_sqlite_reader(path: str | Path) -> AsyncIterator[AuditReader]:
    """A reader of the SQLite store at ``path``, opened ``mode=ro`` and closed on exit."""
    from portcullis.audit.store import SqliteAuditStore

    async with await SqliteAuditStore.open_readonly(path) as store:
        yield StoreReader(store, SQLITE)


def postgres_reader(store: PostgresAuditStore) -> AuditReader:
    """A reader over an open PostgreSQL audit store (its reads are READ ONLY transactions)."""
    return StoreReader(store, POSTGRES)


async def open_postgres_readonly(config: PostgresConfig, *, origin: Path) -> PostgresAuditStore:
    """The cluster's audit store (``storage.postgresql`` of the gateway.yaml at ``origin``) over a pool of
    read-only sessions; a URL that cannot be resolved is :class:`AuditUnavailable` too."""
    from portcullis.audit.errors import AuditUnavailable
    from portcullis.audit.pg_store import open_postgres_audit
    from portcullis.errors import ConfigError

    try:
        return await open_postgres_audit(config, origin=origin, readonly=True)
    except ConfigError as exc:
        raise AuditUnavailable(detail=f"storage.postgresql.url_ref: {exc}") from None


@asynccontextmanager
async def open_postgres_reader(config: PostgresConfig, *, origin: Path) -> AsyncIterator[AuditReader]:
    """A reader of the cluster's audit trail over :func:`open_postgres_readonly`, closed on exit."""
    async with await open_postgres_readonly(config, origin=origin) as store:
        yield postgres_reader(store)


async def search(store_path: str | Path, query: AuditQuery) -> list[AuditRecord]:
    """:meth:`AuditReader.search` on the SQLite store at ``store_path``, opened read-only."""
    async with open_sqlite_reader(store_path) as reader:
        return await reader.search(query)


async def timeline(store_path: str | Path, *, request_id: str | None = None, agent_id: str | None = None,
                   since: float | None = None, until: float | None = None,
                   limit: int = 100) -> list[RequestTimeline]:
    """:meth:`AuditReader.timeline` on the SQLite store at ``store_path``, opened read-only.

    The latest ``limit`` requests matching the filters, oldest first, each with all its records.
    A request matches when any of its records matches (``agent_id`` is on decision and
    rejected records only); its other records (the outcome) come with it even when they fall
    outside ``since``/``until``. With no filter at all: the latest ``limit`` requests.
    """
    checked = timeline_query(request_id=request_id, agent_id=agent_id, since=since, until=until, limit=limit)
    async with open_sqlite_reader(store_path) as reader:
        return await reader.timeline(checked)
