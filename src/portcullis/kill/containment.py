"""The anomaly monitor's containment, connected to the kill switches (docs/alerts.md, docs/kill-switches.md).

``apply`` sets the switch at once, by ``portcullis-alerts`` with the alert's reason, through the same
:meth:`~portcullis.kill.runtime.KillSwitches.set` the admin API uses (so it is stored, effective on the
next call and audited like any other). It runs as a task of the monitor's loop and never raises into the
monitor: a refused switch (a target the kill-switch rules refuse) is logged and counted as not applied.

``propose`` does not change anything: until proposals are routed to the approvals machinery (an approval
request for the synthetic tool ``portcullis.kill_switch``, see :mod:`portcullis.monitoring.containment`), a
proposal is a warning in the log next to the alert's own audit record, for a person to act on with
``portcullis kill set``.
"""

from __future__ import annotations

import asyncio
import logging

from portcullis.kill.runtime import KillSwitches

log = logging.getLogger("portcullis.alerts")
ACTOR = "portcullis-alerts"


class KillSwitchContainment:
    def __init__(self, kills: KillSwitches) -> None:
        self._kills = kills
        self._tasks: set[asyncio.Task[None]] = set()

    def apply(self, kind: str, target: str, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._set(kind, target, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def propose(self, kind: str, target: str, reason: str) -> None:
        log.warning("containment proposed: a person decides (portcullis kill set)",
                    extra={"fields": {"kind": kind, "reason": reason}})

    async def drained(self) -> None:
        """Wait for the switches being set (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _set(self, kind: str, target: str, reason: str) -> None:
        try:
            await self._kills.set(kind, target, reason[:500], ACTOR)
        except Exception:
            log.exception("containment could not set the kill switch", extra={"fields": {"kind": kind}})
