"""Risk: score the call and make the decision stricter when the score asks for it (see
:mod:`portcullis.approvals.risk`). Runs after authorize (a denied call is not scored) and before
limits and approve. The rate signal is a windowed counter in the state store; if the store
cannot answer, the call is denied (``policy_error``), as for any evaluation error.

Every call is scored, whatever its ``_meta`` says: an approval id is only a claim until the
approve stage redeems it, and the approve stage needs this stage's verdict to know how many
approvers the call needs (a redeemed approval must have been granted by at least that many).
What a presented approval id may change is only whether this try *counts* in the rate signal:

* a call that presents nothing counts (as every call always did);
* a status poll never counts (it never runs anything);
* a call that presents an approval (a resume) is first scored without counting; if it needs an
  approval, it counts no further (it runs only through its approval, whose proposing call was
  counted, so retrying while the approval is pending does not raise the caller's own score);
  if it does not need one, the approval id is irrelevant and the call counts and is scored
  exactly as a call without an id.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from portcullis.approvals.model import identity_key
from portcullis.approvals.risk import score
from portcullis.config.model import RiskConfig
from portcullis.errors import InternalError, PolicyRefused
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks
from portcullis.policy.decision import Decision
from portcullis.state.interface import MAX_AMOUNT, StateStore

log = logging.getLogger("portcullis.policy")


def make_stage(config: RiskConfig, state: StateStore, clock: Callable[[], float], hooks: Hooks,
               environment: str) -> Stage:
    rate = config.rate

    async def risk(ctx: CallContext, call_next: Handler) -> CallResult:
        decision, route = ctx.decision, ctx.route
        if decision is None or route is None:
            raise InternalError(detail="risk ran before authorize")
        manifest = route.manifest.manifest

        def scored_with(earlier: int) -> dict[str, Any]:
            return score(config, risk=str(manifest.risk), classification_in=manifest.classification.input,
                         classification_out=manifest.classification.output, environment=environment,
                         arguments=ctx.arguments, earlier_calls=earlier)

        try:
            if rate is None:
                scored = scored_with(0)
            else:
                key = f"risk/{identity_key(ctx.principal)}/{route.exposed_name}"
                now = clock()
                counts = True
                if ctx.presents_approval:  # scored without counting first (see the module docstring)
                    scored = scored_with(int(await state.window_total(key, now=now)))
                    counts = not (ctx.approval_poll or _needs_approval(decision, scored))
                if counts:
                    added = await state.window_add(key, 1, window_s=rate.window_s, limit=MAX_AMOUNT, now=now)
                    scored = scored_with(int(added.total_before))
        except Exception as exc:  # fail closed
            hooks.policy_error()
            log.warning("risk rate signal unavailable: the call is denied", extra={"fields": {
                "request_id": ctx.request_id, "error": type(exc).__name__}})
            raise PolicyRefused(dataclasses.replace(
                decision, effect="deny", reasons=(*decision.reasons, "policy_error"),
                rule_ids=(*decision.rule_ids, "risk/policy_error"), denied_by="risk/policy_error"),
                detail="risk signal unavailable") from None
        return await call_next(ctx.evolve(decision=_stricter(decision, scored)))

    return risk


def _needs_approval(decision: Decision, scored: dict[str, Any]) -> bool:
    return decision.effect == "require_approval" or scored["verdict"] in ("one", "two", "deny")


def _stricter(decision: Decision, scored: dict[str, Any]) -> Decision:
    """``decision`` made as strict as the score asks (raises :class:`PolicyRefused` for a deny verdict)."""
    verdict = scored["verdict"]
    if verdict == "deny":
        raise PolicyRefused(dataclasses.replace(decision, effect="deny", risk=scored,
                                                reasons=(*decision.reasons, "risk_too_high"),
                                                rule_ids=(*decision.rule_ids, "risk/deny"), denied_by="risk/deny"),
                            detail="risk too high")
    if verdict in ("one", "two"):
        rule = "risk/two_approvers" if verdict == "two" else "risk/one_approver"
        return dataclasses.replace(decision, effect="require_approval", risk=scored,
                                   reasons=(*decision.reasons, "risk_needs_approval"),
                                   rule_ids=(*decision.rule_ids, rule))
    return dataclasses.replace(decision, risk=scored)
