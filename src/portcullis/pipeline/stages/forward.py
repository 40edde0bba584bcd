"""Forward: send the call to its upstream and rebuild the result from allowed fields only.

Last look before sending: the tool must still be served. If its service announced a tool-list
change while the call went through the earlier stages, the call waits for the re-check like the
route stage does, and a tool quarantined meanwhile (a re-listing, a health check) is not sent:
``Unknown tool``. A JSON-RPC error or an error result from the upstream asks for a re-listing
soon (at most once a second), since a tool that changed without saying so is a likely cause.

The upstream's ``_meta`` (its serverInfo and anything else it chooses to add) never reaches the
caller (pitfall P1): the result is rebuilt from ``content``, ``structuredContent`` and
``isError``. Its one governance field, ``_meta["io.portcullis/tenant"]``, is kept on the call's
record for the tenant check (:mod:`portcullis.governance.tenancy`).
"""

from __future__ import annotations

from typing import Any

from portcullis.catalog import Catalog
from portcullis.errors import InternalError, InvalidParams, UpstreamFailed
from portcullis.governance.tenancy import meta_tenant
from portcullis.identity.minting import TokenMinter, service_audience
from portcullis.notifications import CURRENT
from portcullis.observability.tracing import Tracing
from portcullis.pipeline.client_input import INPUT_REQUIRED, is_input_required
from portcullis.pipeline.context import CallContext, CallResult, Handler, Refusal
from portcullis.upstream.registry import UpstreamRegistry


def make_forwarder(upstreams: UpstreamRegistry, minter: TokenMinter, catalog: Catalog, *,
                   default_timeout_s: float) -> Handler:
    async def forward(ctx: CallContext) -> CallResult:
        route = ctx.route
        if route is None:
            raise InternalError(detail="forward ran before route")
        if ctx.approval_poll:  # the approve stage never lets a poll through; this is the backstop
            raise InternalError(detail="an approval poll reached the forwarder")
        name = route.exposed_name
        current = await catalog.settle(name) if catalog.unsettled(name) else catalog.lookup(name)
        if current is None or current.manifest is not route.manifest:
            ctx.record.refuse(Refusal.UNKNOWN_TOOL)
            raise InvalidParams("Unknown tool", detail=f"{name!r} stopped being served before it was forwarded")
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
        mrtr = mrtr_keywords(ctx.upstream_input)
        try:
            raw = await upstream.call_tool(route.upstream_name, dict(ctx.arguments),
                                           timeout_s=route.timeout_s or default_timeout_s,
                                           request_id=ctx.request_id, actor_token=token, trace_headers=trace_headers,
                                           **mrtr)
        except UpstreamFailed:
            upstream.refresh_soon()  # refused by the upstream: did the tool change without saying so?
            raise
        finally:
            stream = CURRENT.get()
            if stream is not None:  # the call ended upstream: later notifications are dropped (after_end)
                stream.close()
        if is_input_required(raw):  # screened and sealed by the client_input stage; never passed on as it is
            return {"resultType": INPUT_REQUIRED, "inputRequests": raw.get("inputRequests"),
                    "requestState": raw.get("requestState")}
        ctx.record.result_tenant = meta_tenant(raw)  # the tenant tag, before the upstream's _meta is dropped
        result = rebuild_result(raw)
        if result["isError"]:
            upstream.refresh_soon()
        return result

    return forward


def mrtr_keywords(upstream_input: Any) -> dict[str, Any]:
    """The connection's MRTR keywords from the client_input stage's :class:`UpstreamInput` (None: none)."""
    if upstream_input is None:
        return {}
    return {"input_responses": upstream_input.responses, "request_state": upstream_input.request_state,
            "client_capabilities": upstream_input.capabilities}


def rebuild_result(raw: Any) -> CallResult:
    """Keep only the fields a ``CallToolResult`` may carry to the caller."""
    if not isinstance(raw, dict) or not isinstance(raw.get("content", []), list):
        raise UpstreamFailed(detail="upstream returned a malformed CallToolResult")
    result: CallResult = {"content": raw.get("content", [])}
    if raw.get("structuredContent") is not None:
        result["structuredContent"] = raw["structuredContent"]
    result["isError"] = raw.get("isError") is True
    return result
