"""Revocation of tokens (by ``jti``), clients and agents — checked on every request.

The embedded store is a SQLite file. The request path never touches the database: it reads an
immutable in-memory snapshot that a background task reloads (in a worker thread) every
``refresh_s``. If the snapshot is older than ``max_staleness_s`` — the file cannot be read, the
database is locked or corrupt — every request is denied (``revocation_unavailable``): a list we
cannot read is never treated as empty. The cluster implementation (PostgreSQL + Redis pub/sub)
will fill the same :class:`RevocationList` interface.

A revocation is a deny list, so client and agent ids compare as deny rules do: case-folded
(NFKC + casefold), so revoking ``billing-bot`` also refuses ``Billing-Bot``. Token ids (``jti``)
are opaque and compare exactly.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from portcullis.errors import PortcullisError
from portcullis.identity.claims import fold
from portcullis.storage.bus import NoticeBus

log = logging.getLogger("portcullis.identity")

KINDS = ("jti", "client", "agent")
_SCHEMA = """CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL CHECK (kind IN ('jti', 'client', 'agent')),
    value TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value))"""


class Revoked(PortcullisError):
    status, message = 401, "invalid_token"


class RevocationUnavailable(PortcullisError):
    status, message = 503, "revocation list unavailable"


class RevocationList(Protocol):
    def check(self, *, jti: str | None, client_id: str | None, agent_id: str | None) -> None:
        """Raise :class:`Revoked` or :class:`RevocationUnavailable`; return None when allowed."""
        ...

    async def run(self) -> None:
        """Keep the snapshot fresh until cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    jti: frozenset[str]
    client: frozenset[str]
    agent: frozenset[str]
    loaded_at: float


class SqliteRevocations:
    """The embedded revocation list (one SQLite file, shared by the CLI and the gateway)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic, refresh_s: float = 1.0,
                 max_staleness_s: float = 5.0) -> None:
        self._path = path
        self._clock = clock
        self._refresh_s = refresh_s
        self._max_staleness_s = max_staleness_s
        self._snapshot: _Snapshot | None = None

    errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)  # what a failed load raises

    def rows(self) -> list[tuple[str, str]]:
        """Every ``(kind, value)`` in the list (blocking)."""
        with sqlite3.connect(self._path, timeout=2.0) as db:
            db.execute(_SCHEMA)
            return db.execute("SELECT kind, value FROM revocations").fetchall()

    def load(self) -> None:
        """Read the whole list (blocking; run in a thread off the request path)."""
        rows = self.rows()
        by_kind: dict[str, set[str]] = {kind: set() for kind in KINDS}
        for kind, value in rows:
            by_kind[kind].add(value)
        self._snapshot = _Snapshot(frozenset(by_kind["jti"]), frozenset(map(fold, by_kind["client"])),
                                   frozenset(map(fold, by_kind["agent"])), self._clock())

    def check(self, *, jti: str | None, client_id: str | None, agent_id: str | None) -> None:
        snap = self._snapshot
        if snap is None or self._clock() - snap.loaded_at > self._max_staleness_s:
            raise RevocationUnavailable(detail="revocation snapshot missing or stale")
        if (jti is not None and jti in snap.jti) or (client_id is not None and fold(client_id) in snap.client) or (
                agent_id is not None and fold(agent_id) in snap.agent):
            raise Revoked(detail="credential revoked")

    async def refresh(self) -> None:
        """Reload now (a ``revocations`` notice from another replica); a failure keeps the last snapshot,
        which goes stale and then denies, as in :meth:`run`."""
        try:
            await anyio.to_thread.run_sync(self.load)
        except self.errors as exc:
            log.warning("revocation list could not be read; requests are denied until it can",
                        extra={"fields": {"error": type(exc).__name__}})

    def connect(self, bus: NoticeBus) -> None:
        """Reload at once on every ``revocations`` notice (:mod:`portcullis.storage.bus`); polling stays."""
        bus.subscribe("revocations", lambda _payload: self.refresh())

    async def run(self) -> None:
        while True:
            await self.refresh()
            await anyio.sleep(self._refresh_s)


def revoke(path: Path, kind: str, value: str, reason: str = "") -> None:
    """Add one entry (the CLI's `portcullis token revoke`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    with sqlite3.connect(path, timeout=5.0) as db:
        db.execute(_SCHEMA)
        db.execute("INSERT OR REPLACE INTO revocations (kind, value, revoked_at, reason) VALUES (?, ?, ?, ?)",
                   (kind, value, time.time(), reason[:500]))
