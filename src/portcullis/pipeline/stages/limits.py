"""Limits: session-aware counters and running totals per principal and tool over a window.

Runs after authorize (a call the policy refuses consumes nothing) and before the write-ahead
audit stage (a call refused by a limit is audited as a denial). A refused call is the same
unknown-tool error as any other denial; the failing rule ids go to the audit record. A store
that cannot answer is a ``policy_error`` denial (fail closed). ``log_only`` rules are counted
and logged, never enforced.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from portcullis.errors import Denied, InternalError
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.policy.limits import LimitRule, check_limits
from portcullis.state.interface import StateStore

log = logging.getLogger("portcullis.policy")


LimitCheck = Callable[[CallContext, bool], Awaitable[None]]


def make_check(rules: Sequence[LimitRule], store: StateStore, clock: Callable[[], float], hooks: Hooks) -> LimitCheck:
    """``check(ctx, reserve)``: returns if the call fits every limit (counting it when ``reserve``),
    else raises :class:`Denied` with the limit rules added to the decision."""

    async def check(ctx: CallContext, reserve: bool) -> None:
        if ctx.route is None or ctx.decision is None:
            raise InternalError(detail="limits ran before authorize")
        outcome = await check_limits(rules, store, tool=ctx.route.exposed_name, principal=ctx.principal,
                                     arguments=ctx.arguments, now=clock(), reserve=reserve)
        for failure in outcome.shadow:
            hooks.limit_exceeded(failure.rule_id)
            log.warning("shadow limit would deny this call", extra={"fields": {
                "request_id": ctx.request_id, "tool": ctx.route.exposed_name, "rule_id": failure.rule_id}})
        if outcome.allowed:
            return
        if outcome.detail:
            hooks.policy_error()
            log.error("limit check failed; call denied", extra={"fields": {
                "request_id": ctx.request_id, "detail": outcome.detail}})
        for failure in outcome.failures:
            hooks.limit_exceeded(failure.rule_id)
        decision = dataclasses.replace(
            ctx.decision, effect="deny",
            reasons=tuple(dict.fromkeys((*ctx.decision.reasons, *(f.reason for f in outcome.failures)))),
            rule_ids=(*ctx.decision.rule_ids, *(f.rule_id for f in outcome.failures)))
        raise Denied(decision, detail="limit exceeded")

    return check


def make_stage(check: LimitCheck) -> Stage:
    async def limits(ctx: CallContext, call_next: Handler) -> CallResult:
        # a call that waits for a human is only checked here (no human approves a call that would be
        # throttled); the approve stage counts it when the approved call runs
        waits = ctx.decision is not None and ctx.decision.effect == "require_approval"
        await check(ctx, not waits)
        return await call_next(ctx)

    return limits
