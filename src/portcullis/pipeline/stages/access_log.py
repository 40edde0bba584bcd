"""Record (this release): one structured JSON log line per call, written even on failure.

The line carries the gateway request id, the tool, the outcome and the duration. Logging goes
through a queue to a background thread (see :mod:`portcullis.logs`), so the event loop never
blocks on a write. Later releases put the tamper-evident audit record in this slot.
"""

from __future__ import annotations

import logging
import time

from portcullis.errors import PortcullisError, RpcError
from portcullis.pipeline.context import CallContext, CallResult, Handler

log = logging.getLogger("portcullis.access")


async def stage(ctx: CallContext, call_next: Handler) -> CallResult:
    outcome, code, detail = "error", None, ""
    try:
        result = await call_next(ctx)
        outcome = "tool_error" if result.get("isError") else "ok"
        return result
    except PortcullisError as exc:
        outcome = type(exc).__name__
        code = exc.code if isinstance(exc, RpcError) else None
        detail = exc.detail
        raise
    except BaseException as exc:  # recorded, then re-raised for the mapper (never swallowed)
        outcome, detail = "crash", type(exc).__name__
        raise
    finally:
        route = ctx.route
        log.info("tools/call", extra={"fields": {
            "request_id": ctx.request_id,
            "jsonrpc_id": ctx.jsonrpc_id,
            "protocol_version": ctx.protocol_version,
            "tool": route.exposed_name if route else None,
            "service": route.service if route else None,
            "outcome": outcome,
            "error_code": code,
            "detail": detail or None,
            "duration_ms": round((time.perf_counter_ns() - ctx.started_ns) / 1e6, 3),
        }})
