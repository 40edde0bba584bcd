"""Carrying out the gateway's own approved requests (:mod:`portcullis.approvals.system`), exactly once.

A client's call never redeems one of these: when one is approved, :meth:`GatewayRequests.execute` runs
the action :meth:`GatewayRequests.register` names for its synthetic tool, right after the deciding vote
and from the sweep for one approved elsewhere (another replica) or whose action failed.
:func:`restore` (undo one transition exactly) is shared with the service's own vote and redeem.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from portcullis.approvals.model import OPEN, Approval
from portcullis.approvals.store import ApprovalStore, ApprovalStoreUnavailable
from portcullis.approvals.system import made_by_gateway

log = logging.getLogger("portcullis.approvals")

Audit = Callable[..., Awaitable[Any]]  # CallAuditor.approval
# carries out an approved request of the gateway's own; returns a note for the ``executed`` audit record
Action = Callable[[Approval], Awaitable[str]]


async def restore(store: ApprovalStore, changed: Approval, previous: Approval) -> None:
    """Undo ``changed`` (back to ``previous``) if nothing else changed the approval since."""
    def undo(now_stored: Approval) -> Approval:
        return previous if now_stored == changed else now_stored

    try:
        with anyio.CancelScope(shield=True):
            await store.transition(changed.id, undo)
    except Exception:  # the store is failing too: the approval stays as changed (logged)
        log.error("approval change could not be undone after an audit failure",
                  extra={"fields": {"approval_id": changed.id, "status": changed.status}})


class _NotDue(Exception):
    """An approval :meth:`GatewayRequests.execute` may not carry out (nothing is written)."""


class GatewayRequests:
    """The actions for the gateway's own requests, and their exactly-once execution."""

    def __init__(self, store: ApprovalStore, *, clock: Callable[[], float], audit: Audit) -> None:
        self._store, self._clock, self._audit = store, clock, audit
        self._actions: dict[str, Action] = {}  # synthetic tool -> what its approved requests do

    def register(self, tool: str, action: Action) -> None:
        self._actions[tool] = action

    def carries_out(self, approval: Approval) -> bool:
        """Whether ``approval`` is one of the gateway's own requests with a registered action."""
        return approval.tool in self._actions and made_by_gateway(approval)

    async def open_requests(self, tool: str) -> builtins.list[Approval]:
        """The gateway's own pending and approved requests for ``tool`` (at most 1000 of each)."""
        return [a for status in OPEN for a in await self._store.list(status=status, limit=1000)
                if a.tool == tool and made_by_gateway(a)]

    async def execute_approved(self) -> None:
        """Execute every approved request of the gateway's own not yet carried out (at most 1000)."""
        if self._actions:
            for approval in await self._store.list(status="approved", limit=1000):
                if self.carries_out(approval):
                    await self.execute(approval.id, request_id=f"sweep-{approval.id}")

    async def execute(self, approval_id: str, *, request_id: str) -> Approval | None:
        """See :meth:`portcullis.approvals.service.ApprovalService.execute`."""
        with anyio.CancelScope(shield=True):
            now = self._clock()
            before: list[Approval] = []

            def claim(approval: Approval) -> Approval:
                before.append(approval)
                if approval.status != "approved" or now >= approval.expires_at or not self.carries_out(approval):
                    raise _NotDue
                return dataclasses.replace(approval, status="executed")

            fields = {"approval_id": approval_id[:40]}
            try:
                used = await self._store.transition(approval_id, claim)
            except (_NotDue, KeyError):
                return None
            except ApprovalStoreUnavailable:
                log.error("approved request not executed: approval store unavailable", extra={"fields": fields})
                return None
            try:
                note = await self._actions[used.tool](used)
            except Exception as exc:
                log.error("approved request could not be carried out; it stays approved and is retried",
                          extra={"fields": {**fields, "tool": used.tool, "error": type(exc).__name__}})
                await restore(self._store, used, before[-1])
                return None
            try:
                await self._audit("executed", used, request_id=request_id, reason=note)
            except Exception as exc:  # done, and the action's own record (a kill_switch record) names it
                log.error("approved request executed but its executed record could not be written",
                          extra={"fields": {**fields, "error": type(exc).__name__}})
            log.info("approved request executed", extra={"fields": {**fields, "tool": used.tool}})
            return used
        return None  # not reached (the scope is shielded, never cancelled)
