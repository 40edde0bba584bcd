"""Record: outermost, so every call leaves exactly one log line and its metrics — and a call
refused before the write-ahead audit stage still leaves an audit record.

* A policy denial or approval request (:class:`~portcullis.errors.Denied`,
  :class:`~portcullis.errors.PolicyRefused`, :class:`~portcullis.errors.ApprovalRequired`) is
  audited as a ``decision`` record with its effect, rule ids and policy version.
* A presented approval that is not valid for the call (denied, expired, used, bound elsewhere)
  is audited as a ``decision`` record too, with what was presented and what came of it.
* Anything else refused before forwarding (unknown tool, invalid arguments) is a ``rejected``
  record. Calls that reached the audit stage have their records already.

The refusal is re-raised unchanged after recording; if recording itself fails the caller gets
the audit error instead (fail closed: no unrecorded refusal is reported as handled). Logging goes
through a queue to a background thread (see :mod:`portcullis.logs`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from portcullis.audit.errors import AuditUnavailable
from portcullis.cancellation import caller_gone
from portcullis.config.model import ToolManifest
from portcullis.errors import (
    ApprovalRequired,
    Denied,
    InputRequired,
    InvalidParams,
    PolicyRefused,
    PortcullisError,
    RpcError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.governance.sinks import SinkTable, mark_values_withheld, values_in_logs
from portcullis.observability.tracing import Tracing
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.context import CallContext, CallRecord, CallResult, EncodedResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks

log = logging.getLogger("portcullis.access")
#: How long the record stage waits for an outcome record it writes after the call was cancelled.
LATE_OUTCOME_TIMEOUT_S = 10.0


def make_stage(auditor: CallAuditor, hooks: Hooks, tracing: Tracing | None = None,
               sinks: SinkTable | None = None, observe: Callable[[CallContext, str, int], None] | None = None) -> Stage:
    """``sinks`` (``governance.sinks``; None: the defaults) decides whether the log line of a call of a
    tool may carry its error detail: a tool whose input or output class may not reach ``logs`` gets a
    line of value-free fields only (``"values": "withheld"``). ``observe`` (the anomaly monitor's
    :meth:`~portcullis.monitoring.monitor.Monitor.observe`) sees every finished call: context, outcome
    and the bytes of the result; it is O(1) and never raises."""
    known: dict[int, tuple[ToolManifest, bool]] = {}  # per manifest object: the deployment's, a few hundred

    def in_logs(manifest: ToolManifest) -> bool:
        hit = known.get(id(manifest))
        if hit is None or hit[0] is not manifest:
            hit = known[id(manifest)] = (manifest, values_in_logs(manifest, sinks))
        return hit[1]

    async def record(ctx: CallContext, call_next: Handler) -> CallResult:
        outcome, code, detail, effect = "error", None, "", "none"
        span, output_bytes = None, 0
        trail = ctx.record  # made with the context (one per call); a context run twice gets a fresh one
        if trail.claimed:
            trail = CallRecord()
            ctx = ctx.evolve(record=trail)
        trail.claimed = True
        if tracing is not None:
            headers = ctx.headers or {}
            span = tracing.start_call(headers.get("traceparent"), headers.get("tracestate"),
                                      request_id=ctx.request_id, protocol_version=ctx.protocol_version)
            if span.trace_id_hex is not None:  # a span of our own, or a caller's context to pass on
                ctx = ctx.evolve(trace=span)
        try:
            result = await call_next(ctx)
            outcome, effect = ("tool_error" if result.get("isError") else "ok"), "allow"
            output_bytes = len(result.encoded) if isinstance(result, EncodedResult) else 0
            return result
        except (Denied, PolicyRefused, ApprovalRequired) as exc:
            decision = exc.decision
            outcome, code, detail, effect = "denied", exc.code, exc.detail, decision.effect
            await _missing(auditor, ctx, exc)
            if isinstance(exc, InputRequired):  # held for approval, answered as input_required
                outcome, code = "input_required", None
                return exc.result
            raise
        except PortcullisError as exc:
            outcome = type(exc).__name__
            if isinstance(exc, UpstreamUnavailable | UpstreamTimeout | UpstreamFailed):
                hooks.upstream_error(trail.route.service if trail.route else "unknown", _snake(outcome))
            code = exc.code if isinstance(exc, RpcError) else None
            detail = exc.detail
            if trail.refused_decision is not None and not trail.decision_written:
                outcome, effect = "denied", trail.refused_decision.effect
            await _missing(auditor, ctx, exc)
            raise
        except BaseException as exc:  # recorded, then re-raised for the mapper (never swallowed)
            outcome, detail = "crash", type(exc).__name__
            if isinstance(exc, anyio.get_cancelled_exc_class()) and caller_gone():
                outcome, detail = "cancelled", "the caller went away"  # not a crash: see portcullis.cancellation
            if trail.route is not None and not in_logs(trail.route.manifest.manifest):
                mark_values_withheld(exc)  # the transport logs it without its message or traceback
            await _missing(auditor, ctx, exc)
            raise
        finally:
            seconds = (time.perf_counter_ns() - ctx.started_ns) / 1e9
            route = trail.route
            hooks.call_done(route.exposed_name if route else "unknown", effect, outcome, seconds)
            if observe is not None:
                observe(ctx, outcome, output_bytes)
            if span is not None:
                if route is not None:
                    span.set_tool(route.exposed_name)
                span.set_decision(effect)
                span.end(outcome, error_type=str(code) if code is not None else (
                    "tool_error" if outcome == "tool_error" else None))
            withheld = route is not None and not in_logs(route.manifest.manifest)
            log.info("tools/call", extra={"fields": {
                "request_id": ctx.request_id,
                "jsonrpc_id": ctx.jsonrpc_id,
                "protocol_version": ctx.protocol_version,
                "tool": ctx.tool_name[:128],
                **ctx.principal.log_fields(),
                "service": route.service if route else None,
                "decision": effect,
                "outcome": outcome,
                "error_code": code,
                "detail": None if withheld else (detail or None),
                "duration_ms": round(seconds * 1e3, 3),
                **({"values": "withheld"} if withheld else {}),
            }})

    return record


async def _missing(auditor: CallAuditor, ctx: CallContext, exc: BaseException) -> None:
    """Write what the trail still lacks for a call that ended with ``exc``, judged from its
    :class:`CallRecord` alone: the outcome owed to a written decision (``cancelled`` or ``error``),
    else the decision a refusal was for (a policy refusal, a failed approval), else a ``rejected``
    record. Never a second record of a kind the call has."""
    trail = ctx.record
    route = trail.route
    if trail.decision_written:
        if not trail.outcome_written and route is not None:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            started = trail.forwarded_ns or ctx.started_ns
            with anyio.CancelScope(shield=True) as scope:  # bounded: a stuck trail does not hold the task
                scope.deadline = anyio.current_time() + LATE_OUTCOME_TIMEOUT_S
                await auditor.outcome(ctx, route, outcome="cancelled" if cancelled else "error",
                                      error_code=exc.code if isinstance(exc, RpcError) else None, output_bytes=0,
                                      duration_ms=round((time.perf_counter_ns() - started) / 1e6, 3),
                                      upstream_span_id=trail.upstream_span_id,
                                      cancelled_by="caller" if cancelled and caller_gone() else None)
        return
    decision = exc.decision if isinstance(exc, Denied | PolicyRefused | ApprovalRequired) else trail.refused_decision
    if decision is not None:
        if route is not None:
            await auditor.decision(ctx, route, decision, trail.presented)
        return
    if isinstance(exc, PortcullisError) and not isinstance(exc, AuditUnavailable):
        reason = trail.refusal.value if trail.refusal is not None else (
            "invalid_arguments" if isinstance(exc, InvalidParams) else _snake(type(exc).__name__))
        await auditor.rejected(ctx, reason=reason, error_code=exc.code if isinstance(exc, RpcError) else None,
                               presented=trail.presented)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
