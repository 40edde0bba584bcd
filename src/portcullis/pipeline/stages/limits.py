"""Limits: session-aware counters and running totals per principal and tool over a window.

Runs after authorize (a call the policy refuses consumes nothing) and before the write-ahead
audit stage (a call refused by a limit is audited as a denial). The caller passed the gate (the
tool is in its ``tools/list``), so a refused call is :class:`~portcullis.errors.PolicyRefused`
naming the first failing rule and, for an exceeded limit, ``retry_after_s`` (the rule's window:
an upper bound that depends on the rule only, never on a counter, so it tells nothing of other
callers sharing the counter); every failing rule id goes to the audit record. A store that cannot
answer is a ``policy_error`` denial (fail closed). ``log_only`` rules are counted and logged,
never enforced.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from portcullis.errors import InternalError, PolicyRefused
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.policy.decision import Decision
from portcullis.policy.limits import LIMIT_EXCEEDED, LimitOutcome, LimitRule, check_limits
from portcullis.state.interface import StateStore

log = logging.getLogger("portcullis.policy")


LimitCheck = Callable[[CallContext, bool], Awaitable[None]]


def make_check(rules: Sequence[LimitRule], store: StateStore, clock: Callable[[], float], hooks: Hooks) -> LimitCheck:
    """``check(ctx, reserve)``: returns if the call fits every limit (counting it when ``reserve``),
    else raises :class:`PolicyRefused` with the limit rules added to the decision."""
    windows = {rule.rule_id: rule.window_s for rule in rules}

    async def check(ctx: CallContext, reserve: bool) -> None:
        if ctx.route is None or ctx.decision is None:
            raise InternalError(detail="limits ran before authorize")
        outcome = await check_limits(rules, store, tool=ctx.route.exposed_name, principal=ctx.principal,
                                     arguments=ctx.arguments, now=clock(), reserve=reserve)
        refusal = judge(outcome, ctx.decision, windows, hooks, {"request_id": ctx.request_id,
                                                                "tool": ctx.route.exposed_name})
        if refusal is not None:
            raise refusal

    return check


def judge(outcome: LimitOutcome, decision: Decision, windows: Mapping[str, float], hooks: Hooks,
          fields: Mapping[str, Any]) -> PolicyRefused | None:
    """What a limit outcome means for a call or a read: None if it fits, else the refusal to raise (its
    decision names every failing rule, ``retry_after_s`` the first one's window). Reports and logs it."""
    for failure in outcome.shadow:
        hooks.limit_exceeded(failure.rule_id)
        log.warning("shadow limit would deny this call", extra={"fields": {**fields, "rule_id": failure.rule_id}})
    if outcome.allowed:
        return None
    if outcome.detail:
        hooks.policy_error()
        log.error("limit check failed; call denied", extra={"fields": {
            "request_id": fields.get("request_id"), "detail": outcome.detail}})
    for failure in outcome.failures:
        hooks.limit_exceeded(failure.rule_id)
    first = outcome.failures[0]
    refused = dataclasses.replace(
        decision, effect="deny",
        reasons=tuple(dict.fromkeys((*decision.reasons, *(f.reason for f in outcome.failures)))),
        rule_ids=(*decision.rule_ids, *(f.rule_id for f in outcome.failures)), denied_by=first.rule_id)
    window = windows.get(first.rule_id) if first.reason == LIMIT_EXCEEDED else None
    return PolicyRefused(refused, detail="limit exceeded", retry_after_s=None if window is None else math.ceil(window))


def make_stage(check: LimitCheck) -> Stage:
    async def limits(ctx: CallContext, call_next: Handler) -> CallResult:
        # a call that waits for a human is only checked here (no human approves a call that would be
        # throttled); the approve stage counts it when the approved call runs. A status poll never
        # runs, so it is only checked too, whatever its decision.
        waits = ctx.approval_poll or (ctx.decision is not None and ctx.decision.effect == "require_approval")
        await check(ctx, not waits)
        return await call_next(ctx)

    return limits
