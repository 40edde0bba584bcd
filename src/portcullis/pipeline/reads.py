"""The read pipeline: ``resources/read`` and ``prompts/get``, stage by stage.

Its order is declared in :func:`portcullis.pipeline.chain.build_read_pipeline`, next to the
``tools/call`` chain, with a reason per line; docs/mcp-surface.md says which ``tools/call`` stages
apply to these methods and why the others do not. The stages here are the read counterparts of
the tool stages: they share the policy engine's rules (a separate engine over the resource and
prompt manifests), the audit writer (:class:`~portcullis.pipeline.auditing.CallAuditor`) and the
output filter (:class:`~portcullis.pipeline.stages.content.OutputFilter`).

Refusals: a URI no manifest admits, a resource whose definition is unpinned or quarantined, and a
resource the caller may not read (the gate, or a deny from its policy) all raise the same
:func:`not_found` error, so a caller cannot tell them apart. A prompt it may not see gets
:func:`unknown_prompt`, like an unknown one; a deny on a prompt it can see is
:class:`~portcullis.errors.PolicyRefused`, as for tools.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson

from portcullis.errors import (
    InternalError,
    InvalidParams,
    PolicyRefused,
    PortcullisError,
    ResultWithheld,
    RpcError,
    UpstreamFailed,
)
from portcullis.identity.minting import MAX_CLAIM_CHARS, TokenMinter, service_audience
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.client_input import ScreenedInput, is_input_required
from portcullis.pipeline.context import ReadContext
from portcullis.pipeline.read_checks import rego_extra
from portcullis.pipeline.stages.audit import outcome_of
from portcullis.pipeline.stages.content import THREAD_ABOVE_CHARS, OutputFilter
from portcullis.pipeline.stages.forward import mrtr_keywords
from portcullis.policy.active import ActivePolicy, as_active
from portcullis.policy.engine import PolicyEngine
from portcullis.surface import SurfaceCatalog
from portcullis.upstream.registry import UpstreamRegistry

log = logging.getLogger("portcullis.calls")
ReadResult = dict[str, Any]
ReadHandler = Callable[[ReadContext], Awaitable[ReadResult]]
ReadStage = Callable[[ReadContext, ReadHandler], Awaitable[ReadResult]]


def not_found(uri: str) -> InvalidParams:
    """The one answer for a resource that does not exist, is not served, or the caller may not read:
    -32602 "Resource not found" with the URI the caller sent (2026-07-28's code for it)."""
    return InvalidParams("Resource not found", data={"uri": uri})


def unknown_prompt() -> InvalidParams:
    return InvalidParams("Unknown prompt")


def refused_like_unknown(ctx: ReadContext) -> InvalidParams:
    """:func:`not_found` for a resource read (or a completion of a resource template), else
    :func:`unknown_prompt`: what every refusal before a decision answers."""
    resource = ctx.method == "resources/read" or (ctx.method == "completion/complete"
                                                  and ctx.arguments.get("ref") == "ref/resource")
    return not_found(ctx.target) if resource else unknown_prompt()


_refused = refused_like_unknown


def make_record(auditor: CallAuditor) -> ReadStage:
    """Outermost: one log line per read, and a ``rejected`` record for a read refused before any
    decision; a written decision whose outcome no inner stage wrote gets an ``error`` outcome."""
    async def record(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        outcome = "ok"
        try:
            return await call_next(ctx)
        except BaseException as exc:
            outcome = type(exc).__name__
            code = exc.code if isinstance(exc, RpcError) else None
            if not ctx.record.decision_written and isinstance(exc, PortcullisError):
                with anyio.CancelScope(shield=True):
                    reason = ctx.record.read_refusal or ("unknown" if ctx.record.read_entry is None
                                                         else "upstream_error")
                    await auditor.read_rejected(ctx, reason=reason, error_code=code)
            elif ctx.record.decision_written and not ctx.record.outcome_written \
                    and ctx.record.refused_decision is None:
                with anyio.CancelScope(shield=True):
                    await auditor.read_outcome(ctx, outcome="error", error_code=code, output_bytes=0,
                                               duration_ms=_ms(ctx.started_ns))
            raise
        finally:
            log.info("read", extra={"fields": {
                "request_id": ctx.request_id, "method": ctx.method, "outcome": outcome,
                "name": getattr(ctx.record.read_entry, "exposed", None), "duration_ms": _ms(ctx.started_ns)}})

    return record


def make_route(catalog: SurfaceCatalog) -> ReadStage:
    """The manifest that admits the URI or names the prompt; none: refused like an unknown one."""
    async def route(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        if ctx.method == "resources/read":
            found = catalog.resolve_uri(ctx.target)
            if found is None:
                raise not_found(ctx.target)
            entry, upstream = found
        else:
            prompt = catalog.prompt(ctx.target)
            if prompt is None:
                raise unknown_prompt()
            entry, upstream = prompt, prompt.upstream
        ctx.record.read_entry = entry
        return await call_next(ctx.evolve(entry=entry, upstream_target=upstream))

    return route


def make_gate(engine: PolicyEngine | ActivePolicy, clock: Callable[[], float]) -> ReadStage:
    """A caller whose policy can never admit it is refused like an unknown resource or prompt, before
    the upstream is asked anything (the record stage writes a ``rejected`` record, reason ``gate``).
    The active engine is read once here and pinned for the read (policy/active.py)."""
    active = as_active(engine)

    async def gate(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        with active.pinned() as pinned:
            if not pinned.may_call(ctx.entry.exposed, ctx.principal, now=datetime.fromtimestamp(clock(), UTC)):
                ctx.record.read_refusal = "gate"
                raise _refused(ctx)
            return await call_next(ctx)

    return gate


def make_pin_check(catalog: SurfaceCatalog) -> ReadStage:
    """The entry's in-memory pin verdict (O(1), no upstream request; kept current off the request path by
    :class:`portcullis.surface_watch.SurfaceWatch`): unpinned, quarantined or unlisted is refused like
    unknown (the operator sees the state in the log). While the service announced a list change not yet
    re-checked, the read waits for that verdict (bounded), as a tool call does."""
    async def pin_check(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        state = catalog.verdict(ctx.entry)
        if state == "verifying":
            state = await catalog.settled_verdict(ctx.entry)
        if state != "serving":
            ctx.record.read_refusal = state
            raise _refused(ctx)
        return await call_next(ctx)

    return pin_check


def make_authorize(engine: PolicyEngine | ActivePolicy, clock: Callable[[], float],
                   auditor: CallAuditor) -> ReadStage:
    """The native policy and the Rego modules on the arguments (``{"uri": …}`` for a read, the prompt's
    arguments for a get), with the read's own Rego input (:func:`.read_checks.rego_extra`); a Rego error is a
    deny (``rego/policy_error``). ``require_approval`` is refused with rule ``reads/no_approval_flow``
    (``-31020``): approvals bind a tool call's arguments, and a read has no flow of its own. A refused decision
    is recorded (a decision record, no outcome: nothing was forwarded). A denied resource read looks like an
    unknown resource; a denied prompt the caller can see is PolicyRefused, as for tools."""
    active = as_active(engine)

    async def authorize(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        arguments = {"uri": ctx.upstream_target} if ctx.method == "resources/read" else ctx.arguments
        decision = await active.for_call().decide_async(ctx.entry.exposed, ctx.principal, arguments,
                                             now=datetime.fromtimestamp(clock(), UTC), method=ctx.method,
                                             extra=rego_extra(ctx))
        if decision.effect == "require_approval":
            decision = dataclasses.replace(
                decision, effect="deny", reasons=(*decision.reasons, NO_APPROVAL_FLOW),
                rule_ids=(*decision.rule_ids, NO_APPROVAL_FLOW_RULE), denied_by=NO_APPROVAL_FLOW_RULE)
        ctx = ctx.evolve(decision=decision)
        if decision.effect != "allow":
            ctx.record.refused_decision = decision
            await auditor.read_decision(ctx, decision)
            if decision.denied_by == NO_APPROVAL_FLOW_RULE:
                raise PolicyRefused(decision, detail="reads have no approval flow")
            if ctx.method == "resources/read":
                raise _refused(ctx)
            raise PolicyRefused(decision, detail="policy refused the prompt")
        return await call_next(ctx)

    return authorize


NO_APPROVAL_FLOW = "approval_not_available"  # a policy asked a read for an approval: refused, never allowed
NO_APPROVAL_FLOW_RULE = "reads/no_approval_flow"


def make_audit(auditor: CallAuditor) -> ReadStage:
    """The decision record durable before anything is forwarded, the outcome record before the caller
    sees the answer (which is encoded here, once, to measure it)."""
    async def audit(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        if ctx.decision is None:
            raise InternalError(detail="read audit ran before authorize")
        await auditor.read_decision(ctx, ctx.decision)
        started = time.perf_counter_ns()
        try:
            result = await call_next(ctx)
            size = len(orjson.dumps(result))
        except PortcullisError as exc:
            await auditor.read_outcome(ctx, outcome=outcome_of(exc), error_code=exc.code if isinstance(exc, RpcError)
                                       else None, output_bytes=0, duration_ms=_ms(started))
            raise
        except TypeError:  # orjson: not JSON the gateway can write
            await auditor.read_outcome(ctx, outcome="upstream_error", error_code=UpstreamFailed.code,
                                       output_bytes=0, duration_ms=_ms(started))
            raise UpstreamFailed(detail="upstream result cannot be encoded as JSON") from None
        await auditor.read_outcome(ctx, outcome="input_required" if is_input_required(result) else "ok",
                                   error_code=None, output_bytes=size, duration_ms=_ms(started))
        return result

    return audit


def make_content(output_filter: OutputFilter | None) -> ReadStage:
    """The output filter on the whole result, under the channel's own name; a withheld result is -31030."""
    from portcullis.content.output_filter import filter_message

    async def content(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        result = await call_next(ctx)
        if output_filter is None or isinstance(result, ScreenedInput):  # input requests: screened already
            return result
        entry = ctx.entry
        policy = output_filter.policy(entry.loaded.manifest, entry.exposed, ctx.principal)
        if len(orjson.dumps(result)) > THREAD_ABOVE_CHARS:
            outcome = await anyio.to_thread.run_sync(filter_message, result, ctx.method, policy)
        else:
            outcome = filter_message(result, ctx.method, policy)
        ctx.record.content = outcome.report
        if outcome.blocked:
            reason = outcome.report.blocked or "policy"
            raise ResultWithheld(reason, detail=f"output filter withheld the result: {reason}")
        value: ReadResult = outcome.value
        return value

    return content


def make_forwarder(upstreams: UpstreamRegistry, minter: TokenMinter, catalog: SurfaceCatalog,
                   default_timeout_s: float) -> ReadHandler:
    """Reads or gets over the service's connection with a token minted for this read only (never the
    caller's); every ``uri`` in a read's contents gets the service's prefix, so what the caller sees can be
    read back through the gateway (and names no other service)."""
    async def forward(ctx: ReadContext) -> ReadResult:
        entry = ctx.entry
        conn, timeout, token = upstream_leg(ctx, upstreams, minter, catalog, default_timeout_s)
        mrtr = mrtr_keywords(ctx.upstream_input)
        if ctx.method == "resources/read":
            result = await conn.read_resource(ctx.upstream_target, timeout_s=timeout, actor_token=token, **mrtr)
            if is_input_required(result):  # screened and sealed by the client_input stage
                return {key: result.get(key) for key in ("resultType", "inputRequests", "requestState")}
            contents = result.get("contents")
            if not isinstance(contents, list):
                raise UpstreamFailed(detail="malformed resources/read result")
            result = {"contents": [_prefixed(item, entry.prefix) for item in contents if isinstance(item, dict)]}
        else:
            result = await conn.get_prompt(ctx.upstream_target, ctx.arguments, timeout_s=timeout, actor_token=token,
                                           **mrtr)
            if is_input_required(result):
                return {key: result.get(key) for key in ("resultType", "inputRequests", "requestState")}
            messages = result.get("messages")
            if not isinstance(messages, list):
                raise UpstreamFailed(detail="malformed prompts/get result")
            result = {key: result[key] for key in ("description", "messages") if key in result}
        return result  # the upstream's _meta and any other member are dropped

    return forward


def upstream_leg(ctx: ReadContext, upstreams: UpstreamRegistry, minter: TokenMinter, catalog: SurfaceCatalog,
                 default_timeout_s: float) -> tuple[Any, float, str]:
    """(the service's connection, its timeout, a token minted for this request only) for ``ctx.entry``."""
    entry = ctx.entry
    token = minter.mint(ctx.principal, audience=service_audience(entry.service), request_id=ctx.request_id,
                        tool=entry.exposed[:MAX_CLAIM_CHARS], target=ctx.upstream_target[:MAX_CLAIM_CHARS])
    return (upstreams.get(entry.service).connection(), catalog.timeouts.get(entry.service) or default_timeout_s,
            token)


def _prefixed(item: dict[str, Any], prefix: str) -> dict[str, Any]:
    uri = item.get("uri")
    return {**item, "uri": prefix + uri} if isinstance(uri, str) else item


def _ms(started_ns: int) -> float:
    return round((time.perf_counter_ns() - started_ns) / 1e6, 3)
