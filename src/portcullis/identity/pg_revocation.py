"""The cluster revocation list: the same snapshot discipline as :class:`SqliteRevocations`, over PostgreSQL.

Requests read the in-memory snapshot only; the background task reloads it from the ``revocations`` table
every ``refresh_s`` (1 s), so a revocation written on any replica (or by ``portcullis token revoke``
against the same database) applies everywhere within about a second. A database that cannot be read
leaves the snapshot to age past ``max_staleness_s``, after which every request is denied
(``revocation_unavailable``): never treated as empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from portcullis.identity.revocation import KINDS, SqliteRevocations
from portcullis.storage.migrations import Component
from portcullis.storage.postgres import Database, StorageUnavailable

PG_COMPONENT = Component("revocations", (
    """CREATE TABLE revocations (
        kind text NOT NULL CHECK (kind IN ('jti', 'client', 'agent')),
        value text NOT NULL,
        revoked_at double precision NOT NULL,
        reason text NOT NULL DEFAULT '',
        PRIMARY KEY (kind, value))""",
))


def _unavailable(detail: str) -> Exception:
    return StorageUnavailable(detail=detail)


class PostgresRevocations(SqliteRevocations):
    """:class:`~portcullis.identity.revocation.RevocationList` over the cluster's PostgreSQL."""

    errors = (StorageUnavailable, psycopg.Error)

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.monotonic, refresh_s: float = 1.0,
                 max_staleness_s: float = 5.0) -> None:
        super().__init__(Path(db.name), clock=clock, refresh_s=refresh_s, max_staleness_s=max_staleness_s)
        self._db = db

    def rows(self) -> list[tuple[str, str]]:
        def select(c: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            return [(str(k), str(v)) for k, v in c.execute("SELECT kind, value FROM revocations").fetchall()]
        return self._db.run(select, _unavailable)


def revoke(db: Database, kind: str, value: str, reason: str = "") -> None:
    """Add one entry (``portcullis token revoke`` in cluster mode); :class:`StorageUnavailable` on failure."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    db.run(lambda c: c.execute("INSERT INTO revocations (kind, value, revoked_at, reason) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (kind, value) DO UPDATE SET revoked_at = EXCLUDED.revoked_at, "
                               "reason = EXCLUDED.reason", (kind, value, time.time(), reason[:500])), _unavailable)
