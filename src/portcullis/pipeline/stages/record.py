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

from portcullis.audit.errors import AuditUnavailable
from portcullis.catalog import Catalog
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
from portcullis.observability.tracing import Tracing
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.hooks import Hooks

log = logging.getLogger("portcullis.access")


def make_stage(catalog: Catalog, auditor: CallAuditor, hooks: Hooks, tracing: Tracing | None = None) -> Stage:
    async def record(ctx: CallContext, call_next: Handler) -> CallResult:
        outcome, code, detail, effect = "error", None, "", "none"
        span = None
        if tracing is not None:
            headers = ctx.headers or {}
            span = tracing.start_call(headers.get("traceparent"), headers.get("tracestate"),
                                      request_id=ctx.request_id, protocol_version=ctx.protocol_version)
            if span.trace_id_hex is not None:  # a span of our own, or a caller's context to pass on
                ctx = ctx.evolve(trace=span)
        try:
            result = await call_next(ctx)
            outcome, effect = ("tool_error" if result.get("isError") else "ok"), "allow"
            return result
        except (Denied, PolicyRefused, ApprovalRequired) as exc:
            decision = exc.decision
            outcome, code, detail, effect = "denied", exc.code, exc.detail, decision.effect
            route = catalog.lookup(ctx.tool_name)
            if route is not None:
                await auditor.decision(ctx, route, decision, getattr(exc, "approval_presented", None))
            if isinstance(exc, InputRequired):  # held for approval, answered as input_required
                outcome, code = "input_required", None
                return exc.result
            raise
        except PortcullisError as exc:
            outcome = type(exc).__name__
            if isinstance(exc, UpstreamUnavailable | UpstreamTimeout | UpstreamFailed):
                route = catalog.lookup(ctx.tool_name)
                hooks.upstream_error(route.service if route else "unknown", _snake(outcome))
            code = exc.code if isinstance(exc, RpcError) else None
            detail = exc.detail
            presented = getattr(exc, "approval_presented", None)
            decision = getattr(exc, "decision", None)  # an approval that failed: the decision it was for
            route = catalog.lookup(ctx.tool_name)
            if decision is not None and route is not None and not getattr(exc, "audited", False):
                outcome, effect = "denied", decision.effect
                await auditor.decision(ctx, route, decision, presented)
            elif not getattr(exc, "audited", False) and not isinstance(exc, AuditUnavailable):
                reason = "unknown_tool" if exc.message == "Unknown tool" else (
                    "invalid_arguments" if isinstance(exc, InvalidParams) else _snake(type(exc).__name__))
                await auditor.rejected(ctx, reason=reason, error_code=code, presented=presented)
            raise
        except BaseException as exc:  # recorded, then re-raised for the mapper (never swallowed)
            outcome, detail = "crash", type(exc).__name__
            raise
        finally:
            seconds = (time.perf_counter_ns() - ctx.started_ns) / 1e9
            route = catalog.lookup(ctx.tool_name)
            hooks.call_done(route.exposed_name if route else "unknown", effect, outcome, seconds)
            if span is not None:
                if route is not None:
                    span.set_tool(route.exposed_name)
                span.set_decision(effect)
                span.end(outcome, error_type=str(code) if code is not None else (
                    "tool_error" if outcome == "tool_error" else None))
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
                "detail": detail or None,
                "duration_ms": round(seconds * 1e3, 3),
            }})

    return record


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
