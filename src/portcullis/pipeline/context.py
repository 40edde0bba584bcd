"""The frozen call context that flows through the pipeline.

A stage never mutates a context: it makes a new one with :meth:`CallContext.evolve` and hands
that to the next stage. The one exception is :class:`CallRecord`, the per-call accumulator of
what the audit trail holds, shared by every copy. What a stage adds (the route today; the principal and the decision in
later releases) is a new field here, so every stage sees the same, typed picture of the call.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portcullis.catalog import Route
    from portcullis.content.output_filter import ContentReport
    from portcullis.identity.principal import Principal
    from portcullis.policy.decision import Decision


class Refusal(enum.Enum):
    """Why a stage refused a call before it had a decision (the ``reason`` of a ``rejected`` record)."""

    UNKNOWN_TOOL = "unknown_tool"  # route (or forward's last look): not a served, pinned tool
    INVALID_ARGUMENTS = "invalid_arguments"  # validate: the arguments break the tool's schema


class CallRecord:
    """What the audit trail already holds about one call, filled in by the stages as it goes.

    The one mutable object a :class:`CallContext` carries, and deliberately so: every evolved copy
    of the context shares it, so what an inner stage learns reaches the record stage however the
    call ends (a result, a refusal, an exception from anywhere, a cancellation). It only grows: each
    field goes from unset to set once (:meth:`refuse` keeps the first, innermost verdict), and the
    write marks are set by the audit writer itself when a record is durable, so they are true even
    for a call cancelled while its record was being written. A context is made per call with a
    fresh record, which the record stage claims (a context run twice gets a new one) and, at the
    end, decides from it alone what is still missing from the trail: a ``rejected`` record, a
    refused decision's ``decision`` record, or the ``outcome`` record owed to a written decision.
    """

    __slots__ = ("cache", "claimed", "client_input", "content", "decision_written", "forwarded_ns", "governance",
                 "outcome_written", "presented", "read_entry", "read_refusal", "refusal", "refused_decision",
                 "result_tenant", "route", "shadow", "upstream_span_id")

    def __init__(self) -> None:
        self.claimed = False  # the record stage took it for a call
        self.route: Route | None = None  # the route stage's answer
        self.refusal: Refusal | None = None  # set by the stage that refused before any decision
        self.refused_decision: Decision | None = None  # a decision refused after authorize (a failed approval)
        self.presented: Mapping[str, Any] | None = None  # what came of a presented approval (approve stage)
        # set by the audit writer the moment the record is durable (even if the call was cancelled meanwhile)
        self.decision_written = False
        self.outcome_written = False
        self.forwarded_ns = 0  # when the audit stage started forwarding (0: not yet)
        self.upstream_span_id: str | None = None  # the forward span (the outcome record names it)
        self.cache: str | None = None  # the response cache's verdict: "hit", "miss", "bypass" (None: not cacheable)
        # what the output filter did with the result (content stage): counts, rule ids, and the
        # ``sensitive`` / ``injection`` flags session rules read; never a value from the result
        self.content: ContentReport | None = None
        # data governance (portcullis.governance): the upstream's tenant tag on the result (read by the
        # forwarder before it drops the upstream's _meta) and what the governance hook did (taint,
        # withheld), for the outcome record
        self.result_tenant: Any = None
        self.governance: dict[str, str] | None = None
        self.read_entry: Any = None  # a resource read or prompt get: its SurfaceEntry (read route stage)
        self.read_refusal: str | None = None  # why a read was refused before a decision: gate | pin
        # server-to-client requests of an upstream's input_required (portcullis.pipeline.client_input): the
        # round, the kinds and keys relayed, or what was refused and why; never a value
        self.client_input: dict[str, Any] | None = None
        # a shadow version decided in the background (policy/shadow.py): its ShadowCell, read by the records
        self.shadow: Any = None

    def decision_durable(self) -> None:
        self.decision_written = True

    def outcome_durable(self) -> None:
        self.outcome_written = True

    def refuse(self, reason: Refusal) -> None:
        if self.refusal is None:
            self.refusal = reason

    def refuse_approval(self, presented: Mapping[str, Any], decision: Decision | None) -> None:
        """What came of a presented approval that did not run the call; the first verdict stands."""
        if self.presented is None:
            self.presented = presented
            if decision is not None:
                self.refused_decision = decision


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
    source: str | None = None  # the connection's peer address (never a forwarded header): monitoring only
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
    # MRTR (portcullis.pipeline.client_input): the capabilities the caller declared (2026-07-28: this request's
    # _meta; 2025-era: its session's), the gateway-sealed requestState and inputResponses of a retry, and what
    # the client_input stage hands the forwarder (the upstream's own state, the responses, the capabilities)
    client_capabilities: Mapping[str, Any] | None = None
    retry_input: Any = None  # client_input.RetryInput
    upstream_input: Any = None  # client_input.UpstreamInput
    # what the trail holds about this call so far (see CallRecord); the record stage makes a fresh one
    record: CallRecord = field(default_factory=CallRecord)

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


class EncodedResult(dict[str, Any]):
    """A call result together with its JSON encoding, made once by the audit stage.

    The outcome record states the size of exactly these bytes, and the transport answers with them
    (:func:`portcullis.transport.protocol.encode_response`), so what the record says is what the
    caller got and the result is encoded once per call. Whoever changes the mapping afterwards
    must change ``encoded`` with it (the dispatcher's 2026-07-28 additions do, by splicing).
    """

    __slots__ = ("encoded",)
    encoded: bytes


def encoded_result(result: Mapping[str, Any], encoded: bytes) -> EncodedResult:
    """``result`` with its encoding (a C-level copy: cheaper than a Python ``__init__``)."""
    out = EncodedResult(result)
    out.encoded = encoded
    return out
Handler = Callable[[CallContext], Awaitable[CallResult]]
Stage = Callable[[CallContext, Handler], Awaitable[CallResult]]


@dataclass(frozen=True, slots=True)
class ReadContext:
    """One ``resources/read`` or ``prompts/get`` at the point a read stage sees it (:mod:`.reads`)."""

    request_id: str
    method: str  # resources/read | prompts/get
    protocol_version: str
    principal: Principal
    target: str  # the URI or prompt name exactly as the caller sent it
    arguments: Mapping[str, Any]  # a prompt's arguments; {} for a read
    started_ns: int
    entry: Any = None  # the SurfaceEntry (route stage)
    upstream_target: str = ""  # the URI or name at the service (route stage)
    decision: Decision | None = None  # authorize stage
    trace: Any = None  # reads open no spans yet
    client_capabilities: Mapping[str, Any] | None = None  # as CallContext's
    retry_input: Any = None
    upstream_input: Any = None
    record: CallRecord = field(default_factory=CallRecord)

    def evolve(self, **changes: Any) -> ReadContext:
        return dataclasses.replace(self, **changes)
