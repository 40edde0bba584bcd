"""Approve: a call the policy answered with ``require_approval`` runs only with a valid approval.

Without an approval the call is not forwarded: a pending approval bound to exactly this call is
proposed and the agent gets :class:`~portcullis.errors.ApprovalRequired` with its id, status,
expiry and how to resume.

A call that *presents* an approval (``_meta["io.portcullis/approval-id"]``, or a signed
``requestState`` from a held 2026-07-28 call) or asks for a status poll
(``_meta["io.portcullis/approval-poll"]``) is held to these rules, in this order:

1. A poll never runs the call, whatever else the request carries: it reports the status of the
   approval it names (which must be bound to this call) and stops. A poll that names none is
   invalid params.
2. What is presented must be unambiguous: a ``requestState`` that does not verify, or that names
   another approval than the ``_meta`` id, is not valid for the call.
3. A call whose decision (policy and risk score, computed as for any call) does not need approval
   runs on that decision; the presented approval is ignored and stays unused.
4. Otherwise the approval is redeemed: checked against this tool, these canonical arguments,
   this caller and this policy version, granted by at least as many approvers as this call needs
   now (the policy's two-approver threshold, the risk score's verdict), then used up. The
   limits are counted just before it is used (the limits stage only checked them).

Nothing presented ever turns a decision into an allow by itself: only a successful redemption
does. What was presented and what came of it is put in the call's decision record
(``approval_presented``). Without an approval service every such call stops here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from portcullis.approvals.service import INPUT_KEY, ApprovalService, approvers_required
from portcullis.catalog import Route
from portcullis.config.model import Classification, Sink
from portcullis.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalInvalid,
    ApprovalRequired,
    InputRequired,
    InternalError,
    InvalidParams,
    PortcullisError,
)
from portcullis.governance.sinks import sink_allowed
from portcullis.pipeline.auditing import redaction_pointers
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.stages.limits import LimitCheck
from portcullis.policy.decision import Decision


def make_stage(approvals: ApprovalService | None, check_limits: LimitCheck,
               sinks: Mapping[Classification, Sequence[Sink]] | None = None) -> Stage:
    async def approve(ctx: CallContext, call_next: Handler) -> CallResult:
        decision, route = ctx.decision, ctx.route
        if decision is None or route is None:
            raise InternalError(detail="approve ran before authorize")
        if not ctx.presents_approval:
            if decision.effect != "require_approval":
                return await call_next(ctx)
            if approvals is None:
                raise ApprovalRequired(decision, detail="policy requires approval; no approval service")
            await _propose(approvals, ctx, route, decision, sinks)  # always raises: nothing is forwarded
        presented: dict[str, Any] = {"id": ctx.approval_id, "via": "meta" if ctx.approval_id else "request_state",
                                     "poll": ctx.approval_poll}
        try:
            return await _presented(approvals, check_limits, ctx, route, decision, presented, call_next)
        except PortcullisError as exc:  # the first (innermost) verdict stands (CallRecord.refuse_approval)
            ctx.record.refuse_approval({**presented, "result": _result(exc)},  # audited as a decision:
                                       decision if isinstance(exc, ApprovalInvalid | ApprovalExpired | ApprovalDenied)
                                       else None)
            raise

    return approve


async def _propose(approvals: ApprovalService, ctx: CallContext, route: Route, decision: Decision,
                   sinks: Mapping[Classification, Sequence[Sink]] | None) -> None:
    manifest = route.manifest.manifest
    # an input class that may not reach approval views (governance.sinks): approvers see keyed hashes only
    hidden = (redaction_pointers(route, decision)
              if sink_allowed(manifest.classification.input, Sink.APPROVAL_VIEW, sinks) else [""])
    pending = await approvals.propose(
        tool=route.exposed_name, arguments=ctx.arguments, principal=ctx.principal, decision=decision,
        required=_needed(manifest.policy, ctx, decision), justification=ctx.justification,
        request_id=ctx.request_id, risk=decision.risk, tool_risk=str(manifest.risk),
        hidden=hidden)
    if ctx.input_state is not None and approvals.links is not None:  # the protocol's own mechanism
        raise InputRequired(decision, approvals.input_required(pending))
    raise approvals.pending_error(pending, decision)


async def _presented(approvals: ApprovalService | None, check_limits: LimitCheck, ctx: CallContext, route: Route,
                     decision: Decision, presented: dict[str, Any], call_next: Handler) -> CallResult:
    if approvals is None:
        if ctx.approval_poll or decision.effect == "require_approval":
            raise ApprovalInvalid(detail="an approval was presented; no approval service")
        return await call_next(ctx.evolve(approval_presented={**presented, "result": "not_needed"}))
    # 2: one unambiguous approval, from the _meta id or a requestState that verifies
    approval_id = ctx.approval_id
    state = ctx.input_state["request_state"] if ctx.input_state is not None else None
    held = None
    if state is not None:
        held = await approvals.from_request_state(state) if approvals.links is not None else None
        if held is None:
            raise ApprovalInvalid(detail="requestState forged or unknown")
        if approval_id is not None and approval_id != held.id:
            raise ApprovalInvalid(detail="requestState and _meta name different approvals")
        approval_id = held.id
        presented["id"] = held.id
    needed = _needed(route.manifest.manifest.policy, ctx, decision)
    # 1: a poll reports the status and never runs anything
    if ctx.approval_poll:
        if approval_id is None:
            raise InvalidParams("Invalid params: _meta['io.portcullis/approval-poll'] needs an approval id")
        await approvals.peek(approval_id=approval_id, tool=route.exposed_name, arguments=ctx.arguments,
                             principal=ctx.principal, decision=decision, request_id=ctx.request_id,
                             required=needed)
        raise InternalError(detail="approval poll reported no status")  # peek always raises
    if approval_id is None:  # pragma: no cover - presents_approval means an id, a state or a poll
        raise InternalError(detail="presented approval without an id")
    # 3: a call that needs no approval runs on its own decision; the approval stays unused
    if decision.effect != "require_approval":
        return await call_next(ctx.evolve(approval_presented={**presented, "result": "not_needed"}))
    if held is not None:  # a held call retried through the elicitation: did the user accept?
        response = ctx.input_state["responses"].get(INPUT_KEY) if ctx.input_state is not None else None
        if not isinstance(response, dict) or response.get("action") != "accept":
            raise approvals.pending_error(held, decision)  # the user stopped waiting: resume by id later

    # 4: redeem
    async def count_limits() -> None:
        await check_limits(ctx, True)

    try:
        used = await approvals.redeem(approval_id=approval_id, tool=route.exposed_name, arguments=ctx.arguments,
                                      principal=ctx.principal, decision=decision, request_id=ctx.request_id,
                                      before_use=count_limits, required=needed)
    except ApprovalRequired:  # still pending
        elicits = ctx.input_state is not None and approvals.links is not None
        current = await approvals.get(approval_id) if elicits else None
        if current is None:
            raise
        raise InputRequired(decision, approvals.input_required(current)) from None
    # the call now runs as approved: its records name the approval and who approved it
    approved = dataclasses.replace(decision, effect="allow", reasons=(*decision.reasons, f"approved:{used.id}"))
    return await call_next(ctx.evolve(decision=approved, approval=used,
                                      approval_presented={**presented, "result": "redeemed"}))


def _needed(policy: Any, ctx: CallContext, decision: Decision) -> int:
    """How many approvers this call needs: the policy's threshold and the risk score, at least one."""
    return max(1, approvers_required(policy, ctx.arguments), int((decision.risk or {}).get("approvers", 0)))


def _result(error: PortcullisError) -> str:
    """What came of a presented approval that did not run the call (for the decision record)."""
    if isinstance(error, InputRequired):
        return "pending"
    if isinstance(error, ApprovalRequired):
        status = error.data.get("status") if isinstance(error.data, dict) else None
        return status if status in ("pending", "approved") else "not_approved"
    if isinstance(error, ApprovalDenied):
        return "denied"
    if isinstance(error, ApprovalExpired):
        return "expired"
    if isinstance(error, ApprovalInvalid):
        return str(getattr(error, "approval_result", "invalid"))
    if isinstance(error, InvalidParams):
        return "malformed"
    return "not_used"  # refused on the way (a limit counted at use time, a failing store)
