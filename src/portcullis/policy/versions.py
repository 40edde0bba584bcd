"""Where policy versions live: the ``PolicyVersionStore`` seam, an in-memory double and SQLite.

A *policy set* is the deployment's policy inputs as files (``relative path → text``: the tool,
resource and prompt manifests with their ``policy:`` sections, the Rego modules, the golden
fixtures; :mod:`portcullis.policy.policy_set`). Each accepted set is stored once, immutable,
under its content address (``ps-`` + SHA-256 of the canonical JSON of the files), with who
stored it first, when and why, and the engine versions (``pv-…``) that decision records name: the
tools' engine's, and the resources' and prompts' engine's (``surface_engine_version``; empty in a
version stored before it was kept, until that version is applied again).

Contract of every store:

* ``put`` stores a version; storing the same id again keeps the first copy (immutable).
* ``get`` returns a version by its id or by either engine version (the newest with that ``pv-``),
  else None.
* ``record`` appends an event (``applied``, ``refused``, ``rolled_back``, ``shadow_set``,
  ``shadow_cleared``) to the history; ``history`` lists events newest first; ``active`` is the
  version of the newest event that applied or rolled back (None before any); ``shadow`` is the
  version of the newest shadow event when it set one (None when cleared, or before any): the
  shadow setting survives a restart.
* Driver failures become :class:`VersionStoreUnavailable` (callers refuse the change).

``SqlitePolicyVersionStore`` keeps one owner-only file in the state directory (WAL,
``synchronous=FULL``: versions are rare and must survive a power cut). PostgreSQL (cluster
mode, issue 16) implements the same seam over the same two tables.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

VERSIONS_FILE = "policy_versions.sqlite3"
Action = Literal["applied", "refused", "rolled_back", "shadow_set", "shadow_cleared"]
ACTIVATING: frozenset[str] = frozenset({"applied", "rolled_back"})
SHADOWING: frozenset[str] = frozenset({"shadow_set", "shadow_cleared"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_version (
    id             TEXT PRIMARY KEY,
    engine_version TEXT NOT NULL,
    created_at     REAL NOT NULL,
    author         TEXT NOT NULL,
    message        TEXT NOT NULL,
    files          TEXT NOT NULL,
    surface_engine_version TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS policy_version_engine ON policy_version (engine_version, created_at);
CREATE TABLE IF NOT EXISTS policy_event (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    action   TEXT NOT NULL,
    version  TEXT NOT NULL,
    author   TEXT NOT NULL,
    message  TEXT NOT NULL,
    reason   TEXT NOT NULL
);
"""


class VersionStoreUnavailable(Exception):
    """The policy version store could not be read or written: the change is refused (fixed text)."""

    def __init__(self) -> None:
        super().__init__("policy version store unavailable")


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One stored policy set. ``files`` maps relative paths to their text."""

    id: str
    engine_version: str
    created_at: float
    author: str
    message: str
    files: dict[str, str]
    surface_engine_version: str = ""  # the resources' and prompts' engine's pv- ("": stored before it was kept)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "engine_version": self.engine_version,
                "surface_engine_version": self.surface_engine_version, "created_at": self.created_at,
                "author": self.author, "message": self.message, "files": sorted(self.files)}


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """One history entry. ``version`` is ``""`` for a push refused before it had an id."""

    seq: int
    at: float
    action: str
    version: str
    author: str
    message: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "action": self.action, "version": self.version,
                "author": self.author, "message": self.message, "reason": self.reason}


class PolicyVersionStore(Protocol):
    def put(self, version: PolicyVersion) -> PolicyVersion: ...
    def get(self, ref: str) -> PolicyVersion | None: ...
    def record(self, at: float, action: Action, version: str, author: str, message: str,
               reason: str = "") -> PolicyEvent: ...
    def history(self, limit: int = 100) -> list[PolicyEvent]: ...
    def active(self) -> str | None: ...
    def shadow(self) -> str | None: ...


class MemoryPolicyVersionStore:
    """The seam's in-memory double (unit tests, and a gateway without a writable state directory)."""

    def __init__(self) -> None:
        self._versions: dict[str, PolicyVersion] = {}
        self._events: list[PolicyEvent] = []

    def put(self, version: PolicyVersion) -> PolicyVersion:
        stored = self._versions.setdefault(version.id, version)
        if not stored.surface_engine_version and version.surface_engine_version:  # a version from before it was kept
            stored = self._versions[version.id] = replace(stored, surface_engine_version=version.surface_engine_version)
        return stored

    def get(self, ref: str) -> PolicyVersion | None:
        if ref in self._versions:
            return self._versions[ref]
        same = [v for v in self._versions.values() if ref and ref in (v.engine_version, v.surface_engine_version)]
        return max(same, key=lambda v: v.created_at) if same else None

    def record(self, at: float, action: Action, version: str, author: str, message: str,
               reason: str = "") -> PolicyEvent:
        event = PolicyEvent(len(self._events) + 1, at, action, version, author, message, reason)
        self._events.append(event)
        return event

    def history(self, limit: int = 100) -> list[PolicyEvent]:
        return list(reversed(self._events))[:limit]

    def active(self) -> str | None:
        return next((e.version for e in reversed(self._events) if e.action in ACTIVATING), None)

    def shadow(self) -> str | None:
        event = next((e for e in reversed(self._events) if e.action in SHADOWING), None)
        return event.version if event is not None and event.action == "shadow_set" else None


