"""Connections to the cluster's PostgreSQL: pools opened from :class:`PostgresConfig`, and the start check.

* :func:`open_database` resolves ``url_ref`` (``secret://…``), adds the statement timeout to the session's
  ``options`` (kept beside any ``options`` the URL already carries, e.g. a ``search_path``), and opens one
  sync pool of at most ``pool_size`` connections in autocommit mode (a store opens a transaction where it
  needs one). It waits for the first connection: an unreachable database refuses the start (fail closed).
  A connection lost later (the server stopped or restarted) fails that statement closed; the pool drops it,
  retries in the background for :func:`reconnect_timeout` only, and opens a new one on the next demand.
  Stores run their statements in worker threads, as their SQLite siblings do (docs/decisions.md).
* :meth:`Database.async_pool` is an async pool over the same settings, opened on first use inside the
  running loop, for a store whose protocol is async and hot enough to want one (the audit store).
* :func:`masked` is the only form of the URL that reaches a log or an error: never the password.
* :meth:`Database.check_schema` runs :func:`portcullis.storage.migrations.problems` at start; any problem
  refuses the start with :class:`SchemaMismatch` (fixed texts naming components and versions only).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from portcullis.config.secrets import resolve_secret
from portcullis.errors import PortcullisError
from portcullis.storage.config import PostgresConfig
from portcullis.storage.migrations import Component, migrate, problems

T = TypeVar("T")


class StorageUnavailable(PortcullisError):
    message = "PostgreSQL unavailable"


class SchemaMismatch(PortcullisError):
    """The database's schema is behind or ahead of this program: the gateway does not start."""

    message = "storage schema does not match this program"

    def __init__(self, found: Sequence[str]) -> None:
        super().__init__(detail="; ".join(found))
        self.problems = tuple(found)


def masked(url: str) -> str:
    """``postgresql://user@host:port/db`` without the password or any other parameter (for logs)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://<unparseable>"
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


def conninfo(url: str, cfg: PostgresConfig) -> str:
    """The URL with the connect timeout and the statement timeout (a session setting) added."""
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.Error:
        raise StorageUnavailable(detail="storage.postgresql.url_ref: not a PostgreSQL connection URL") from None
    options = f"{params.get('options', '')} -c statement_timeout={cfg.statement_timeout_ms}".strip()
    params.update(options=options, connect_timeout=max(1, math.ceil(cfg.connect_timeout_s)))
    return make_conninfo(**params)


def reconnect_timeout(cfg: PostgresConfig) -> float:
    """How long a pool keeps retrying one lost connection (psycopg_pool's default is 5 minutes, its backoff
    doubling up to a minute and more). Kept short so that, after an outage, the next call opens a connection at
    once instead of waiting for a retry scheduled long ago: calls fail closed meanwhile either way."""
    return max(1.0, cfg.connect_timeout_s)


class Database:
    """One PostgreSQL database: a sync pool (opened here), an async one on demand, and its masked name."""

    def __init__(self, url: str, cfg: PostgresConfig) -> None:
        self.name = masked(url)
        self._info = conninfo(url, cfg)
        self._cfg = cfg
        self._async: AsyncConnectionPool | None = None
        self._lock = threading.Lock()
        self.pool = ConnectionPool(self._info, min_size=1, max_size=cfg.pool_size, open=False,
                                   timeout=cfg.connect_timeout_s, kwargs={"autocommit": True},
                                   check=ConnectionPool.check_connection, name="portcullis",
                                   reconnect_timeout=reconnect_timeout(cfg))

    def open(self) -> Database:
        """Open the pool and wait for its first connection; :class:`StorageUnavailable` when none comes."""
        try:
            self.pool.open(wait=True, timeout=self._cfg.connect_timeout_s)
        except psycopg.Error as exc:
            self.pool.close(timeout=0)
            raise StorageUnavailable(detail=f"{self.name}: cannot connect ({type(exc).__name__})") from None
        return self

    def close(self) -> None:
        """Close the sync pool (the gateway does at shutdown; the async pool is its user's to close)."""
        self.pool.close(timeout=1)

    def run(self, fn: Callable[[psycopg.Connection[Any]], T], unavailable: Callable[[str], Exception]) -> T:
        """``fn(conn)`` in one transaction; a driver failure becomes ``unavailable(detail)`` (fail closed).

        Anything else ``fn`` raises rolls the transaction back and passes through unchanged."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                return fn(conn)
        except psycopg.Error as exc:
            raise unavailable(f"{self.name}: {type(exc).__name__}") from None

    def async_pool(self) -> AsyncConnectionPool:
        """An async pool over the same settings (not opened: ``await pool.open()`` inside the loop)."""
        with self._lock:
            if self._async is None:
                self._async = AsyncConnectionPool(self._info, min_size=1, max_size=self._cfg.pool_size, open=False,
                                                  timeout=self._cfg.connect_timeout_s, kwargs={"autocommit": True},
                                                  check=AsyncConnectionPool.check_connection,
                                                  name="portcullis-async",
                                                  reconnect_timeout=reconnect_timeout(self._cfg))
            return self._async

    def check_schema(self, components: Sequence[Component]) -> None:
        """Refuse (:class:`SchemaMismatch`) a database whose schema is behind or ahead of ``components``."""
        try:
            with self.pool.connection() as conn:
                found = problems(conn, components)
        except psycopg.Error as exc:
            raise StorageUnavailable(detail=f"{self.name}: schema check failed ({type(exc).__name__})") from None
        if found:
            raise SchemaMismatch(found)

    def migrate(self, components: Sequence[Component]) -> list[tuple[str, int, int]]:
        try:
            with self.pool.connection() as conn:
                return migrate(conn, components)
        except psycopg.Error as exc:
            raise StorageUnavailable(detail=f"{self.name}: migration failed ({type(exc).__name__})") from None

    def status(self, components: Sequence[Component]) -> list[tuple[str, int, int]]:
        """``(component, version in the database, version of this program)`` for each component."""
        from portcullis.storage.migrations import _versions

        try:
            with self.pool.connection() as conn:
                found = _versions(conn)
        except psycopg.Error as exc:
            raise StorageUnavailable(detail=f"{self.name}: status failed ({type(exc).__name__})") from None
        return [(c.name, found.get(c.name, 0), c.version) for c in components]


def open_database(cfg: PostgresConfig, *, origin: Path) -> Database:
    """Resolve ``cfg.url_ref`` (a ConfigError naming ``origin`` when it cannot be) and open the pool;
    :class:`StorageUnavailable` (masked detail) when the database cannot be reached."""
    return Database(resolve_secret(cfg.url_ref, origin=origin), cfg).open()
