"""Authorize: the caller gate before validation, and the full decision after it.

Two stages, because what a caller may learn depends on whether it may call the tool at all:

* :func:`make_gate` runs right after route. A caller that the tool's policy can never admit
  (not in ``allowed_callers``, in ``denied_callers``, wrong environment, missing attributes, no
  policy) gets the unknown-tool error here, *before* argument validation could tell it that the
  tool exists and what its schema wants.
* :func:`make_stage` runs after validate, on well-typed arguments: the native policy plus the
  Rego modules (:class:`~portcullis.policy.engine.PolicyEngine`). ``deny`` raises
  :class:`~portcullis.errors.Denied` (the unknown-tool error on the wire); ``require_approval``
  raises :class:`~portcullis.errors.ApprovalRequired` and nothing is forwarded; a shadow
  (``log_only``) decision is logged and counted and the call goes on.

The engine never raises: an evaluation error is a ``deny`` with reason ``policy_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from portcullis.errors import ApprovalRequired, Denied, InternalError
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.policy.engine import PolicyEngine

log = logging.getLogger("portcullis.policy")


def make_gate(engine: PolicyEngine, clock: Callable[[], float]) -> Stage:
    async def gate(ctx: CallContext, call_next: Handler) -> CallResult:
        if ctx.route is None:
            raise InternalError(detail="gate ran before route")
        now = datetime.fromtimestamp(clock(), UTC)
        if not engine.may_call(ctx.route.exposed_name, ctx.principal, now=now):
            decision = engine.decide(ctx.route.exposed_name, ctx.principal, ctx.arguments, now=now)
            raise Denied(decision, detail="caller may not call this tool")
        return await call_next(ctx)

    return gate


def make_stage(engine: PolicyEngine, clock: Callable[[], float], hooks: Hooks) -> Stage:
    async def authorize(ctx: CallContext, call_next: Handler) -> CallResult:
        if ctx.route is None:
            raise InternalError(detail="authorize ran before route")
        decision = engine.decide(ctx.route.exposed_name, ctx.principal, ctx.arguments,
                                 now=datetime.fromtimestamp(clock(), UTC))
        if decision.shadow is not None and decision.shadow.effect != "allow":
            hooks.shadow(decision.shadow)
            log.warning("shadow policy would not allow this call", extra={"fields": {
                "request_id": ctx.request_id, "tool": ctx.route.exposed_name,
                "would_be": decision.shadow.effect, "rule_ids": list(decision.shadow.rule_ids),
                "policy_version": decision.policy_version}})
        if "policy_error" in decision.reasons:
            hooks.policy_error()
        if decision.effect == "deny":
            raise Denied(decision, detail="policy denied the call")
        if decision.effect == "require_approval":
            raise ApprovalRequired(decision, detail="policy requires approval")
        return await call_next(ctx.evolve(decision=decision))

    return authorize
