"""Two-step execution: propose, vote, redeem — every step checked, atomic and audited.

* :meth:`ApprovalService.propose` — the policy said ``require_approval`` and the call carried no
  approval id: a pending approval bound to this exact call is stored and audited (``proposed``);
  the agent is told its id, status, expiry and how to resume.
* :meth:`ApprovalService.vote` — an approver approves or denies. The approver must be an
  authenticated **person** (:attr:`Principal.person`: the issuer's configured positive signal,
  a user, no agent — a credential merely lacking an agent is not enough), allowed by an
  ``approvals.approvers`` rule for the tool (issuer scope included), and never the requester
  (same user, same agent or same identity); each person votes once. One deny denies; ``required`` distinct approvals
  approve.
* :meth:`ApprovalService.redeem` — the agent retries the same call with the approval id. The
  approval must exist, be ``approved``, unexpired, bound to this tool, these canonical
  arguments, this caller and this policy version, and granted by at least as many approvers as
  this try of the call needs (the risk score may ask for more than when it was proposed); then it
  turns ``executed`` atomically (single use) before the call is forwarded. Every mismatch answers the same
  :class:`~portcullis.errors.ApprovalInvalid`, so ids cannot be probed.
* A requester (:func:`~portcullis.approvals.model.identity_key`: issuer, client, user, agent,
  tenant — not the tool, not the arguments) may have at most ``approvals.max_open_per_requester``
  pending, unexpired approvals: one more is refused with :class:`~portcullis.errors.PolicyRefused`
  (rule ``approvals/max_open_per_requester``), audited as ``refused``, and nothing is stored. The store
  counts and inserts in one transaction, so concurrent proposals never pass the cap.
* :meth:`ApprovalService.list_for` is what an approver lists: filtered to the approvals that
  approver may decide *before* a page is cut, so nobody's flood hides another tool's request.
* Expiry means deny: an approval touched after ``expires_at`` turns ``expired`` (audited), and
  :meth:`ApprovalService.sweep` expires the ones nobody touches.
* The gateway's own requests (:mod:`portcullis.approvals.system`: a proposed containment) are never
  redeemed by a call. :meth:`ApprovalService.execute` carries one out once it is approved, by the action
  :meth:`ApprovalService.register` names for its tool: right after the deciding vote, and from
  :meth:`ApprovalService.sweep` for one approved elsewhere (another replica) or whose action failed.

The service keeps the state machine (propose, vote, redeem, expire); its helpers are modules of their
own: :mod:`~portcullis.approvals.listing` (pages, sealed cursors, the approver's view),
:mod:`~portcullis.approvals.answers` (what the agent is told) and :mod:`~portcullis.approvals.execute`
(the gateway's own requests carried out exactly once).
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from portcullis.approvals.answers import APPROVAL_ID_META, INPUT_KEY, input_required, invalid, pending_error
from portcullis.approvals.execute import Action, Audit, GatewayRequests, restore
from portcullis.approvals.listing import PAGE_MAX, SCAN_MAX, SCAN_STEP, CursorSeal, brief, detail, page_for
from portcullis.approvals.model import (
    OPEN,
    Approval,
    Status,
    Vote,
    arguments_hash,
    identity_key,
    new_id,
    same_person,
    visible,
)
from portcullis.approvals.notify import LinkSigner
from portcullis.approvals.store import ApprovalStore, OpenApprovalsExceeded
from portcullis.approvals.system import made_by_gateway
from portcullis.audit.record import redact
from portcullis.config.model import ApprovalsConfig
from portcullis.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequired,
    PolicyRefused,
    PortcullisError,
)
from portcullis.identity.principal import Principal
from portcullis.policy.native import caller_matches

log = logging.getLogger("portcullis.approvals")

# (tool, requester claims, limit) -> the requester's recent decided calls of the tool, newest first
RecentCalls = Callable[[str, Mapping[str, Any], int], Awaitable[list[dict[str, Any]]]]
__all__ = ["APPROVAL_ID_META", "INPUT_KEY", "PAGE_MAX", "SCAN_MAX", "Action", "ApprovalService", "ApproverRefused",
           "Audit", "approvers_required"]

OPEN_CAP_RULE = "approvals/max_open_per_requester"

NOT_A_PERSON = ("approvers must be people: the credential must carry its issuer's person signal, name a user "
                "and no agent")


class ApproverRefused(PortcullisError):
    """An approver may not cast this vote. ``reason`` is a fixed string shown to the approver."""

    message = "approval refused"

    def __init__(self, reason: str, *, status: int = 403) -> None:
        super().__init__(reason, detail=reason)
        self.reason, self.status = reason, status


class ApprovalService:
    """Approvals for one gateway (see the module docstring)."""

    def __init__(self, store: ApprovalStore, config: ApprovalsConfig, *, clock: Callable[[], float],
                 audit: Audit, notify: Callable[[Approval], bool] | None = None,
                 links: LinkSigner | None = None, recent_calls: RecentCalls | None = None,
                 arguments_key: bytes | None = None, scan_max: int = SCAN_MAX) -> None:
        self._store, self._config, self._clock, self._audit = store, config, clock, audit
        self._scan_max = max(SCAN_STEP, scan_max)
        self._cursor_seal = CursorSeal()  # seals continuation cursors; this process only
        self._notify, self.links, self._recent_calls = notify, links, recent_calls
        # the audit key, so that a hidden value's hash matches the call's audit record; without one
        # a key of this process only (the values stay hidden, they just do not correlate)
        self._arguments_key = arguments_key if arguments_key is not None else secrets.token_bytes(32)
        # the gateway's own requests; the audit is looked up per call (a test may replace it)
        self._gateway = GatewayRequests(store, clock=clock, audit=lambda *a, **kw: self._audit(*a, **kw))
        if not config.approvers:
            log.warning("approvals.approvers is empty: nobody can approve, so calls that need approval "
                        "never run")

    # ------------------------------------------------------------------ the agent's side

    async def propose(self, *, tool: str, arguments: Mapping[str, Any], principal: Principal, decision: Any,
                      required: int, justification: str, request_id: str,
                      risk: Mapping[str, Any] | None = None, tool_risk: str = "",
                      hidden: Sequence[str] = ()) -> Approval:
        """Store and announce a pending approval bound to this call. ``hidden`` are the pointers
        the call's records hide (the manifest's ``sensitive_arguments``, the decision's ``redact``
        obligations): the stored arguments carry their keyed hashes, never the values, so no
        view, notice or listing can show them; ``arguments_hash`` still binds every value."""
        now = self._clock()
        shown = redact(arguments, hidden, self._arguments_key) if hidden else dict(arguments)
        approval = Approval(
            id=new_id(), tool=tool, arguments=shown, arguments_hash=arguments_hash(arguments),
            requester=principal.to_claims(), requester_key=identity_key(principal),
            policy_version=decision.policy_version, rule_ids=tuple(decision.rule_ids),
            reasons=tuple(decision.reasons), required=required, created_at=now, expires_at=now + self._config.ttl_s,
            justification=justification, risk=dict(risk) if risk else None, request_id=request_id,
            tool_risk=tool_risk)
        cap = self._config.max_open_per_requester
        if await self._store.count_open(approval.requester_key, now) >= cap:
            await self._refuse(approval, decision, request_id)
        # audited first: a failed create leaves a record of a request that never existed (the trail
        # may over-report, never under-report); a failed audit stores nothing
        await self._audit("proposed", approval, request_id=request_id)
        try:  # counted again with the insert, atomically: concurrent proposals never pass the cap
            await self._store.create(approval, max_open=cap, now=now)
        except OpenApprovalsExceeded:
            await self._refuse(approval, decision, request_id)
        if self._notify is not None:
            self._notify(approval)  # never blocks: a full queue drops the notice (the approval is listed anyway)
        return approval

    async def _refuse(self, approval: Approval, decision: Any, request_id: str) -> None:
        """Refuse a proposal over the requester's cap: audited (``refused``), nothing stored; always raises."""
        refused = dataclasses.replace(approval, status="refused")  # type: ignore[arg-type]
        await self._audit("refused", refused, request_id=request_id, reason=OPEN_CAP_RULE)
        log.warning("approval request refused: too many open", extra={"fields": {
            "tool": approval.tool, "requester_key": approval.requester_key,
            "max_open_per_requester": self._config.max_open_per_requester}})
        raise PolicyRefused(dataclasses.replace(
            decision, effect="deny", reasons=(*decision.reasons, "too_many_open_approvals"),
            rule_ids=(*decision.rule_ids, OPEN_CAP_RULE), denied_by=OPEN_CAP_RULE),
            detail="too many open approval requests", retry_after_s=math.ceil(self._config.ttl_s))

    def input_required(self, approval: Approval) -> dict[str, Any]:
        """The 2026-07-28 ``input_required`` result of a held call
        (:func:`~portcullis.approvals.answers.input_required`)."""
        assert self.links is not None
        return input_required(approval, self.links)

    async def from_request_state(self, state: str) -> Approval | None:
        """The approval a signed ``requestState`` names, or None if it is forged or unknown."""
        approval_id = LinkSigner.state_id(state)
        if approval_id is None or self.links is None:
            return None
        approval = await self._store.get(approval_id)
        return approval if approval is not None and self.links.check_state(approval, state) else None

    async def get(self, approval_id: str) -> Approval | None:
        return await self._store.get(approval_id)

    def pending_error(self, approval: Approval, decision: Any) -> ApprovalRequired:
        """What the agent is told: the approval, its state, and how to resume."""
        return pending_error(approval, decision)

    async def peek(self, *, approval_id: str, tool: str, arguments: Mapping[str, Any], principal: Principal,
                   decision: Any, request_id: str, required: int = 1) -> None:
        """Report the status of an approval bound to this call without running it: always raises
        (pending or approved: :class:`ApprovalRequired` with the status; denied, expired, used,
        not bound or too few approvers: as :meth:`redeem`)."""
        current = await self._open_for(approval_id, tool, arguments, principal, decision, request_id, required)
        raise self.pending_error(current, decision)

    async def redeem(self, *, approval_id: str, tool: str, arguments: Mapping[str, Any], principal: Principal,
                     decision: Any, request_id: str, before_use: Callable[[], Awaitable[None]],
                     required: int = 1) -> Approval:
        """Check the presented approval against this call and use it up (see the module docstring).

        ``required`` is how many approvers this call needs *now* (the policy's threshold and the
        risk score of this try): an approval granted by fewer is not valid for it.
        ``before_use`` runs after every check passed and before the approval is consumed (the
        limits are counted there); if it raises, the approval stays usable.
        """
        current = await self._open_for(approval_id, tool, arguments, principal, decision, request_id, required)
        if current.status == "pending":
            raise self.pending_error(current, decision)
        await before_use()
        now = self._clock()

        before: list[Approval] = []  # the stored state the transition changed (to undo it exactly)

        def use(approval: Approval) -> Approval:
            before.append(approval)
            if approval.status != "approved" or now >= approval.expires_at:
                raise invalid("used", f"approval {approval.id} no longer usable ({approval.status})")
            return dataclasses.replace(approval, status="executed")

        try:
            used = await self._store.transition(approval_id, use)
        except KeyError:
            raise invalid("invalid", "approval vanished") from None
        try:
            await self._audit("executed", used, request_id=request_id)
        except BaseException:  # not on the record: the call does not run, and the approval stays usable
            await restore(self._store, used, before[-1])
            raise
        return used

    async def _open_for(self, approval_id: str, tool: str, arguments: Mapping[str, Any], principal: Principal,
                        decision: Any, request_id: str, required: int) -> Approval:
        """The approval bound to this call, still pending or approved, granted by (or waiting for)
        at least ``required`` approvers; raises for every other case (missing or bound elsewhere,
        expired, denied, already used, too few approvers)."""
        current = await self._store.get(approval_id)
        if current is None or not self._bound(current, tool, arguments, principal, decision):
            raise invalid("invalid", f"approval {approval_id[:40]} missing or bound to another call")
        current = await self._expire_if_due(current, request_id)
        if current.status == "expired":
            raise ApprovalExpired(detail=f"approval {current.id} expired")
        if current.status == "denied":
            raise ApprovalDenied(detail=f"approval {current.id} denied")
        if current.status == "executed":
            raise invalid("used", f"approval {current.id} already used")
        if max(current.required, len(current.approvals())) < required:  # e.g. the risk now asks for two
            raise invalid("insufficient", f"approval {current.id} is for {current.required} approver(s); "
                                           f"this call needs {required}")
        return current

    def _bound(self, approval: Approval, tool: str, arguments: Mapping[str, Any], principal: Principal,
               decision: Any) -> bool:
        try:
            args_hash = arguments_hash(arguments)
        except ValueError:
            return False
        return (not made_by_gateway(approval) and approval.tool == tool and approval.arguments_hash == args_hash
                and approval.requester_key == identity_key(principal)
                and approval.policy_version == decision.policy_version)

    # ------------------------------------------------------------------ the approver's side

    async def vote(self, approval_id: str, approver: Principal, verdict: str, *, reason: str = "") -> Approval:
        if verdict not in ("approve", "deny"):
            raise ApproverRefused("verdict must be approve or deny", status=400)
        if not approver.person:
            raise ApproverRefused(NOT_A_PERSON)
        current = await self._store.get(approval_id)
        if current is None:
            raise ApproverRefused("no such approval", status=404)
        if not self.may_approve(current.tool, approver, current.tool_risk):
            raise ApproverRefused("not an approver for this tool")
        if same_person(current.requester, approver):
            raise ApproverRefused("the requester cannot approve their own request")
        request_id = f"vote-{current.id}"
        current = await self._expire_if_due(current, request_id)
        now = self._clock()

        before: list[Approval] = []

        def cast(approval: Approval) -> Approval:
            before.append(approval)
            if approval.status != "pending":
                raise ApproverRefused(f"approval is {approval.status}", status=409)
            if now >= approval.expires_at:
                raise ApproverRefused("approval expired", status=409)
            if any(v.approver.get("user_id") == approver.user_id for v in approval.votes):
                raise ApproverRefused("you already voted on this approval", status=409)
            votes = (*approval.votes, Vote(approver.to_claims(), verdict, now, visible(reason[:1000])))  # type: ignore[arg-type]
            approvals = sum(1 for v in votes if v.verdict == "approve")
            status: Status = "denied" if verdict == "deny" else (
                "approved" if approvals >= approval.required else "pending")
            return dataclasses.replace(approval, votes=votes, status=status)

        try:
            updated = await self._store.transition(approval_id, cast)
        except KeyError:
            raise ApproverRefused("no such approval", status=404) from None
        try:
            await self._audit("approved" if verdict == "approve" else "denied", updated, request_id=request_id,
                              approver=approver, reason=reason)
        except BaseException:  # a vote that is not on the record does not count
            await restore(self._store, updated, before[-1])
            raise
        log.info("approval vote", extra={"fields": {"approval_id": updated.id, "verdict": verdict,
                                                    "status": updated.status, "approver": approver.user_id}})
        if updated.status == "approved" and self._gateway.carries_out(updated):
            await self.execute(updated.id, request_id=f"execute-{updated.id}")  # never raises
        return updated

    def may_approve(self, tool: str, approver: Principal, tool_risk: str = "") -> bool:
        return any(rule.covers(tool, tool_risk) and caller_matches(rule.approvers, approver)
                   for rule in self._config.approvers)

    async def view(self, approval_id: str) -> dict[str, Any] | None:
        """What an approver sees: everything bound, made visible, and the requester's recent similar
        requests. Arguments the policy hides are keyed hashes (see :meth:`propose`); the hash of
        the complete canonical arguments is ``arguments_hash``."""
        approval = await self._store.get(approval_id)
        if approval is None:
            return None
        approval = await self._expire_if_due(approval, f"view-{approval.id}")
        recent = await self._store.recent(requester_key=approval.requester_key, tool=approval.tool,
                                          limit=self._config.recent_similar, exclude=approval.id)
        calls: list[dict[str, Any]] = []
        if self._recent_calls is not None and self._config.recent_similar:
            try:
                calls = await self._recent_calls(approval.tool, approval.requester, self._config.recent_similar)
            except Exception as exc:  # the view still shows everything bound; the history is context only
                log.warning("recent calls unavailable for an approval view", extra={"fields": {
                    "approval_id": approval.id, "error": type(exc).__name__}})
        return detail(approval, recent, calls)

    async def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [brief(a) for a in await self._store.list(status=status, limit=limit)]

    async def list_for(self, approver: Principal, status: str | None = None, *, limit: int = 100,
                       cursor: str | None = None) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """One page (newest first) of the approvals ``approver`` may decide, and the cursor of the next
        page (None: this was the last). Filtered while reading, before the page is cut: approvals of
        tools this approver may not decide never take a place on it. ``cursor`` is the id of the last
        approval of the previous page (raises :class:`~portcullis.approvals.store.UnknownCursor`).

        One request reads at most ``scan_max`` stored approvals: past that it answers the page so far
        (perhaps short or empty) with a continuation cursor, so a flood of approvals this approver may
        not decide cannot make one request scan the whole table. That cursor is sealed (an approval id
        this approver may not see, encrypted with a key of this process), so it reveals nothing."""
        return await page_for(self._store, lambda a: self.may_approve(a.tool, approver, a.tool_risk), status,
                              limit=limit, cursor=cursor, scan_max=self._scan_max, seal=self._cursor_seal)

    async def prune(self) -> int:
        """Delete finished approvals older than ``approvals.retention_days`` (none when it is null)."""
        days = self._config.retention_days
        if days is None:
            return 0
        pruned = await self._store.prune(created_before=self._clock() - days * 86400)
        if pruned:
            log.info("approvals pruned", extra={"fields": {"pruned": pruned, "retention_days": days}})
        return pruned

    # ------------------------------------------------------------------ expiry

    async def sweep(self) -> int:
        """Execute the gateway's own approved requests not yet carried out (:meth:`execute`), then expire
        every open approval past its time (audited); returns how many expired."""
        await self._gateway.execute_approved()
        expired = 0
        for status in OPEN:
            for approval in await self._store.list(status=status, limit=1000):
                if (await self._expire_if_due(approval, f"sweep-{approval.id}")).status == "expired":
                    expired += 1
        return expired

    # ------------------------------------------------------------------ the gateway's own requests

    def register(self, tool: str, action: Action) -> None:
        """Carry out the approved requests :mod:`portcullis.approvals.system` makes for ``tool`` by ``action``."""
        self._gateway.register(tool, action)

    async def open_requests(self, tool: str) -> builtins.list[Approval]:
        """The gateway's own pending and approved requests for ``tool`` (at most 1000 of each)."""
        return await self._gateway.open_requests(tool)

    async def execute(self, approval_id: str, *, request_id: str) -> Approval | None:
        """Carry out one approved request of the gateway's own, exactly once; None when it was not due
        (not approved, expired, executed already by another process, not the gateway's) or failed.

        The approval turns ``executed`` first, through the store's atomic transition, so two
        executors (replicas, a vote and a sweep) cannot both run it; then the action runs. If the
        action fails the approval goes back to ``approved`` (logged; the next sweep retries until it
        expires). Then the ``executed`` record is written with the action's note. Never raises, and
        shielded from cancellation: a vote whose client goes away still finishes what it started."""
        return await self._gateway.execute(approval_id, request_id=request_id)

    async def _expire_if_due(self, approval: Approval, request_id: str) -> Approval:
        now = self._clock()
        if approval.status not in OPEN or now < approval.expires_at:
            return approval

        def expire(current: Approval) -> Approval:
            if current.status not in OPEN:
                return current
            return dataclasses.replace(current, status="expired")

        updated = await self._store.transition(approval.id, expire)
        if approval.status != updated.status and updated.status == "expired":
            await self._audit("expired", updated, request_id=request_id)
        return updated


def approvers_required(policy: Any, arguments: Mapping[str, Any]) -> int:
    """2 when the tool's policy asks for two approvers above an amount and the call is above it, else 1."""
    threshold = getattr(policy, "requires_two_approvals_over", None)
    if threshold is None:
        return 1
    value: Any = arguments
    for part in policy.amount_pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(value, Mapping) or part not in value:
            return 1
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return 1
    return 2 if Decimal(str(value)) > threshold else 1