class SqlPolicyVersions:
    """The store's queries over the two tables, shared by the SQLite and PostgreSQL stores.

    A subclass supplies :meth:`_rows`: run one statement (``?`` placeholders) and return its rows, a driver
    failure raised as :class:`VersionStoreUnavailable`.
    """

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def put(self, version: PolicyVersion) -> PolicyVersion:
        self._rows("INSERT INTO policy_version (id, engine_version, created_at, author, message, files, "
                   "surface_engine_version) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                   (version.id, version.engine_version, version.created_at, version.author, version.message,
                    json.dumps(version.files, sort_keys=True), version.surface_engine_version))
        if version.surface_engine_version:  # fill in a version stored before it was kept (derived, not content)
            self._rows("UPDATE policy_version SET surface_engine_version = ? WHERE id = ? "
                       "AND surface_engine_version = ''", (version.surface_engine_version, version.id))
        stored = self.get(version.id)
        if stored is None:
            raise VersionStoreUnavailable()
        return stored

    def get(self, ref: str) -> PolicyVersion | None:
        if not ref:
            return None
        rows = self._rows("SELECT id, engine_version, created_at, author, message, files, surface_engine_version "
                          "FROM policy_version WHERE id = ? OR engine_version = ? OR surface_engine_version = ? "
                          "ORDER BY id = ? DESC, created_at DESC LIMIT 1", (ref, ref, ref, ref))
        if not rows:
            return None
        vid, engine_version, created_at, author, message, files, surface = rows[0]
        return PolicyVersion(vid, engine_version, created_at, author, message, json.loads(files), surface)

    def record(self, at: float, action: Action, version: str, author: str, message: str,
               reason: str = "") -> PolicyEvent:
        rows = self._rows("INSERT INTO policy_event (at, action, version, author, message, reason) "
                          "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq", (at, action, version, author, message, reason))
        return PolicyEvent(int(rows[0][0]), at, action, version, author, message, reason)

    def history(self, limit: int = 100) -> list[PolicyEvent]:
        rows = self._rows("SELECT seq, at, action, version, author, message, reason FROM policy_event "
                          "ORDER BY seq DESC LIMIT ?", (limit,))
        return [PolicyEvent(*row) for row in rows]

    def active(self) -> str | None:
        rows = self._rows("SELECT version FROM policy_event WHERE action IN ('applied', 'rolled_back') "
                          "ORDER BY seq DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    def shadow(self) -> str | None:
        rows = self._rows("SELECT action, version FROM policy_event WHERE action IN ('shadow_set', 'shadow_cleared') "
                          "ORDER BY seq DESC LIMIT 1")
        return str(rows[0][1]) if rows and rows[0][0] == "shadow_set" else None


class SqlitePolicyVersionStore(SqlPolicyVersions):
    """The seam over one SQLite file (see the module docstring). Calls block: run them in a thread."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(policy_version)")}
            if columns and "surface_engine_version" not in columns:  # a file from before it was kept: still read
                self._db.execute("ALTER TABLE policy_version ADD COLUMN surface_engine_version TEXT NOT NULL "
                                 "DEFAULT ''")
            self._db.executescript(_SCHEMA)
            self._db.execute("CREATE INDEX IF NOT EXISTS policy_version_surface ON policy_version "
                             "(surface_engine_version, created_at)")
        except (OSError, sqlite3.Error):
            raise VersionStoreUnavailable() from None

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error:
            raise VersionStoreUnavailable() from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
