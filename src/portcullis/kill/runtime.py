"""The gateway's kill switches: an immutable snapshot, refreshed at once on a change made in this
process and polled from the store so that a change made elsewhere (the CLI, another replica) applies
within a second.

* The request path reads :attr:`KillSwitches.snapshot` (one attribute read) and looks the call up in it
  (:class:`~portcullis.kill.model.Snapshot`): no I/O, no lock.
* :meth:`KillSwitches.run` polls the store every ``poll_s`` (0.5 s) in a worker thread, swaps the
  snapshot, and writes a ``kill_switch`` audit record for each change not yet audited (set or lifted
  here, by the CLI or by another process), then marks it in the store.
* Cluster mode: :meth:`KillSwitches.connect` subscribes to a notice bus (:mod:`portcullis.storage.bus`,
  topic ``kill_switches``): a notice refreshes at once, and a local set or lift publishes one, so a switch
  set on one replica applies on every replica well within a second; the poll stays the backstop.
* Fail closed: :meth:`KillSwitches.start` (the gateway's build) raises when the store cannot be read, so
  the gateway does not start. A later failed refresh keeps the last snapshot (switches stay in force) and
  :meth:`KillSwitches.health` reports ``degraded`` for ``/readyz`` until a refresh succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from portcullis.kill.model import KillSwitch, Snapshot
from portcullis.kill.store import FILE_NAME, Event, KillSwitchStore, KillSwitchStoreUnavailable, SqliteKillSwitchStore
from portcullis.storage.bus import NoticeBus

log = logging.getLogger("portcullis.kill")
POLL_S = 0.5
TOPIC = "kill_switches"
AuditWrite = Callable[[str, Mapping[str, Any]], Awaitable[Any]]  # (request_id, fields) -> record


def event_fields(event: Event) -> dict[str, Any]:
    """The ``kill_switch`` audit record's fields: what changed, on what, by whom and why."""
    s = event.switch
    return {"event": event.event, "switch_id": s.id, "kind": s.kind, "target": s.target, "at": event.at,
            "actor": event.actor, "reason": event.reason, "expires_at": s.expires_at}


class KillSwitches:
    def __init__(self, store: KillSwitchStore, *, clock: Callable[[], float] = time.time,
                 poll_s: float = POLL_S) -> None:
        self.store, self._clock, self._poll_s = store, clock, poll_s
        self.snapshot = Snapshot()
        self.audit: AuditWrite | None = None  # set by the gateway once its audit writer exists
        self._degraded: str | None = None
        self._lock = anyio.Lock()
        self._bus: NoticeBus | None = None

    def connect(self, bus: NoticeBus) -> None:
        """Refresh on every ``kill_switches`` notice; publish one after each local set or lift."""
        self._bus = bus
        bus.subscribe(TOPIC, lambda _payload: self.refresh())

    def start(self, audit: AuditWrite | None = None) -> None:
        """Load the first snapshot (blocking, at build time); raises :class:`KillSwitchStoreUnavailable`."""
        self.audit = audit
        self.snapshot = Snapshot.of(self.store.active(self._clock()), self._clock())

    def health(self) -> str:
        return "ok" if self._degraded is None else "degraded"

    async def refresh(self) -> None:
        """Reload the snapshot and audit pending events; on failure keep the last snapshot (degraded)."""
        async with self._lock:
            try:
                switches = await anyio.to_thread.run_sync(self.store.active, self._clock())
                self.snapshot = Snapshot.of(switches, self._clock())
                if self.audit is not None:
                    await self._audit_pending()
            except KillSwitchStoreUnavailable as exc:
                if self._degraded is None:
                    log.error("kill switch store unreadable: the last snapshot stays in force",
                              extra={"fields": {"detail": exc.detail}})
                self._degraded = exc.detail or "unavailable"
                return
            if self._degraded is not None:
                log.warning("kill switch store readable again")
                self._degraded = None

    async def _audit_pending(self) -> None:
        assert self.audit is not None
        for event in await anyio.to_thread.run_sync(self.store.pending_events):
            await self.audit(f"kill-{event.switch.id}-{event.seq}", event_fields(event))
            await anyio.to_thread.run_sync(self.store.mark_audited, event.seq)

    async def set(self, kind: str, target: str, reason: str, actor: str,
                  expires_at: float | None = None) -> KillSwitch:
        switch = await anyio.to_thread.run_sync(self.store.set, kind, target, reason, actor, expires_at)
        await self.refresh()  # effective on the next call in this process, and audited
        await self._notify(switch)
        return switch

    async def lift(self, switch_id: str, reason: str, actor: str) -> KillSwitch:
        switch = await anyio.to_thread.run_sync(self.store.lift, switch_id, reason, actor)
        await self.refresh()
        await self._notify(switch)
        return switch

    async def _notify(self, switch: KillSwitch) -> None:
        if self._bus is not None:
            await self._bus.publish(TOPIC, switch.id)  # never raises; other replicas' polls are the backstop

    async def run(self) -> None:
        while True:
            await anyio.sleep(self._poll_s)
            await self.refresh()


def open_kill_switches(state_dir: Path, audit: AuditWrite | None = None, *,
                       clock: Callable[[], float] = time.time) -> KillSwitches:
    """The gateway's switches over ``kill_switches.sqlite3`` in ``state_dir``, first snapshot loaded;
    raises :class:`KillSwitchStoreUnavailable` when the store cannot be opened or read."""
    kills = KillSwitches(SqliteKillSwitchStore(state_dir / FILE_NAME, clock=clock), clock=clock)
    kills.start(audit)
    return kills
