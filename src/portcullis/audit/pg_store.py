"""The audit trail in PostgreSQL, shared by every gateway replica: ONE linear chain, serialised appends.

Contract (on top of the ``AuditStore`` contract in ``store.py``):

* :meth:`PostgresAuditStore.append_chained` is the cluster's append. In one transaction it takes
  ``pg_advisory_xact_lock(AUDIT_LOCK)``, reads the head *in a later statement* (under READ COMMITTED
  each statement has its own snapshot, so the head read after the lock sees every earlier commit),
  lets the writer chain its batch onto that head (pure ``make_record``), inserts the batch with one
  statement and commits. It returns the chained records only after ``COMMIT`` returned, with
  ``synchronous_commit = on`` for the session: an acknowledged record is in PostgreSQL's WAL on disk.
  Replicas never chain from an in-memory head, so any number of them append to one chain without a
  fork; ``idx`` is the primary key, so even a buggy writer cannot fork it (the insert fails).
* ``append(batch)`` (pre-chained records, the ``AuditStore`` seam) takes the same lock and refuses
  (:class:`ChainConflict`) a batch that does not continue the head.
* A failure anywhere (connection killed, server gone, statement timeout, pool exhausted) rolls the
  transaction back and raises :class:`AuditUnavailable` with a fixed detail (driver class and
  SQLSTATE, never the URL): the writer fails that batch closed. If the connection dies *during*
  ``COMMIT`` the batch may be in the chain without having been acknowledged: its callers were denied,
  the chain still verifies. Broken connections are dropped by the pool; the next append reconnects.
* Checkpoints are signed by whichever replica's checkpointer is due, with the cluster's one audit
  signing key (every replica is given the same ``audit-signing.pem`` and ``audit-hmac.key``; see
  docs/decisions.md). Two replicas signing the same head index keep the first (``ON CONFLICT DO
  NOTHING``). ``audit_signer`` records the cluster's key id: a replica started with another key is
  refused at open (it would write checkpoints nobody can verify) — a guard against misconfiguration,
  not a trust root: verify with the public key kept outside the database.
* :meth:`snapshot` holds one ``REPEATABLE READ READ ONLY`` transaction for the reads inside it
  (``audit verify`` and ``audit export`` read records and checkpoints of one moment).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import psycopg
import psycopg_pool

from portcullis.audit.errors import AuditUnavailable, ChainConflict
from portcullis.audit.record import AuditRecord, Checkpoint, canonical_bytes, continues
from portcullis.audit.store import _to_record
from portcullis.storage.config import PostgresConfig
from portcullis.storage.migrations import Component, problems

AUDIT_LOCK = 0x61756474  # pg_advisory_xact_lock key of the audit chain ("audt")

_STEP_1 = """
CREATE TABLE audit_record (
    idx        bigint PRIMARY KEY CHECK (idx >= 0),
    ts         double precision NOT NULL,
    request_id text NOT NULL,
    kind       text NOT NULL,
    fields     text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL
);
CREATE INDEX audit_record_request_id ON audit_record (request_id);
CREATE INDEX audit_record_ts ON audit_record (ts);
CREATE TABLE audit_checkpoint (
    idx       bigint PRIMARY KEY,
    hash      text NOT NULL,
    ts        double precision NOT NULL,
    key_id    text NOT NULL,
    signature text NOT NULL
);
CREATE TABLE audit_signer (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    key_id     text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);
"""
PG_COMPONENT = Component("audit", (_STEP_1,))

_COLUMNS = "idx, ts, request_id, kind, fields, prev_hash, hash"
_HEAD = "SELECT idx, hash FROM audit_record ORDER BY idx DESC LIMIT 1"
_INSERT = (f"INSERT INTO audit_record ({_COLUMNS}) SELECT * FROM unnest("  # noqa: S608 - constant text
           "%s::bigint[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])")
_snapshot_conn: contextvars.ContextVar[psycopg.AsyncConnection[Any] | None] = contextvars.ContextVar(
    "audit_pg_snapshot", default=None)

Chain = Callable[[tuple[int, str] | None], list[AuditRecord]]


def _unavailable(what: str, exc: BaseException) -> AuditUnavailable:
    """A fixed detail: the driver's class and SQLSTATE only (its message may name the host or user)."""
    state = getattr(exc, "sqlstate", None)
    return AuditUnavailable(detail=f"audit store (PostgreSQL) {what} failed: {type(exc).__name__}"
                                   + (f" ({state})" if state else ""))


def _columns(batch: Sequence[AuditRecord]) -> list[list[Any]]:
    cols: list[list[Any]] = [[], [], [], [], [], [], []]
    for r in batch:
        text = (r.fields_json if r.fields_json is not None else canonical_bytes(r.fields)).decode("utf-8")
        for col, value in zip(cols, (r.index, r.ts, r.request_id, r.kind, text, r.prev_hash, r.hash), strict=True):
            col.append(value)
    return cols


