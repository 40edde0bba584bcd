"""The request pipeline: the one place where the order of stages is declared.

Request stages run top to bottom; anything they do after ``await call_next(ctx)`` runs in
reverse order on the way back. The last element is the forwarder. The transport stage
(bounded body, Host/Origin, JSON-RPC parsing, protocol era, authentication) runs before this
chain, in :mod:`portcullis.transport.app`, because it decides whether there is a call at all.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from portcullis.approvals.service import ApprovalService
from portcullis.catalog import Catalog
from portcullis.config.model import GovernanceConfig, RiskConfig
from portcullis.content.output_filter import FilterPolicy
from portcullis.identity.minting import TokenMinter
from portcullis.kill.runtime import KillSwitches
from portcullis.observability.tracing import Tracing
from portcullis.pipeline import client_input, completion, read_checks, reads
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.client_input import ClientInputRelay
from portcullis.pipeline.context import CallContext, CallResult, Handler, ReadContext, Stage
from portcullis.pipeline.hooks import Hooks, NullHooks
from portcullis.pipeline.reads import ReadHandler, ReadResult, ReadStage
from portcullis.pipeline.stages import (
    approve,
    audit,
    authorize,
    cache,
    contain,
    content,
    forward,
    govern,
    limits,
    record,
    risk,
    route,
    validate,
)
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.limits import LimitRule
from portcullis.state.interface import StateStore
from portcullis.state.response_cache import ResponseCacheStore
from portcullis.surface import SurfaceCatalog
from portcullis.upstream.registry import UpstreamRegistry


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineParts:
    """Everything the stages need, built once by the gateway."""

    catalog: Catalog
    upstreams: UpstreamRegistry
    minter: TokenMinter
    engine: PolicyEngine | ActivePolicy  # the gateway's holder: swapped whole on a policy reload
    auditor: CallAuditor
    state: StateStore
    limit_rules: Sequence[LimitRule] = ()
    hooks: Hooks = field(default_factory=NullHooks)
    tracing: Tracing | None = None  # None: no spans, and no trace context passed to upstreams
    approvals: ApprovalService | None = None  # None: require_approval calls never run
    risk: RiskConfig | None = None  # None: no risk scoring
    content: content.OutputFilter | None = None  # None: results pass unfiltered (content.enabled: false)
    governance: GovernanceConfig = field(default_factory=GovernanceConfig)  # toxic flow, sinks (on by default)
    # stages run innermost, right before the forwarder, inside the governance hook: the content filter's
    # place; tests put a double of the filter here (it sets CallRecord.content)
    inner_stages: Sequence[tuple[str, Stage]] = ()
    environment: str = "production"
    clock: Callable[[], float] = time.time
    default_timeout_s: float = 30.0
    response_cache: ResponseCacheStore | None = None  # None: no response cache stage
    cache_classifications: tuple[str, ...] = ("Public", "Internal")  # output classes the cache may hold
    # MRTR: screens an upstream's input_required and seals its requestState; the default relays no kind
    client_input: ClientInputRelay = field(default_factory=client_input.deny_all)
    kills: KillSwitches | None = None  # None: no kill switch stage (tests of other stages)
    # the anomaly monitor's O(1) observation of every finished call (portcullis.monitoring); None: not watched
    observe: Callable[[CallContext, str, int], None] | None = None


def build_pipeline(parts: PipelineParts) -> Handler:
    """Assemble the ``tools/call`` handler. Each line says why it sits where it does."""
    p = parts
    limit_check = limits.make_check(p.limit_rules, p.state, p.clock, p.hooks)
    stages: Sequence[tuple[str, Stage]] = (
        # record: outermost, so that every call gets one log line and its metrics, and a call
        # refused before the audit stage (denied, unknown, invalid) still gets an audit record.
        ("record", record.make_stage(p.auditor, p.hooks, p.tracing, p.governance.sinks, p.observe)),
        # route: before everything that needs the manifest; unknown, unpinned and quarantined
        # tools all fail here identically ("Unknown tool").
        ("route", route.make_stage(p.catalog)),
        # gate: before validate, so a caller the policy can never admit learns nothing about the
        # tool's schema; it gets the same "Unknown tool" as for a tool that does not exist.
        ("gate", authorize.make_gate(p.engine, p.clock)),
        # contain: right after route and gate (tool, service and caller known; a caller the gate refuses learns
        # nothing of a switch), before validate and policy: a contained call is decided, counted, held or sent never.
        *((("contain", contain.make_stage(p.kills, p.engine, p.clock)),) if p.kills is not None else ()),
        # validate: before authorize, so policy rules see arguments of the declared types.
        ("validate", validate.stage),
        # authorize: native policy + Rego on the arguments; deny and require_approval stop here.
        ("authorize", authorize.make_stage(p.engine, p.clock, p.hooks, p.limit_rules, p.state)),
        # risk: after authorize (a denied call is not scored), before limits and approve; it
        # can only make the decision stricter (approval, two approvers, deny).
        *((("risk", risk.make_stage(p.risk, p.state, p.clock, p.hooks, p.environment)),) if p.risk else ()),
        # govern_check: after authorize and risk (a refused call is not looked at), before limits and
        # approve, so a toxic-flow "needs approval" is counted and held like any held call; refuses a
        # result class the caller may not receive before anything is forwarded.
        ("govern_check", govern.make_check(p.governance, p.state, p.clock, p.hooks, p.environment)),
        # limits: after authorize, so a call the policy refuses consumes no counter; before
        # approve, so no human approves a call that would then be throttled.
        ("limits", limits.make_stage(limit_check)),
        # approve: a require_approval call proposes an approval and stops, or redeems one.
        ("approve", approve.make_stage(p.approvals, limit_check, p.governance.sinks)),
        # audit: last before forward: the decision record is durable before anything is sent,
        # and the outcome record before the caller sees the answer.
        ("audit", audit.make_stage(p.auditor, p.tracing)),
        # cache: after audit, so every check above ran and a hit gets its decision and outcome records
        # (a hit is only a cheaper forward); above govern and the response filter ("content"), so
        # what it stores and serves is the filtered result, and nothing governance withheld.
        *((("cache", cache.make_stage(p.response_cache, p.clock, p.cache_classifications)),)
          if p.response_cache is not None else ()),
        # govern: response side, inside audit (the outcome record says what it withheld or tainted) and
        # outside the content filter (it reads the filter's report on the way back); with the response
        # cache the order is audit -> cache -> govern -> content -> forward, so a withheld result is never
        # cached (the cache stores nothing the filter flagged, so a hit never needs to taint).
        ("govern", govern.make_hook(p.governance, p.state, p.clock)),
        # content: between audit and the forwarder, so on the way back the result is filtered before
        # the audit stage encodes it: no record, log, approval view or cache holds unfiltered output.
        *((("content", content.make_stage(p.content, p.hooks)),) if p.content is not None else ()),
        *p.inner_stages,
        # client_input: right around the forwarder, after every check above ran again for a retry (a new
        # request: authentication, gate, policy, limits, the decision record), so a sealed requestState is
        # opened only for a call that may run; inside content, which passes the input requests it screened with
        # the same filter policy (the upstream's state never reaches the caller, only the gateway's envelope).
        ("client_input", client_input.make_stage(p.client_input, functools.partial(_tool_policy, p.content))),
    )
    # forward: the terminal handler, over the pooled upstream connection.
    forwarder = forward.make_forwarder(p.upstreams, p.minter, p.catalog, default_timeout_s=p.default_timeout_s)
    timing = getattr(p.hooks, "stage_done", None)
    spans = p.tracing if p.tracing is not None and p.tracing.enabled else None
    if timing is None and spans is None:
        return compose([stage for _, stage in stages], forwarder)
    return compose_timed(stages, ("forward", forwarder), timing or _ignore, spans)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadParts:
    """What the read pipeline needs: the surface catalog and a policy engine over its manifests."""

    surface: SurfaceCatalog
    engine: PolicyEngine | ActivePolicy  # the gateway's holder of the surface engine (swapped on a reload)


def build_read_pipeline(parts: PipelineParts, reads_parts: ReadParts) -> ReadHandler:
    """Assemble the ``resources/read`` and ``prompts/get`` handler (docs/mcp-surface.md says which
    ``tools/call`` stages apply and why). Each line says why it sits where it does."""
    p, r = parts, reads_parts
    stages: Sequence[ReadStage] = (
        # record: outermost, so that every read gets one log line, and one refused before a decision
        # (unknown, gate, unpinned, quarantined) still gets a rejected record.
        reads.make_record(p.auditor),
        # route: the manifest admitting the URI (prefix, then exact URI or template) or naming the
        # prompt; nothing else is ever forwarded.
        reads.make_route(r.surface),
        # gate: before the pin check, so a caller that may never read it learns nothing of its pin
        # state, and gets the same answer as for an unknown resource or prompt.
        reads.make_gate(r.engine, p.clock),
        # contain: the kill switches of the service and the caller, as for tools/call: after the gate, before
        # anything else is checked or sent.
        *((contain.make_read_stage(p.kills, p.clock),) if p.kills is not None else ()),
        # pin_check: the in-memory verdict of the background re-listing (O(1), no upstream request).
        reads.make_pin_check(r.surface),
        # authorize: the native policy and the Rego modules (the tools/call input plus the read's resource or
        # prompt, docs/rego.md) on the URI or prompt arguments; a Rego error is a deny. require_approval is
        # refused (reads/no_approval_flow): approvals bind a tool call's arguments, and no read flow exists.
        # No validate stage: a read has no argument schema. No risk: its scores are about side effects and
        # amounts, a read has neither. No govern_check: the toxic-flow rule is about egress after sensitive
        # reads, and a read is not egress; the Restricted-sink rule is the gate (a Restricted entry is hidden
        # from callers outside the environment). See docs/mcp-surface.md.
        reads.make_authorize(r.engine, p.clock, p.auditor),
        # limits: after authorize, so a read the policy refuses consumes no counter; the rules listing
        # resources/read or prompts/get (authorization.limits), refused like a limited tools/call.
        read_checks.make_limits(p.limit_rules, p.state, p.clock, p.hooks, p.auditor),
        # audit: last before forward: the decision record is durable before anything is sent, and
        # the outcome record before the caller sees the answer.
        reads.make_audit(p.auditor),
        # content: between audit and the forwarder, so the records and the caller only ever see
        # filtered output (the filter is mandatory here: content.enabled: false is the only way off).
        reads.make_content(p.content),
        # client_input: around the forwarder, as for tools/call: a retry's sealed requestState is opened after
        # every check above; an upstream's input requests are screened (inside content, which passes them).
        client_input.make_read_stage(p.client_input, functools.partial(_read_policy, p.content)),
    )
    handler: ReadHandler = reads.make_forwarder(p.upstreams, p.minter, r.surface, p.default_timeout_s)
    for stage in reversed(stages):
        handler = functools.partial(_invoke_read, stage, handler)
    return handler


def _tool_policy(output_filter: content.OutputFilter | None, ctx: CallContext) -> FilterPolicy | None:
    route = ctx.route
    if output_filter is None or route is None:
        return None  # no filter: input requests carrying text are refused (client_requests: no_filter)
    return output_filter.policy(route.manifest.manifest, route.exposed_name, ctx.principal)


def _read_policy(output_filter: content.OutputFilter | None, ctx: ReadContext) -> FilterPolicy | None:
    if output_filter is None:
        return None
    return output_filter.policy(ctx.entry.loaded.manifest, ctx.entry.exposed, ctx.principal)


def build_completion_pipeline(parts: PipelineParts, reads_parts: ReadParts,
                              counted: Callable[[str], None] | None = None) -> ReadHandler:
    """Assemble the ``completion/complete`` handler (portcullis.pipeline.completion; docs/mcp-surface.md says
    which ``tools/call`` stages apply and why). Each line says why it sits where it does."""
    p, r = parts, reads_parts
    stages: Sequence[ReadStage] = (
        # record: outermost, so that every completion gets its log line and metric however it ends. No audit
        # record: it runs nothing and reads no resource (the read or get it leads to is audited in full).
        completion.make_record(counted),
        # route: the exposed prompt or resource template the ref names; nothing else is ever forwarded.
        completion.make_route(r.surface),
        # gate: the read gate of that prompt or template, before anything else looks at the request, so a
        # caller that may not see it gets the unknown answer and costs no upstream request.
        reads.make_gate(r.engine, p.clock),
        # contain: a contained service or caller gets no suggestions either (after the gate, as for reads).
        *((contain.make_read_stage(p.kills, p.clock),) if p.kills is not None else ()),
        # arguments: after the gate (the declared arguments are only the business of who may see them).
        completion.make_arguments(),
        # pin_check: the same check at use as a read or get; a changed definition is refused like unknown.
        # No authorize, limits, approve, risk or govern stages: a completion carries no value a rule decides
        # on and returns only suggestions (bounded and filtered); the get or read that uses them passes them.
        reads.make_pin_check(r.surface),
        # content: directly around the forwarder, so the caller and the log line only see filtered values.
        completion.make_content(p.content),
    )
    handler: ReadHandler = completion.make_forwarder(p.upstreams, p.minter, r.surface, p.default_timeout_s)
    for stage in reversed(stages):
        handler = functools.partial(_invoke_read, stage, handler)
    return handler


async def _invoke_read(stage: ReadStage, call_next: ReadHandler, ctx: ReadContext) -> ReadResult:
    return await stage(ctx, call_next)


def _ignore(stage: str, seconds: float) -> None:
    pass


def compose(stages: Sequence[Stage], terminal: Handler) -> Handler:
    """Wrap ``terminal`` in ``stages`` so that ``stages[0]`` runs first."""
    handler = terminal
    for stage in reversed(stages):
        handler = functools.partial(_invoke, stage, handler)
    return handler


async def _invoke(stage: Stage, call_next: Handler, ctx: CallContext) -> CallResult:
    return await stage(ctx, call_next)


def compose_timed(stages: Sequence[tuple[str, Stage]], terminal: tuple[str, Handler],
                  report: Callable[[str, float], None], tracing: Tracing | None = None) -> Handler:
    """:func:`compose`, reporting each stage's own time (``report(name, seconds)``) and, with
    ``tracing``, running each stage after ``record`` in a span of its own (a child of the call's).

    A stage's own time excludes the stages it calls: each handler measures itself and hands the
    time spent further in back to its caller through ``inner``. About 0.5 µs per stage. The
    forward span is the audit stage's (it must name it in the outcome record).
    """
    name, handler_fn = terminal

    async def timed_terminal(ctx: CallContext, acc: list[int]) -> CallResult:
        start = time.perf_counter_ns()
        try:
            return await handler_fn(ctx)
        finally:
            spent = time.perf_counter_ns() - start
            acc[0] += spent
            report(name, spent / 1e9)

    handler: Callable[..., Awaitable[CallResult]] = timed_terminal
    for stage_name, stage in reversed(stages):
        handler = functools.partial(_invoke_timed, stage_name, stage, handler, report)
        if tracing is not None and stage_name != "record":  # record opens the call's span itself
            handler = functools.partial(_invoke_traced, tracing, stage_name, handler)

    async def entry(ctx: CallContext) -> CallResult:
        return await handler(ctx, [0])

    return entry


async def _invoke_timed(name: str, stage: Stage, call_next: Callable[..., Awaitable[CallResult]],
                        report: Callable[[str, float], None], ctx: CallContext, acc: list[int]) -> CallResult:
    inner = [0]  # time spent in the stages this one calls
    start = time.perf_counter_ns()
    try:
        return await stage(ctx, functools.partial(call_next, acc=inner))
    finally:
        spent = time.perf_counter_ns() - start
        acc[0] += spent
        report(name, max(spent - inner[0], 0) / 1e9)


async def _invoke_traced(tracing: Tracing, name: str, call: Callable[..., Awaitable[CallResult]], ctx: CallContext,
                         acc: list[int]) -> CallResult:
    if ctx.trace is None:
        return await call(ctx, acc=acc)
    with tracing.stage(name, ctx.trace):
        return await call(ctx, acc=acc)
