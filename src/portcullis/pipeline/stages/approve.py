"""Approve: a call the policy answered with ``require_approval`` runs only with a valid approval.

Without an approval id the call is not forwarded: a pending approval bound to exactly this call
is proposed and the agent gets :class:`~portcullis.errors.ApprovalRequired` with its id, status,
expiry and how to resume. With an approval id the approval is redeemed (checked against this
tool, these canonical arguments, this caller and this policy version, then used up); the limits
are counted just before it is used (the limits stage only checked them). Without an approval
service every such call stops here.
"""

from __future__ import annotations

import dataclasses

from portcullis.approvals.service import INPUT_KEY, ApprovalService, approvers_required
from portcullis.errors import ApprovalInvalid, ApprovalRequired, InputRequired, InternalError
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.stages.limits import LimitCheck


def make_stage(approvals: ApprovalService | None, check_limits: LimitCheck) -> Stage:
    async def approve(ctx: CallContext, call_next: Handler) -> CallResult:
        decision, route = ctx.decision, ctx.route
        if decision is None or route is None:
            raise InternalError(detail="approve ran before authorize")
        if decision.effect != "require_approval":
            return await call_next(ctx)
        if approvals is None:
            raise ApprovalRequired(decision, detail="policy requires approval; no approval service")
        elicit = ctx.input_state is not None and approvals.links is not None
        approval_id = ctx.approval_id
        if elicit and ctx.input_state["request_state"] is not None:  # type: ignore[index]
            held = await approvals.from_request_state(ctx.input_state["request_state"])  # type: ignore[index]
            if held is None:
                raise ApprovalInvalid(detail="requestState forged or unknown")
            response = ctx.input_state["responses"].get(INPUT_KEY)  # type: ignore[index]
            if not isinstance(response, dict) or response.get("action") != "accept":
                raise approvals.pending_error(held, decision)  # the user stopped waiting: resume by id later
            approval_id = held.id
        if approval_id is None:
            policy = route.manifest.manifest.policy
            pending = await approvals.propose(
                tool=route.exposed_name, arguments=ctx.arguments, principal=ctx.principal, decision=decision,
                required=max(approvers_required(policy, ctx.arguments), (decision.risk or {}).get("approvers", 0)),
                justification=ctx.justification, request_id=ctx.request_id, risk=decision.risk,
                tool_risk=str(route.manifest.manifest.risk))
            if elicit:  # the protocol's own mechanism: input_required with a URL-mode elicitation
                raise InputRequired(decision, approvals.input_required(pending))
            raise approvals.pending_error(pending, decision)

        if ctx.approval_poll:  # status only: pending / approved come back as -31010 with the status
            await approvals.peek(approval_id=approval_id, tool=route.exposed_name, arguments=ctx.arguments,
                                 principal=ctx.principal, decision=decision, request_id=ctx.request_id)

        async def count_limits() -> None:
            await check_limits(ctx, True)

        try:
            used = await approvals.redeem(approval_id=approval_id, tool=route.exposed_name, arguments=ctx.arguments,
                                          principal=ctx.principal, decision=decision, request_id=ctx.request_id,
                                          before_use=count_limits)
        except ApprovalRequired:  # still pending
            current = await approvals.get(approval_id) if elicit else None
            if current is None:
                raise
            raise InputRequired(decision, approvals.input_required(current)) from None
        # the call now runs as approved: its records name the approval and who approved it
        approved = dataclasses.replace(decision, effect="allow",
                                       reasons=(*decision.reasons, f"approved:{used.id}"))
        return await call_next(ctx.evolve(decision=approved, approval=used))

    return approve