class PostgresAuditStore:
    """The cluster's audit store. Open with :func:`open_postgres_audit`; close with :meth:`aclose`."""

    chains_at_append = True  # AuditWriter chains each batch onto the head read under the lock

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        held = _snapshot_conn.get()
        if held is not None:
            yield held
            return
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise _unavailable(what, exc) from None

    async def open(self, timeout_s: float) -> None:
        """Open the pool in the serving event loop (a store from :func:`prepare_postgres_audit`)."""
        try:
            await self._pool.open(wait=True, timeout=timeout_s)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise _unavailable("open", exc) from None

    async def aclose(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> PostgresAuditStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """Hold one read-only REPEATABLE READ transaction: every read inside sees one moment."""
        async with self._connection("snapshot") as conn:
            try:
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    token = _snapshot_conn.set(conn)
                    try:
                        yield
                    finally:
                        _snapshot_conn.reset(token)
            except psycopg.Error as exc:
                raise _unavailable("snapshot", exc) from None

    # ------------------------------------------------------------------ records

    async def append_chained(self, chain: Chain) -> list[AuditRecord]:
        """Chain a batch onto the stored head under the chain's lock and commit it (module contract)."""
        async with self._connection("append") as conn:
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
                    row = await (await conn.execute(_HEAD)).fetchone()
                    records = chain(None if row is None else (int(row[0]), str(row[1])))
                    await conn.execute(_INSERT, _columns(records))
            except psycopg.Error as exc:
                raise _unavailable("append", exc) from None
        return records

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        def check(head: tuple[int, str] | None) -> list[AuditRecord]:
            if not continues(head, batch):
                raise ChainConflict(detail="append does not continue the stored head")
            return list(batch)

        await self.append_chained(check)

    async def head(self) -> tuple[int, str] | None:
        async with self._connection("head") as conn:
            try:
                row = await (await conn.execute(_HEAD)).fetchone()
            except psycopg.Error as exc:
                raise _unavailable("head", exc) from None
        return None if row is None else (int(row[0]), str(row[1]))

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return await self.select_records(
            f"SELECT {_COLUMNS} FROM audit_record WHERE idx >= %s ORDER BY idx LIMIT %s",  # noqa: S608 - constant
            (from_index, limit))

    async def select_records(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        """One ``SELECT`` of ``audit_record``'s seven columns; ``sql`` is fixed text, values in ``params``.

        Runs in a ``READ ONLY`` transaction (the snapshot's, inside :meth:`snapshot`), so a forensic read
        on the gateway's own pool cannot write either; the session's ``statement_timeout`` bounds it."""
        async with self._connection("read") as conn:
            try:
                if _snapshot_conn.get() is conn:
                    rows = await (await conn.execute(sql, tuple(params))).fetchall()
                else:
                    async with conn.transaction():
                        await conn.execute("SET TRANSACTION READ ONLY")
                        rows = await (await conn.execute(sql, tuple(params))).fetchall()
            except psycopg.Error as exc:
                raise _unavailable("read", exc) from None
        return [_to_record(row) for row in rows]

    async def prune_through(self, index: int) -> int:
        """Retention (see ``SqliteAuditStore.prune_through``), under the chain's lock."""
        async with self._connection("prune") as conn:
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
                    pinned = await (await conn.execute("SELECT 1 FROM audit_checkpoint WHERE idx = %s",
                                                       (index,))).fetchone()
                    newer = await (await conn.execute("SELECT 1 FROM audit_record WHERE idx > %s LIMIT 1",
                                                      (index,))).fetchone()
                    if pinned is None or newer is None:
                        raise AuditUnavailable(detail=f"audit prune through {index} refused: it must end at a "
                                                      "checkpoint and leave a newer record")
                    cursor = await conn.execute("DELETE FROM audit_record WHERE idx <= %s", (index,))
            except psycopg.Error as exc:
                raise _unavailable("prune", exc) from None
        return int(cursor.rowcount)

    # ------------------------------------------------------------------ checkpoints

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        c = checkpoint
        async with self._connection("checkpoint") as conn:
            try:
                await conn.execute("INSERT INTO audit_checkpoint VALUES (%s, %s, %s, %s, %s) "
                                   "ON CONFLICT (idx) DO NOTHING", (c.index, c.hash, c.ts, c.key_id, c.signature))
            except psycopg.Error as exc:
                raise _unavailable("checkpoint", exc) from None

    async def checkpoints(self) -> list[Checkpoint]:
        async with self._connection("checkpoints") as conn:
            try:
                rows = await (await conn.execute("SELECT * FROM audit_checkpoint ORDER BY idx")).fetchall()
            except psycopg.Error as exc:
                raise _unavailable("checkpoints", exc) from None
        return [Checkpoint(int(i), str(h), float(t), str(k), str(s)) for i, h, t, k, s in rows]

    async def claim_signer(self, key_id: str) -> None:
        """Record the cluster's checkpoint key id, or refuse a replica that signs with another key."""
        async with self._connection("signer") as conn:
            try:
                await conn.execute("INSERT INTO audit_signer (key_id) VALUES (%s) ON CONFLICT (one) DO NOTHING",
                                   (key_id,))
                row = await (await conn.execute("SELECT key_id FROM audit_signer")).fetchone()
            except psycopg.Error as exc:
                raise _unavailable("signer", exc) from None
        _check_signer(key_id, None if row is None else row[0])


async def open_postgres_audit(config: PostgresConfig, *, url: str | None = None, origin: Path | None = None,
                              key_id: str | None = None, readonly: bool = False) -> PostgresAuditStore:
    """Open the cluster's audit store; :class:`AuditUnavailable` (fixed text) when it cannot be used.

    ``url`` is the resolved connection URL (default: ``config.url_ref`` resolved, ``origin`` naming
    gateway.yaml in a ConfigError). The schema must be current (``portcullis storage migrate``).
    ``key_id``: this replica's checkpoint key id, checked against the cluster's (:meth:`claim_signer`).
    ``readonly``: every session is ``default_transaction_read_only`` (forensics: ``portcullis audit``).
    """
    if url is None:
        from portcullis.config.secrets import resolve_secret

        url = resolve_secret(config.url_ref, origin=origin) if origin is not None else resolve_secret(config.url_ref)
    pool = _pool(config, url, readonly)
    try:
        await pool.open(wait=True, timeout=config.connect_timeout_s)
        found = await anyio.to_thread.run_sync(_schema_problems_sync, url, config.connect_timeout_s)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        await pool.close()
        raise _unavailable("open", exc) from None
    if found:
        await pool.close()
        raise AuditUnavailable(detail="audit store (PostgreSQL): " + "; ".join(found))
    store = PostgresAuditStore(pool)
    if key_id is not None and not readonly:
        try:
            await store.claim_signer(key_id)
        except AuditUnavailable:
            await pool.close()
            raise
    return store


def _schema_problems_sync(url: str, connect_timeout_s: float) -> list[str]:
    with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s))) as conn:
        return problems(conn, [PG_COMPONENT])


