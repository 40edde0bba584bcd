"""Forward: send the call to its upstream and rebuild the result from allowed fields only.

The upstream's ``_meta`` (its serverInfo and anything else it chooses to add) never reaches the
caller (pitfall P1): the result is rebuilt from ``content``, ``structuredContent`` and
``isError``.
"""

from __future__ import annotations

from typing import Any

from portcullis.errors import InternalError, UpstreamFailed
from portcullis.pipeline.context import CallContext, CallResult, Handler
from portcullis.upstream.registry import UpstreamRegistry


def make_forwarder(upstreams: UpstreamRegistry, *, default_timeout_s: float) -> Handler:
    async def forward(ctx: CallContext) -> CallResult:
        if ctx.route is None:
            raise InternalError(detail="forward ran before route")
        upstream = upstreams.get(ctx.route.service)
        timeout_s = ctx.route.timeout_s or default_timeout_s
        raw = await upstream.call_tool(ctx.route.upstream_name, dict(ctx.arguments), timeout_s=timeout_s,
                                       request_id=ctx.request_id)
        return rebuild_result(raw)

    return forward


def rebuild_result(raw: Any) -> CallResult:
    """Keep only the fields a ``CallToolResult`` may carry to the caller."""
    if not isinstance(raw, dict) or not isinstance(raw.get("content", []), list):
        raise UpstreamFailed(detail="upstream returned a malformed CallToolResult")
    result: CallResult = {"content": raw.get("content", [])}
    if raw.get("structuredContent") is not None:
        result["structuredContent"] = raw["structuredContent"]
    result["isError"] = raw.get("isError") is True
    return result
