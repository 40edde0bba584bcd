"""The frozen call context that flows through the pipeline.

A stage never mutates a context: it makes a new one with :meth:`CallContext.evolve` and hands
that to the next stage. What a stage adds (the route today; the principal and the decision in
later releases) is a new field here, so every stage sees the same, typed picture of the call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portcullis.catalog import Route
    from portcullis.identity.principal import Principal
    from portcullis.policy.decision import Decision


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything known about one ``tools/call`` at the point a stage sees it."""

    request_id: str  # the gateway's own id for this call (logs, audit, upstream correlation)
    jsonrpc_id: Any  # the caller's JSON-RPC id; never used for correlation upstream (P11)
    protocol_version: str
    tool_name: str  # exactly as the caller sent it
    arguments: Mapping[str, Any]
    started_ns: int
    principal: Principal  # from verified credentials only (the transport's authenticate step)
    route: Route | None = None  # set by the route stage
    decision: Decision | None = None  # set by the authorize stage (allow, possibly with a shadow)
    trace: Any = None  # the call's tracing span handle (observability), or None when tracing is off
    headers: Mapping[str, str] | None = None  # lower-cased request headers (traceparent, Mcp-Param-*)
    upstream_span: Any = None  # the span the upstream continues from (set by the audit stage)
    approval_id: str | None = None  # params._meta["io.portcullis/approval-id"]: resuming an approved call
    approval_poll: bool = False  # params._meta["io.portcullis/approval-poll"]: report the status, run nothing
    justification: str = ""  # params._meta["io.portcullis/justification"]: why the agent asks (for approvers)
    approval: Any = None  # the approval this call redeemed (set by the approve stage)
    # a 2026-07-28 caller that handles URL-mode elicitation: {"request_state", "responses"} of this try
    input_state: Mapping[str, Any] | None = None
    # what the approve stage made of a presented approval ({"id", "via", "poll", "result"}), for the records
    approval_presented: Mapping[str, Any] | None = None

    @property
    def presents_approval(self) -> bool:
        """Whether the call names an approval (an id, a signed requestState) or asks for a status poll.

        Such a call is only a claim until the approve stage redeems the approval: no stage may
        treat it differently from the same call without one, except in what it *counts*."""
        return (self.approval_id is not None or self.approval_poll
                or (self.input_state is not None and self.input_state.get("request_state") is not None))

    def evolve(self, **changes: Any) -> CallContext:
        """A copy of this context with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


#: What a call returns: a wire-format ``CallToolResult`` object (camelCase keys).
CallResult = dict[str, Any]
Handler = Callable[[CallContext], Awaitable[CallResult]]
Stage = Callable[[CallContext, Handler], Awaitable[CallResult]]