def _pool(config: PostgresConfig, url: str, readonly: bool) -> psycopg_pool.AsyncConnectionPool[Any]:
    """The audit store's pool, not opened (it is opened in the event loop that uses it)."""
    timeout_ms = str(config.statement_timeout_ms)

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT set_config('statement_timeout', %s, false), "
                           "set_config('lock_timeout', %s, false), "
                           "set_config('synchronous_commit', 'on', false), "
                           "set_config('default_transaction_read_only', %s, false)",
                           (timeout_ms, timeout_ms, "on" if readonly else "off"))

    return psycopg_pool.AsyncConnectionPool(
        url, min_size=1, max_size=config.pool_size, open=False, timeout=config.connect_timeout_s,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(config.connect_timeout_s))},
        configure=configure, check=psycopg_pool.AsyncConnectionPool.check_connection,
        reconnect_timeout=max(1.0, config.connect_timeout_s))


def prepare_postgres_audit(config: PostgresConfig, *, origin: Path, key_id: str) -> PostgresAuditStore:
    """The gateway's audit store, checked at start before any event loop runs (``build_gateway`` is sync).

    Resolves the URL, refuses a schema that is behind or ahead and a replica whose checkpoint key is not
    the cluster's (:class:`AuditUnavailable`, fixed text), all over one short synchronous connection; the
    returned store's async pool is opened by :meth:`PostgresAuditStore.open` in the serving loop.
    """
    from portcullis.config.secrets import resolve_secret

    url = resolve_secret(config.url_ref, origin=origin)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(config.connect_timeout_s))) as conn:
            found = problems(conn, [PG_COMPONENT])
            if found:
                raise AuditUnavailable(detail="audit store (PostgreSQL): " + "; ".join(found))
            conn.execute("INSERT INTO audit_signer (key_id) VALUES (%s) ON CONFLICT (one) DO NOTHING", (key_id,))
            row = conn.execute("SELECT key_id FROM audit_signer").fetchone()
    except psycopg.Error as exc:
        raise _unavailable("open", exc) from None
    _check_signer(key_id, None if row is None else row[0])
    return PostgresAuditStore(_pool(config, url, readonly=False))


def _check_signer(key_id: str, cluster: object) -> None:
    if cluster != key_id:
        theirs = "?" if cluster is None else str(cluster).encode("ascii", "backslashreplace").decode("ascii")[:32]
        raise AuditUnavailable(detail=(
            f"this replica's audit signing key (id {key_id}) is not the cluster's (id {theirs}): give every "
            "replica the same audit-signing.pem and audit-hmac.key (docs/audit.md, cluster)"))
