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

from portcullis.approvals.service import ApprovalService, approvers_required
from portcullis.errors import ApprovalRequired, InternalError
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
        if ctx.approval_id is None:
            policy = route.manifest.manifest.policy
            pending = await approvals.propose(
                tool=route.exposed_name, arguments=ctx.arguments, principal=ctx.principal, decision=decision,
                required=max(approvers_required(policy, ctx.arguments), (decision.risk or {}).get("approvers", 0)),
                justification=ctx.justification, request_id=ctx.request_id, risk=decision.risk)
            raise approvals.pending_error(pending, decision)

        async def count_limits() -> None:
            await check_limits(ctx, True)

        used = await approvals.redeem(approval_id=ctx.approval_id, tool=route.exposed_name, arguments=ctx.arguments,
                                      principal=ctx.principal, decision=decision, request_id=ctx.request_id,
                                      before_use=count_limits)
        # the call now runs as approved: its records name the approval and who approved it
        approved = dataclasses.replace(decision, effect="allow",
                                       reasons=(*decision.reasons, f"approved:{used.id}"))
        return await call_next(ctx.evolve(decision=approved, approval=used))

    return approve
