"""Risk: score the call and make the decision stricter when the score asks for it (see
:mod:`portcullis.approvals.risk`). Runs after authorize (a denied call is not scored) and before
limits and approve. The rate signal is a windowed counter in the state store; if the store
cannot answer, the call is denied (``policy_error``), as for any evaluation error."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from portcullis.approvals.model import identity_key
from portcullis.approvals.risk import score
from portcullis.config.model import RiskConfig
from portcullis.errors import Denied, InternalError
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.state.interface import MAX_AMOUNT, StateStore

log = logging.getLogger("portcullis.policy")


def make_stage(config: RiskConfig, state: StateStore, clock: Callable[[], float], hooks: Hooks,
               environment: str) -> Stage:
    async def risk(ctx: CallContext, call_next: Handler) -> CallResult:
        decision, route = ctx.decision, ctx.route
        if decision is None or route is None:
            raise InternalError(detail="risk ran before authorize")
        if ctx.approval_id is not None:  # resuming: the approval was scored when it was proposed
            return await call_next(ctx)
        manifest = route.manifest.manifest
        earlier = 0
        try:
            if config.rate is not None:
                key = f"risk/{identity_key(ctx.principal)}/{route.exposed_name}"
                added = await state.window_add(key, 1, window_s=config.rate.window_s, limit=MAX_AMOUNT, now=clock())
                earlier = int(added.total_before)
        except Exception as exc:  # fail closed
            hooks.policy_error()
            log.warning("risk rate signal unavailable: the call is denied", extra={"fields": {
                "request_id": ctx.request_id, "error": type(exc).__name__}})
            raise Denied(dataclasses.replace(decision, effect="deny", reasons=(*decision.reasons, "policy_error"),
                                             rule_ids=(*decision.rule_ids, "risk/policy_error")),
                         detail="risk signal unavailable") from None
        scored = score(config, risk=str(manifest.risk), classification_in=manifest.classification.input,
                       classification_out=manifest.classification.output, environment=environment,
                       arguments=ctx.arguments, earlier_calls=earlier)
        verdict = scored["verdict"]
        if verdict == "deny":
            raise Denied(dataclasses.replace(decision, effect="deny", risk=scored,
                                             reasons=(*decision.reasons, "risk_too_high"),
                                             rule_ids=(*decision.rule_ids, "risk/deny")), detail="risk too high")
        if verdict in ("one", "two"):
            rule = "risk/two_approvers" if verdict == "two" else "risk/one_approver"
            decision = dataclasses.replace(decision, effect="require_approval", risk=scored,
                                           reasons=(*decision.reasons, "risk_needs_approval"),
                                           rule_ids=(*decision.rule_ids, rule))
        else:
            decision = dataclasses.replace(decision, risk=scored)
        return await call_next(ctx.evolve(decision=decision))

    return risk
