"""Record (this release): one structured JSON log line per call, written even on failure.

The line carries the gateway request id, the tool, the outcome and the duration. Logging goes
through a queue to a background thread (see :mod:`portcullis.logs`), so the event loop never
blocks on a write. Later releases put the tamper-evident audit record in this slot.
"""

from __future__ import annotations

import logging
import time

from portcullis.catalog import Catalog
from portcullis.errors import PortcullisError, RpcError
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage

log = logging.getLogger("portcullis.access")


def make_stage(catalog: Catalog) -> Stage:
    async def access_log(ctx: CallContext, call_next: Handler) -> CallResult:
        return await _record(catalog, ctx, call_next)

    return access_log


async def _record(catalog: Catalog, ctx: CallContext, call_next: Handler) -> CallResult:
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
        route = catalog.lookup(ctx.tool_name)  # the context we hold predates the route stage
        log.info("tools/call", extra={"fields": {
            "request_id": ctx.request_id,
            "jsonrpc_id": ctx.jsonrpc_id,
            "protocol_version": ctx.protocol_version,
            "tool": ctx.tool_name[:128],
            **ctx.principal.log_fields(),
            "service": route.service if route else None,
            "outcome": outcome,
            "error_code": code,
            "detail": detail or None,
            "duration_ms": round((time.perf_counter_ns() - ctx.started_ns) / 1e6, 3),
        }})
