"""Contain: the kill switches (:mod:`portcullis.kill`), checked on every call, read and completion.

Runs right after route and gate: the tool (or resource, prompt) and the caller are known, nothing has
been validated, decided, counted or forwarded. A caller the gate refuses still learns nothing (it gets
"Unknown tool" first); a caller that passes it and is contained gets ``-31050`` with the switch id
(:class:`~portcullis.errors.ContainedByKillSwitch`) — never the operator's reason, which is in the audit
record: a ``tools/call`` leaves a ``decision`` record (effect ``deny``, reason ``kill_switch``, rule id
``kill_switch/<id>``, every argument hashed as for any decision the policy did not make), a read or
completion a ``rejected`` record with reason ``kill_switch:<id>``.

The check is one attribute read and, with no switch set, one truth test; with switches set, at most
seven dict lookups (docs/kill-switches.md gives the measured cost).
"""

from __future__ import annotations

from collections.abc import Callable

from portcullis.errors import ContainedByKillSwitch, InternalError
from portcullis.kill.model import Hit
from portcullis.kill.runtime import KillSwitches
from portcullis.pipeline.context import CallContext, CallResult, Handler, ReadContext, Stage
from portcullis.pipeline.reads import ReadHandler, ReadResult, ReadStage
from portcullis.policy.active import ActivePolicy, as_active
from portcullis.policy.decision import Decision
from portcullis.policy.engine import REDACT_ALL, PolicyEngine

REASON = "kill_switch"


def decision_for(hit: Hit, policy_version: str) -> Decision:
    rule = f"{REASON}/{hit.switch_id}"
    return Decision(effect="deny", reasons=(REASON,), rule_ids=(rule,), obligations=(REDACT_ALL,),
                    policy_version=policy_version, denied_by=rule)


def make_stage(kills: KillSwitches, engine: PolicyEngine | ActivePolicy, clock: Callable[[], float]) -> Stage:
    active = as_active(engine)

    async def contain(ctx: CallContext, call_next: Handler) -> CallResult:
        route = ctx.route
        if route is None:
            raise InternalError(detail="contain ran before route")
        snapshot = kills.snapshot
        if snapshot.keys:
            hit = snapshot.for_call(route.exposed_name, route.service, ctx.principal, clock())
            if hit is not None:
                decision = decision_for(hit, active.for_call().version)  # the version this call's gate pinned
                ctx.record.refused_decision = decision
                raise ContainedByKillSwitch(hit.switch_id, decision, detail=f"kill switch {hit.switch_id} ({hit.kind})")
        return await call_next(ctx)

    return contain


def make_read_stage(kills: KillSwitches, clock: Callable[[], float]) -> ReadStage:
    async def contain(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        snapshot = kills.snapshot
        if snapshot.keys:
            hit = snapshot.for_read(ctx.entry.service, ctx.principal, clock())
            if hit is not None:
                ctx.record.read_refusal = f"{REASON}:{hit.switch_id}"
                raise ContainedByKillSwitch(hit.switch_id, detail=f"kill switch {hit.switch_id} ({hit.kind})")
        return await call_next(ctx)

    return contain
