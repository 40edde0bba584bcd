"""Audit (write-ahead): the decision record is durable before the call is forwarded; the
outcome record is durable before the caller sees the answer.

This stage sits right before the forwarder, after every check that can refuse the call. If the
decision record cannot be made durable the call is not forwarded (fail closed:
:class:`~portcullis.audit.errors.AuditUnavailable`). If the outcome record cannot be written
after the upstream answered, the caller gets the same error instead of the answer: a result the
client saw always has both records.

The result is encoded here, once (:func:`encode_result`): the outcome record states the size of
those bytes and the transport answers with them (:class:`~portcullis.pipeline.context.EncodedResult`).
A result that cannot be encoded is the upstream's failure: outcome ``upstream_error``, and the
caller gets -31004. Whatever ends the call between the decision and its outcome record without
an exception this stage sees (a cancellation, a failed outcome write), the record stage writes
the missing outcome (:class:`~portcullis.pipeline.context.CallRecord`).
"""

from __future__ import annotations

import time

import orjson

from portcullis.errors import (
    ClientRequestRefused,
    InternalError,
    PortcullisError,
    ResultWithheld,
    RpcError,
    UpstreamFailed,
    UpstreamTimeout,
)
from portcullis.observability.tracing import Tracing
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.client_input import is_input_required
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage, encoded_result
from portcullis.request_state import RequestStateRefused


def make_stage(auditor: CallAuditor, tracing: Tracing | None = None) -> Stage:
    async def audit(ctx: CallContext, call_next: Handler) -> CallResult:
        route, decision = ctx.route, ctx.decision
        if route is None or decision is None:
            raise InternalError(detail="audit ran before route or authorize")
        await auditor.decision(ctx, route, decision)
        record = ctx.record
        started = record.forwarded_ns = time.perf_counter_ns()
        upstream_span_id = None
        try:
            if tracing is not None and ctx.trace is not None:
                # the forward span: the upstream continues from it, and the outcome record names it
                with tracing.stage("forward", ctx.trace) as span:
                    upstream_span_id = record.upstream_span_id = span.span_id_hex
                    result = await call_next(ctx.evolve(upstream_span=span))
            else:
                result = await call_next(ctx)
            encoded = encode_result(result)
        except PortcullisError as exc:
            outcome = outcome_of(exc)
            code = exc.code if isinstance(exc, RpcError) else None
            await auditor.outcome(ctx, route, outcome=outcome, error_code=code, output_bytes=0,
                                  duration_ms=_ms(started), upstream_span_id=upstream_span_id)
            raise
        except Exception:
            await auditor.outcome(ctx, route, outcome="error", error_code=None, output_bytes=0,
                                  duration_ms=_ms(started), upstream_span_id=upstream_span_id)
            raise
        # anything else (a cancellation) leaves the outcome to the record stage, which owes one
        await auditor.outcome(ctx, route, outcome="input_required" if is_input_required(result)
                              else "tool_error" if result.get("isError") else "ok", error_code=None,
                              output_bytes=len(encoded), duration_ms=_ms(started),
                              upstream_span_id=upstream_span_id)
        return encoded_result(result, encoded)

    return audit


def outcome_of(exc: PortcullisError) -> str:
    """The outcome record's name for a call that failed after its decision record."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, ResultWithheld):
        return "withheld"
    if isinstance(exc, ClientRequestRefused):
        return "client_request_refused"  # the upstream asked the caller for something not relayed
    if isinstance(exc, RequestStateRefused):
        return "request_state_refused"  # a retry's requestState did not open for this call and caller
    return "upstream_error"


def encode_result(result: CallResult) -> bytes:
    """The result as the caller will get it, or :class:`UpstreamFailed` if it is not JSON the gateway can
    write (an integer beyond 64 bits, a non-string key, a lone surrogate, a type JSON does not have).
    NaN and the infinities become ``null`` (orjson's rule, and what the caller always got)."""
    try:
        return orjson.dumps(result)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        raise UpstreamFailed(detail="upstream result cannot be encoded as JSON") from None


def _ms(started_ns: int) -> float:
    return round((time.perf_counter_ns() - started_ns) / 1e6, 3)
