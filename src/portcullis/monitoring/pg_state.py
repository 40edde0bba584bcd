"""The cluster implementation of :class:`~portcullis.monitoring.state.MonitorStateStore`: PostgreSQL.

One snapshot per *replica* (its key, by default the host name): each replica's baselines describe the
traffic it saw, and a restarted replica restores its own. Several worker processes of one host share
their host's snapshot (the last to close a window wins), as they share the SQLite file in embedded
mode. ``save`` replaces the replica's rows in one transaction; ``reset`` deletes them (a database has
no file to move aside). Failures are :class:`MonitorStateUnavailable` (``corrupt`` for rows that are
not a snapshot of ours).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import psycopg

from portcullis.monitoring.snapshot import SEEN_ARITY, KeyState, Snapshot
from portcullis.monitoring.state import _TABLES, VERSION, MonitorStateUnavailable, _pairs
from portcullis.storage.migrations import Component
from portcullis.storage.postgres import Database

Conn = psycopg.Connection[Any]
PG_COMPONENT = Component("monitor", (
    """CREATE TABLE monitor_meta (
        replica text PRIMARY KEY, version integer NOT NULL, taken_at double precision NOT NULL,
        window_s double precision NOT NULL, learning_left_s double precision NOT NULL);
    CREATE TABLE monitor_keys (
        replica text NOT NULL, seq integer NOT NULL, tbl text NOT NULL, key text NOT NULL, last bigint NOT NULL,
        baselines text NOT NULL, PRIMARY KEY (replica, seq));
    CREATE TABLE monitor_seen (
        replica text NOT NULL, seq integer NOT NULL, tbl text NOT NULL, item text NOT NULL,
        PRIMARY KEY (replica, seq));""",
))


def _unavailable(detail: str) -> Exception:
    return MonitorStateUnavailable(detail=detail)


class PostgresMonitorStateStore:
    def __init__(self, db: Database, replica: str | None = None) -> None:
        self._db = db
        self.replica = replica or socket.gethostname()

    def load(self, max_keys: int) -> Snapshot | None:
        def read(c: Conn) -> tuple[Any, list[Any], list[Any]] | None:
            meta = c.execute("SELECT version, taken_at, window_s, learning_left_s FROM monitor_meta "
                             "WHERE replica = %s", (self.replica,)).fetchone()
            if meta is None:
                return None
            keys, seen = [], []
            for table in _TABLES:
                keys.append(c.execute("SELECT tbl, key, last, baselines FROM monitor_keys WHERE replica = %s "
                                      "AND tbl = %s ORDER BY seq DESC LIMIT %s",
                                      (self.replica, table, max_keys)).fetchall())
            for table in SEEN_ARITY:
                seen.append(c.execute("SELECT tbl, item FROM monitor_seen WHERE replica = %s AND tbl = %s "
                                      "ORDER BY seq DESC LIMIT %s", (self.replica, table, max_keys)).fetchall())
            return meta, keys, seen

        found = self._db.run(read, _unavailable)
        if found is None:
            return None
        meta, key_rows, seen_rows = found
        try:
            if meta[0] != VERSION:
                raise ValueError("a snapshot of another version")
            keys = [KeyState(r[0], _pairs(r[1]), int(r[2]), tuple(tuple(b) for b in json.loads(r[3])))
                    for rows in key_rows for r in reversed(rows)]
            seen = [(r[0], tuple(json.loads(r[1]))) for rows in seen_rows for r in reversed(rows)]
        except (ValueError, TypeError, IndexError) as exc:
            raise MonitorStateUnavailable(detail=type(exc).__name__, corrupt=True) from None
        return Snapshot(float(meta[1]), float(meta[2]), float(meta[3]), tuple(keys), tuple(seen))

    def save(self, snapshot: Snapshot) -> None:
        keys = [(self.replica, i, k.table, json.dumps(k.key), k.last, json.dumps(k.baselines))
                for i, k in enumerate(snapshot.keys)]
        seen = [(self.replica, i, table, json.dumps(item)) for i, (table, item) in enumerate(snapshot.seen)]

        def write(c: Conn) -> None:
            self._delete(c)
            c.execute("INSERT INTO monitor_meta VALUES (%s, %s, %s, %s, %s)",
                      (self.replica, VERSION, snapshot.taken_at, snapshot.window_s, snapshot.learning_left_s))
            with c.cursor() as cursor:
                cursor.executemany("INSERT INTO monitor_keys VALUES (%s, %s, %s, %s, %s, %s)", keys)
                cursor.executemany("INSERT INTO monitor_seen VALUES (%s, %s, %s, %s)", seen)
        self._db.run(write, _unavailable)

    def _delete(self, c: Conn) -> None:
        for table in ("monitor_meta", "monitor_keys", "monitor_seen"):
            c.execute(f"DELETE FROM {table} WHERE replica = %s", (self.replica,))  # noqa: S608 -- fixed names

    def reset(self) -> None:
        self._db.run(self._delete, _unavailable)

    def close(self) -> None:
        """The pool belongs to the :class:`Database`."""
