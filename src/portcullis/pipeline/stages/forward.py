"""Forward: send the call to its upstream and rebuild the result from allowed fields only.

The upstream's ``_meta`` (its serverInfo and anything else it chooses to add) never reaches the
caller (pitfall P1): the result is rebuilt from ``content``, ``structuredContent`` and
``isError``.
"""

from __future__ import annotations

from typing import Any

from portcullis.errors import InternalError, UpstreamFailed
from portcullis.identity.minting import TokenMinter, service_audience
from portcullis.observability.tracing import Tracing
from portcullis.pipeline.context import CallContext, CallResult, Handler
from portcullis.upstream.registry import UpstreamRegistry


def make_forwarder(upstreams: UpstreamRegistry, minter: TokenMinter, *, default_timeout_s: float) -> Handler:
    async def forward(ctx: CallContext) -> CallResult:
        route = ctx.route
        if route is None:
            raise InternalError(detail="forward ran before route")
        if ctx.approval_poll:  # the approve stage never lets a poll through; this is the backstop
            raise InternalError(detail="an approval poll reached the forwarder")
        upstream = upstreams.get(route.service)
        # no token passthrough: a fresh token for this service, this call and this tool only
        approval = ctx.approval
        token = minter.mint(ctx.principal, audience=service_audience(route.service), request_id=ctx.request_id,
                            tool=route.exposed_name, target=route.upstream_name,
                            approval=None if approval is None else {
                                "id": approval.id, "args": approval.arguments_hash,
                                "by": [v.approver.get("user_id") for v in approval.approvals()]})
        trace_headers: dict[str, str] | None = None
        if ctx.upstream_span is not None:
            trace_headers = {}
            Tracing.inject(trace_headers, ctx.upstream_span)
        raw = await upstream.call_tool(route.upstream_name, dict(ctx.arguments),
                                       timeout_s=route.timeout_s or default_timeout_s,
                                       request_id=ctx.request_id, actor_token=token, trace_headers=trace_headers)
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
