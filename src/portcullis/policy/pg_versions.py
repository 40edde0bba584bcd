"""The cluster implementation of :class:`~portcullis.policy.versions.PolicyVersionStore`: PostgreSQL.

Same contract and the same two tables as :class:`~portcullis.policy.versions.SqlitePolicyVersionStore`
(prefixed ``policy_``): versions are immutable (``ON CONFLICT DO NOTHING``), events append with a
``bigserial`` sequence, so ``active`` and ``shadow`` read the newest event of every replica. Driver
failures are :class:`VersionStoreUnavailable` (the change is refused).
"""

from __future__ import annotations

from typing import Any

import psycopg

from portcullis.policy.versions import SqlPolicyVersions, VersionStoreUnavailable
from portcullis.storage.migrations import Component
from portcullis.storage.postgres import Database

Conn = psycopg.Connection[Any]
PG_COMPONENT = Component("policy", (
    """CREATE TABLE policy_version (
        id text PRIMARY KEY, engine_version text NOT NULL, created_at double precision NOT NULL,
        author text NOT NULL, message text NOT NULL, files text NOT NULL,
        surface_engine_version text NOT NULL DEFAULT '');
    CREATE INDEX policy_version_engine ON policy_version (engine_version, created_at);
    CREATE INDEX policy_version_surface ON policy_version (surface_engine_version, created_at);
    CREATE TABLE policy_event (
        seq bigserial PRIMARY KEY, at double precision NOT NULL, action text NOT NULL, version text NOT NULL,
        author text NOT NULL, message text NOT NULL, reason text NOT NULL);""",
))


def _unavailable(detail: str) -> Exception:
    return VersionStoreUnavailable()


class PostgresPolicyVersionStore(SqlPolicyVersions):
    """Policy versions in the cluster's PostgreSQL; calls block (run them in a thread)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        def query(c: Conn) -> list[tuple[Any, ...]]:
            cursor = c.execute(sql.replace("?", "%s"), params)  # the shared queries use ? placeholders
            return cursor.fetchall() if cursor.description is not None else []
        return self._db.run(query, _unavailable)

    def close(self) -> None:
        """The pool belongs to the :class:`Database`."""
