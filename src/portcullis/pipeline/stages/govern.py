"""Govern: the data-governance rules of a call, before it is forwarded and after it answered.

Two stages (:mod:`portcullis.governance` has the rules):

* :func:`make_check`, on the request side after authorize and risk, before limits and approve:
  a tool whose output class may not reach the caller (``governance.sinks``) is refused (``-31020``,
  rule ``content.sink``), before anything is forwarded. (A Restricted tool outside the gateway's
  environment never gets here: the policy engine hides it from that caller, so the gate answers
  "Unknown tool" and records ``content.restricted_environment``; the check here stays as a second
  line.) Then, for an
  egress-capable tool only, the toxic-flow rule: one read of the session's counter; a tainted
  session's call is refused (``content.toxic_flow``) or becomes ``require_approval`` with that rule
  id, so the limits and the approval flow treat it like any held call. A store that cannot answer
  is a ``policy_error`` deny. Non-egress tools cost one attribute read.
* :func:`make_hook`, on the response side between the audit stage and the content filter (so it
  sees the filter's report on the way back, and the audit stage's outcome record sees what it did):
  a result tagged with another tenant is withheld (:class:`~portcullis.errors.GovernanceWithheld`);
  a result the filter found sensitive or injected taints the session, however the call ended. If
  the taint cannot be recorded the result is withheld too (fail closed: an untainted session could
  then send it out).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from portcullis.config.model import GovernanceConfig, ToxicFlowConfig
from portcullis.errors import GovernanceWithheld, InternalError, PolicyRefused
from portcullis.governance import flow
from portcullis.governance.sinks import restricted_refusal
from portcullis.governance.tenancy import tenant_refusal
from portcullis.pipeline.client_input import ScreenedInput
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.policy.decision import DATA_CLASS_SINK, Decision
from portcullis.state.interface import MAX_AMOUNT, StateStore

log = logging.getLogger("portcullis.policy")
TAINT_FAILED = "taint_not_recorded"


def make_check(config: GovernanceConfig, state: StateStore, clock: Callable[[], float], hooks: Hooks,
               environment: str) -> Stage:
    toxic = config.toxic_flow.enabled

    async def govern_check(ctx: CallContext, call_next: Handler) -> CallResult:
        decision, route = ctx.decision, ctx.route
        if decision is None or route is None:
            raise InternalError(detail="governance check ran before authorize")
        manifest = route.manifest.manifest
        refused = restricted_refusal(manifest, ctx.principal, environment, config.sinks)
        if refused is not None:
            raise PolicyRefused(_stricter(decision, "deny", refused, DATA_CLASS_SINK),
                                detail="result class may not reach this caller")
        if not toxic or not flow.is_egress(manifest):
            return await call_next(ctx)
        try:
            action = flow.action_for(await state.window_total(flow.session_key(ctx.principal), now=clock()))
        except Exception as exc:  # fail closed: an egress call is not let through unchecked
            hooks.policy_error()
            log.warning("toxic-flow state unavailable: the egress call is denied", extra={"fields": {
                "request_id": ctx.request_id, "error": type(exc).__name__}})
            raise PolicyRefused(_stricter(decision, "deny", flow.ERROR_RULE_ID, "policy_error"),
                                detail="toxic-flow state unavailable") from None
        if action == "deny":
            raise PolicyRefused(_stricter(decision, "deny", flow.RULE_ID, flow.REASON),
                                detail="egress tool after sensitive or injected result")
        if action is None:  # the common case: an untainted session
            return await call_next(ctx)
        if decision.effect == "allow":
            decision = _stricter(decision, "require_approval", flow.RULE_ID, flow.REASON)
        else:  # already held: the rule is named too
            decision = dataclasses.replace(decision, reasons=(*decision.reasons, flow.REASON),
                                           rule_ids=(*decision.rule_ids, flow.RULE_ID))
        return await call_next(ctx.evolve(decision=decision))

    return govern_check


def make_hook(config: GovernanceConfig, state: StateStore, clock: Callable[[], float]) -> Stage:
    toxic = config.toxic_flow

    async def govern(ctx: CallContext, call_next: Handler) -> CallResult:
        route = ctx.route
        if route is None:
            raise InternalError(detail="governance hook ran before route")
        record = ctx.record
        try:
            result = await call_next(ctx)
            if isinstance(result, ScreenedInput):  # input requests to the caller, not the tool's output
                return result
            reason = tenant_refusal(caller_tenant=ctx.principal.tenant, meta_tag=record.result_tenant,
                                    structured=result.get("structuredContent"),
                                    pointer=route.manifest.manifest.output_tenant_pointer)
            if reason is not None:
                record.governance = {**(record.governance or {}), "withheld": reason}
                raise GovernanceWithheld(reason, detail=f"result withheld: {reason}")
            return result
        finally:  # whatever ended the call: what the agent may have seen taints its session
            if toxic.enabled:
                await _taint(ctx, state, clock, toxic)

    return govern


async def _taint(ctx: CallContext, state: StateStore, clock: Callable[[], float], config: ToxicFlowConfig) -> None:
    record = ctx.record
    sensitive, injection = flow.signals_of(record)
    weight = flow.taint_weight(config, sensitive=sensitive, injection=injection)
    if not weight:
        return
    cause = "sensitive" if sensitive else "injection"
    if sensitive and injection:
        cause = "sensitive+injection"
    record.governance = {**(record.governance or {}), "taint": cause}
    try:
        await state.window_add(flow.session_key(ctx.principal), weight, window_s=config.window_s,
                               limit=MAX_AMOUNT, now=clock())
    except Exception as exc:
        log.warning("toxic-flow taint not recorded: the result is withheld", extra={"fields": {
            "request_id": ctx.request_id, "error": type(exc).__name__}})
        record.governance = {**record.governance, "withheld": TAINT_FAILED}
        raise GovernanceWithheld(TAINT_FAILED, detail="toxic-flow taint not recorded") from None


def _stricter(decision: Decision, effect: str, rule_id: str, reason: str) -> Decision:
    if effect == "deny":
        return dataclasses.replace(decision, effect="deny", reasons=(*decision.reasons, reason),
                                   rule_ids=(*decision.rule_ids, rule_id), denied_by=rule_id)
    return dataclasses.replace(decision, effect="require_approval", reasons=(*decision.reasons, reason),
                               rule_ids=(*decision.rule_ids, rule_id))
