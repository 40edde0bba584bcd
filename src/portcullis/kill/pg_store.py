"""The cluster implementation of :class:`~portcullis.kill.store.KillSwitchStore`: PostgreSQL.

Same contract as :class:`~portcullis.kill.store.SqliteKillSwitchStore`: every replica's
:class:`~portcullis.kill.runtime.KillSwitches` polls ``active`` (0.5 s), so a switch set on one replica
(or by ``portcullis kill`` against the same database) applies on all of them within a second; Redis
pub/sub only shortens that. ``set`` and ``lift`` write the switch and its event in one transaction;
``lift`` locks the row (``UPDATE … WHERE`` active), so two replicas lifting one switch lift it once.
Every replica audits pending events, so ``pending_events`` *claims* them (``FOR UPDATE SKIP LOCKED``, a
claim of ``CLAIM_S`` by the database clock): one replica audits an event; if it dies before
``mark_audited``, another claims the event once the claim lapses (then the event may be audited twice,
under the same request id ``kill-<switch>-<seq>``, which names it as the same change; never zero times).
Driver failures are :class:`KillSwitchStoreUnavailable` (fixed message; the masked database name in ``detail``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from portcullis.kill.model import KillSwitch, check_actor, check_reason
from portcullis.kill.store import Event, KillSwitchStoreUnavailable, UnknownSwitch, _checked
from portcullis.storage.migrations import Component
from portcullis.storage.postgres import Database

Conn = psycopg.Connection[Any]
PG_COMPONENT = Component("kill", (
    """CREATE TABLE kill_switches (
        id text PRIMARY KEY, kind text NOT NULL, target text NOT NULL, reason text NOT NULL, actor text NOT NULL,
        set_at double precision NOT NULL, expires_at double precision, lifted_at double precision,
        lifted_by text, lift_reason text);
    CREATE INDEX kill_switches_active ON kill_switches (set_at) WHERE lifted_at IS NULL;
    CREATE TABLE kill_switch_events (
        seq bigserial PRIMARY KEY, switch_id text NOT NULL REFERENCES kill_switches (id), event text NOT NULL,
        at double precision NOT NULL, actor text NOT NULL, reason text NOT NULL,
        audited boolean NOT NULL DEFAULT false, claimed_until double precision);
    CREATE INDEX kill_switch_events_pending ON kill_switch_events (seq) WHERE NOT audited;""",
))
CLAIM_S = 30.0  # how long a replica's claim on pending events lasts before another may audit them
_SELECT = ("SELECT id, kind, target, reason, actor, set_at, expires_at, lifted_at, lifted_by, lift_reason "
           "FROM kill_switches ")


def _unavailable(detail: str) -> Exception:
    return KillSwitchStoreUnavailable(detail=detail)


class PostgresKillSwitchStore:
    """Kill switches in the cluster's PostgreSQL (tables ``kill_*``); blocking, called from threads."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time, owns_database: bool = False) -> None:
        self._db, self._clock, self._owns = db, clock, owns_database

    def close(self) -> None:
        """Closes the pool only when this store owns it (the CLI's); a gateway's belongs to its stores."""
        if self._owns:
            self._db.close()

    def set(self, kind: str, target: str, reason: str, actor: str, expires_at: float | None = None) -> KillSwitch:
        switch = _checked(kind, target, reason, actor, expires_at, self._clock())

        def insert(c: Conn) -> None:
            c.execute("INSERT INTO kill_switches (id, kind, target, reason, actor, set_at, expires_at) "
                      "VALUES (%s, %s, %s, %s, %s, %s, %s)", (switch.id, switch.kind, switch.target, switch.reason,
                                                              switch.actor, switch.set_at, switch.expires_at))
            c.execute("INSERT INTO kill_switch_events (switch_id, event, at, actor, reason) "
                      "VALUES (%s, 'set', %s, %s, %s)", (switch.id, switch.set_at, switch.actor, switch.reason))
        self._db.run(insert, _unavailable)
        return switch

    def lift(self, switch_id: str, reason: str, actor: str) -> KillSwitch:
        reason, actor, now = check_reason(reason), check_actor(actor), self._clock()

        def update(c: Conn) -> KillSwitch:
            row = c.execute("UPDATE kill_switches SET lifted_at = %s, lifted_by = %s, lift_reason = %s "
                            "WHERE id = %s AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > %s) "
                            "RETURNING id, kind, target, reason, actor, set_at, expires_at, lifted_at, lifted_by, "
                            "lift_reason", (now, actor, reason, switch_id, now)).fetchone()
            if row is None:
                raise UnknownSwitch(detail="no active switch with that id")
            c.execute("INSERT INTO kill_switch_events (switch_id, event, at, actor, reason) "
                      "VALUES (%s, 'lift', %s, %s, %s)", (switch_id, now, actor, reason))
            return KillSwitch(*row)
        return self._db.run(update, _unavailable)

    def active(self, now: float) -> tuple[KillSwitch, ...]:
        rows = self._db.run(lambda c: c.execute(_SELECT + "WHERE lifted_at IS NULL AND (expires_at IS NULL OR "
                                                "expires_at > %s) ORDER BY set_at", (now,)).fetchall(), _unavailable)
        return tuple(KillSwitch(*row) for row in rows)

    def history(self, limit: int = 100) -> tuple[KillSwitch, ...]:
        rows = self._db.run(lambda c: c.execute(_SELECT + "ORDER BY set_at DESC LIMIT %s", (limit,)).fetchall(),
                            _unavailable)
        return tuple(KillSwitch(*row) for row in rows)

    def pending_events(self, limit: int = 100) -> tuple[Event, ...]:
        """Events not yet audited and not claimed by another replica, oldest first; claimed for this one."""
        rows = self._db.run(lambda c: c.execute(
            "WITH claimed AS (UPDATE kill_switch_events SET claimed_until = "
            "extract(epoch FROM clock_timestamp()) + %s WHERE seq IN (SELECT seq FROM kill_switch_events "
            "WHERE NOT audited AND (claimed_until IS NULL OR claimed_until < extract(epoch FROM clock_timestamp())) "
            "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING seq, switch_id, event, at, actor, reason) "
            "SELECT e.seq, e.event, e.at, e.actor, e.reason, s.id, s.kind, s.target, s.reason, s.actor, s.set_at, "
            "s.expires_at, s.lifted_at, s.lifted_by, s.lift_reason "
            "FROM claimed e JOIN kill_switches s ON s.id = e.switch_id ORDER BY e.seq", (CLAIM_S, limit)).fetchall(),
            _unavailable)
        return tuple(Event(int(r[0]), KillSwitch(*r[5:]), str(r[1]), float(r[2]), str(r[3]), str(r[4])) for r in rows)

    def mark_audited(self, seq: int) -> None:
        self._db.run(lambda c: c.execute("UPDATE kill_switch_events SET audited = true WHERE seq = %s", (seq,)),
                     _unavailable)
