"""The cluster implementation of :class:`~portcullis.policy.versions.PolicyVersionStore`: PostgreSQL.

Same contract and the same two tables as :class:`~portcullis.policy.versions.SqlitePolicyVersionStore`
(prefixed ``policy_``): versions are immutable (``ON CONFLICT DO NOTHING``), events append with a
``bigserial`` sequence, so ``active`` and ``shadow`` read the newest event of every replica. Driver
failures are :class:`VersionStoreUnavailable` (the change is refused).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from portcullis.policy.versions import Action, PolicyEvent, PolicyVersion, VersionStoreUnavailable
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


class PostgresPolicyVersionStore:
    """Policy versions in the cluster's PostgreSQL; calls block (run them in a thread)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        def query(c: Conn) -> list[tuple[Any, ...]]:
            cursor = c.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []
        return self._db.run(query, _unavailable)

    def put(self, version: PolicyVersion) -> PolicyVersion:
        self._rows("INSERT INTO policy_version (id, engine_version, created_at, author, message, files, "
                   "surface_engine_version) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                   (version.id, version.engine_version, version.created_at, version.author, version.message,
                    json.dumps(version.files, sort_keys=True), version.surface_engine_version))
        if version.surface_engine_version:  # fill in a version stored before it was kept (derived, not content)
            self._rows("UPDATE policy_version SET surface_engine_version = %s WHERE id = %s "
                       "AND surface_engine_version = ''", (version.surface_engine_version, version.id))
        stored = self.get(version.id)
        if stored is None:
            raise VersionStoreUnavailable()
        return stored

    def get(self, ref: str) -> PolicyVersion | None:
        if not ref:
            return None
        rows = self._rows("SELECT id, engine_version, created_at, author, message, files, surface_engine_version "
                          "FROM policy_version WHERE id = %s OR engine_version = %s OR surface_engine_version = %s "
                          "ORDER BY id = %s DESC, created_at DESC LIMIT 1", (ref, ref, ref, ref))
        if not rows:
            return None
        vid, engine_version, created_at, author, message, files, surface = rows[0]
        return PolicyVersion(vid, engine_version, created_at, author, message, json.loads(files), surface)

    def record(self, at: float, action: Action, version: str, author: str, message: str,
               reason: str = "") -> PolicyEvent:
        rows = self._rows("INSERT INTO policy_event (at, action, version, author, message, reason) "
                          "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq", (at, action, version, author, message,
                                                                             reason))
        return PolicyEvent(int(rows[0][0]), at, action, version, author, message, reason)

    def history(self, limit: int = 100) -> list[PolicyEvent]:
        rows = self._rows("SELECT seq, at, action, version, author, message, reason FROM policy_event "
                          "ORDER BY seq DESC LIMIT %s", (limit,))
        return [PolicyEvent(*row) for row in rows]

    def active(self) -> str | None:
        rows = self._rows("SELECT version FROM policy_event WHERE action IN ('applied', 'rolled_back') "
                          "ORDER BY seq DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    def shadow(self) -> str | None:
        rows = self._rows("SELECT action, version FROM policy_event WHERE action IN ('shadow_set', 'shadow_cleared') "
                          "ORDER BY seq DESC LIMIT 1")
        return str(rows[0][1]) if rows and rows[0][0] == "shadow_set" else None

    def close(self) -> None:
        """The pool belongs to the :class:`Database`."""
