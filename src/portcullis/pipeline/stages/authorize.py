"""Authorize: the caller gate before validation, and the full decision after it.

Two stages, because what a caller may learn depends on whether it may call the tool at all:

* :func:`make_gate` runs right after route. A caller that the tool's policy can never admit
  (not in ``allowed_callers``, in ``denied_callers``, wrong environment, missing attributes, no
  policy) gets the unknown-tool error here, *before* argument validation could tell it that the
  tool exists and what its schema wants.
* :func:`make_stage` runs after validate, on well-typed arguments: the native policy plus the
  Rego modules (:class:`~portcullis.policy.engine.PolicyEngine`). The caller passed the gate, so
  the tool is in its ``tools/list``: ``deny`` raises :class:`~portcullis.errors.PolicyRefused`
  (``-31020`` naming the one rule that refused it); ``require_approval`` goes on to the limits and
  the approve stage, and nothing is forwarded without an approval; a shadow (``log_only``)
  decision is logged and counted and the call goes on.

The engine never raises: an evaluation error is a ``deny`` with reason ``policy_error``. Rego
runs off the event loop (a worker process, stopped at its CPU budget), so a slow module never
delays another caller.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from portcullis.errors import Denied, InternalError, PolicyRefused
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.policy.active import ActivePolicy, as_active
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.limits import LimitRule, session_totals
from portcullis.policy.shadow import ShadowRunner, compared, runs_inline, shadow_decide
from portcullis.state.interface import StateStore

log = logging.getLogger("portcullis.policy")


def make_gate(engine: PolicyEngine | ActivePolicy, clock: Callable[[], float]) -> Stage:
    active = as_active(engine)

    async def gate(ctx: CallContext, call_next: Handler) -> CallResult:
        if ctx.route is None:
            raise InternalError(detail="gate ran before route")
        now = datetime.fromtimestamp(clock(), UTC)
        engine, token = active.pin()  # one policy version for the whole call (policy/active.py)
        try:
            if not engine.may_call(ctx.route.exposed_name, ctx.principal, now=now):
                decision = engine.gate_decision(ctx.route.exposed_name, ctx.principal, ctx.arguments, now=now)
                raise Denied(decision, detail="caller may not call this tool")
            return await call_next(ctx)
        finally:
            active.unpin(token)

    return gate


def make_stage(engine: PolicyEngine | ActivePolicy, clock: Callable[[], float], hooks: Hooks,
               limit_rules: Sequence[LimitRule] = (), state: StateStore | None = None) -> Stage:
    active = as_active(engine)
    may_fetch = bool(limit_rules) and state is not None
    background = ShadowRunner(hooks.shadow_version)  # a shadow with Rego of its own (policy/shadow.py)

    async def authorize(ctx: CallContext, call_next: Handler) -> CallResult:
        if ctx.route is None:
            raise InternalError(detail="authorize ran before route")
        engine = active.for_call()
        now = clock()
        session = None
        if may_fetch and engine.wants_session:  # a Rego module reads input.session: the running totals of the limits
            try:
                session = await session_totals(limit_rules, state, tool=ctx.route.exposed_name,  # type: ignore[arg-type]
                                               principal=ctx.principal, arguments=ctx.arguments, now=now)
            except Exception as exc:  # fail closed: a policy that reads history cannot decide without it
                log.warning("session history unavailable: the call is denied", extra={"fields": {
                    "request_id": ctx.request_id, "tool": ctx.route.exposed_name, "error": type(exc).__name__}})
                hooks.policy_error()
                decision = engine.error_decision(ctx.route.exposed_name)
                raise PolicyRefused(decision, detail="session history unavailable") from None
        decision = await engine.decide_async(ctx.route.exposed_name, ctx.principal, ctx.arguments,
                                             now=datetime.fromtimestamp(now, UTC), session=session)
        shadow = active.shadow  # one attribute read when none is set (policy/shadow.py)
        if shadow is not None and runs_inline(shadow[1], engine):
            would = await shadow_decide(shadow, ctx.route.exposed_name, ctx.principal, ctx.arguments,
                                        now=datetime.fromtimestamp(now, UTC), session=session)
            hooks.shadow_version(compared(would, decision.effect))
            decision = dataclasses.replace(decision, shadow_version=would)
        elif shadow is not None:  # its own Rego workers: never waited for; the records read the cell
            ctx.record.shadow = background.submit(shadow, decision.effect, ctx.route.exposed_name, ctx.principal,
                                                  ctx.arguments, now=datetime.fromtimestamp(now, UTC),
                                                  session=session, request_id=ctx.request_id)
        if decision.shadow is not None and decision.shadow.effect != "allow":
            hooks.shadow(decision.shadow)
            log.warning("shadow policy would not allow this call", extra={"fields": {
                "request_id": ctx.request_id, "tool": ctx.route.exposed_name,
                "would_be": decision.shadow.effect, "rule_ids": list(decision.shadow.rule_ids),
                "policy_version": decision.policy_version}})
        if "policy_error" in decision.reasons:
            hooks.policy_error()
        if decision.effect == "deny":
            raise PolicyRefused(decision, detail="policy denied the call")
        # require_approval goes on: limits check it, the approve stage proposes or redeems
        return await call_next(ctx.evolve(decision=decision))

    return authorize
