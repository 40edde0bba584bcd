"""The anomaly monitor's containment, connected to the kill switches (docs/alerts.md, docs/kill-switches.md).

``apply`` sets the switch at once, by ``portcullis-alerts`` with the alert's reason, through the same
:meth:`~portcullis.kill.runtime.KillSwitches.set` the admin API uses (so it is stored, effective on the
next call and audited like any other). It runs as a task of the monitor's loop and never raises into the
monitor: a refused switch (a target the kill-switch rules refuse) is logged and counted as not applied.

``propose`` asks a person (:mod:`portcullis.approvals.system`): an approval request for the synthetic tool
``portcullis.kill_switch`` with the arguments ``{kind, target, reason}``, requested by ``portcullis-alerts``
through :meth:`~portcullis.approvals.service.ApprovalService.propose` (the approvers' notice, signed links,
quorum, expiry and audit records). Nothing changes until it is approved; then the approval's execution
(:meth:`execute`, registered with the service) sets the switch once, with the approvers as its actor. A
second proposal for the same switch is not opened while one is pending or approved, nor for a switch that
is already active; a target the switch rules would refuse is not proposed at all (logged). Without an
approvals service (tests), a proposal is a warning in the log.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

import anyio

from portcullis.approvals.model import Approval, visible
from portcullis.approvals.service import ApprovalService
from portcullis.approvals.system import ALERTS, KILL_SWITCH_TOOL, POLICY_MARKER, RULE_ID, made_by_gateway
from portcullis.kill.model import MAX_ACTOR_CHARS, MAX_REASON_CHARS, check_kind, check_target, match_key
from portcullis.kill.runtime import KillSwitches
from portcullis.policy.decision import Decision

log = logging.getLogger("portcullis.alerts")
ACTOR = "portcullis-alerts"
APPROVED_PREFIX = "approved:"
REQUIRED = 1  # approvers of a proposed switch (approver rules have no count of their own)


def approved_actor(approval: Approval) -> str:
    """``approved:<user>[,<user>…]``: the people who approved, made visible and cut to the actor's size."""
    users = ",".join(visible(str(v.approver.get("user_id") or "?")) for v in approval.approvals())
    return (APPROVED_PREFIX + (users or "?"))[:MAX_ACTOR_CHARS]


class KillSwitchContainment:
    def __init__(self, kills: KillSwitches, approvals: ApprovalService | None = None, *,
                 required: int = REQUIRED) -> None:
        self._kills, self._approvals, self._required = kills, approvals, max(1, required)
        self._tasks: set[asyncio.Task[None]] = set()
        self._proposing = anyio.Lock()  # one proposal at a time: the open-request check and the create
        if approvals is not None:
            approvals.register(KILL_SWITCH_TOOL, self.execute)

    def apply(self, kind: str, target: str, reason: str) -> None:
        self._spawn(self._set(kind, target, reason))

    def propose(self, kind: str, target: str, reason: str) -> None:
        if self._approvals is None:
            log.warning("containment proposed: a person decides (portcullis kill set)",
                        extra={"fields": {"kind": kind, "reason": reason}})
            return
        self._spawn(self._propose(self._approvals, kind, target, reason))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drained(self) -> None:
        """Wait for the switches being set and the proposals being made (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _set(self, kind: str, target: str, reason: str) -> None:
        try:
            await self._kills.set(kind, target, reason[:MAX_REASON_CHARS], ACTOR)
        except Exception:
            log.exception("containment could not set the kill switch", extra={"fields": {"kind": kind}})

    async def _propose(self, approvals: ApprovalService, kind: str, target: str, reason: str) -> None:
        fields = {"kind": kind}
        try:
            check_kind(kind)
            check_target(target)
        except Exception:
            log.error("containment not proposed: the kill-switch rules refuse its target", extra={"fields": fields})
            return
        key = (kind, match_key(kind, target))
        try:
            async with self._proposing:
                if key in self._kills.snapshot.keys:
                    log.info("containment not proposed: the switch is already set", extra={"fields": fields})
                    return
                if any(_switch_key(a) == key for a in await approvals.open_requests(KILL_SWITCH_TOOL)):
                    log.info("containment not proposed: one is already waiting", extra={"fields": fields})
                    return
                decision = Decision(effect="require_approval", reasons=("containment_proposed",),
                                    rule_ids=(RULE_ID,), policy_version=POLICY_MARKER)
                approval = await approvals.propose(
                    tool=KILL_SWITCH_TOOL, arguments={"kind": kind, "target": target,
                                                      "reason": reason[:MAX_REASON_CHARS]},
                    principal=ALERTS, decision=decision, required=self._required, justification=reason[:1000],
                    request_id=f"alert-{uuid.uuid4().hex}", tool_risk="high")
        except Exception as exc:  # the store, the audit, the requester's open cap: logged, the alert stands
            log.error("containment could not be proposed", extra={"fields": {**fields, "error": type(exc).__name__}})
            return
        log.warning("containment proposed: waiting for an approver",
                    extra={"fields": {**fields, "approval_id": approval.id}})

    async def execute(self, approval: Approval) -> str:
        """Set the switch an approved proposal names (the service's registered action; raises on failure,
        so the approval stays approved and the sweep retries). Returns the note of the ``executed`` record."""
        args, note = approval.arguments, f" (approval {approval.id})"
        reason = (visible(str(args.get("reason", "")))[:MAX_REASON_CHARS - len(note)] + note).strip()
        switch = await self._kills.set(str(args.get("kind")), str(args.get("target")), reason,
                                       approved_actor(approval))
        return f"kill switch {switch.id} set"


def _switch_key(approval: Approval) -> tuple[str, str] | None:
    args = approval.arguments
    kind, target = args.get("kind"), args.get("target")
    if not made_by_gateway(approval) or not isinstance(kind, str) or not isinstance(target, str):
        return None
    try:
        return kind, match_key(kind, target)
    except Exception:
        return None
