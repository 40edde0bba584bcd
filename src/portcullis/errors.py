"""The one error tree, and the one mapper from it to the wire.

::

    PortcullisError
    ├── ConfigError                 bad deployment directory (problems carry file and line)
    ├── TransportError              HTTP-level refusal, before any JSON-RPC exists
    │   ├── BadHost                   421  Host header not allowed
    │   ├── ForbiddenOrigin           403  Origin present and not allowed
    │   ├── MethodNotAllowed          405  GET / DELETE / other verbs
    │   ├── NotAcceptable             406  Accept excludes application/json
    │   ├── BodyTooLarge              413  body over limits.max_body_bytes
    │   ├── UnsupportedMediaType      415  Content-Type is not application/json
    │   └── AdminRefused              4xx  an admin JSON API's refusal, with its own status and fixed text
    ├── SessionError                2025-era session problems
    │   ├── MissingSession            400  no Mcp-Session-Id on a non-initialize request
    │   └── UnknownSession            404  id forged, tampered, expired or sealed with another key
    ├── RpcError                    a JSON-RPC error object (code in the reserved range)
    │   ├── ParseError                -32700 not JSON, duplicate keys, too deep
    │   ├── InvalidRequest            -32600 not a JSON-RPC 2.0 request
    │   ├── MethodNotFound            -32601
    │   ├── InvalidParams             -32602 includes unknown (or hidden) tools and bad arguments
    │   │   └── Denied                  -32602 "Unknown tool": the caller may not see the tool at all
    │   ├── HeaderMismatch            -32020 2026-07-28 request headers disagree with the body
    │   └── UnsupportedVersion        -32022
    └── GatewayCallError            a call that the gateway accepted but could not complete;
        │                           codes outside -32768..-32000, as the 2026-07-28 policy asks
        ├── UpstreamUnavailable       -31002 service not connected (crashed, starting, unreachable)
        ├── UpstreamTimeout           -31003 no answer within the call's timeout
        ├── UpstreamFailed            -31004 the upstream broke protocol or errored
        │   └── ResultTooLarge          -31005 its answer passed max_result_bytes / max_result_depth
        ├── ApprovalRequired          -31010 policy asks a human to approve this call first
        │   └── InputRequired           (2026-07-28: answered as an input_required result)
        ├── ApprovalDenied            -31011
        ├── ApprovalExpired           -31012
        ├── ApprovalInvalid           -31013
        ├── PolicyRefused             -31020 a tool the caller may see, refused by one rule
        │                                    (data: rule_id, and retry_after_s for a limit)
        └── ResultWithheld            -31030 the tool answered; the output filter withheld the
                                             result (data: reason, never the content)
        └── GovernanceWithheld        -31021 the upstream answered, but data governance keeps the result
                                             from this caller (another tenant's result)
        └── ClientRequestRefused      -31040 the upstream asked the caller for something (sampling,
                                             elicitation, roots) the gateway does not relay (data: reason)
        └── SubscriptionLimit         -31041 a subscribe or listen over the subscription bounds
        └── ContainedByKillSwitch     -31050 an operator's kill switch contains the tool, service, tenant or
                                             caller (data: switch_id, never the operator's reason)

Client messages are short, fixed strings that never echo input or secrets; ``detail`` is for
the operator log only. :func:`to_wire` is the only place that turns these into JSON-RPC error
objects and HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PortcullisError(Exception):
    """Base of every error Portcullis raises on purpose."""

    message = "error"

    def __init__(self, message: str | None = None, *, detail: str = "") -> None:
        self.message = message or type(self).message
        self.detail = detail  # operator-only; never sent to a client
        super().__init__(self.message)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a deployment directory."""

    path: Path
    line: int | None
    message: str
    severity: str = "error"  # "error" | "warning" | "note"
    rule: str = "config"  # a stable id of the check that found it (SARIF ruleId, `lint --format json`)

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.severity}: {self.message}"


class ConfigError(PortcullisError):
    message = "invalid configuration"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid configuration")


# --------------------------------------------------------------------------- HTTP transport


class TransportError(PortcullisError):
    status = 400
    headers: dict[str, str] = {}  # noqa: RUF012 - class-level constant, never mutated


class BadHost(TransportError):
    status, message = 421, "Invalid Host header"


class ForbiddenOrigin(TransportError):
    status, message = 403, "Invalid Origin header"


class MethodNotAllowed(TransportError):
    status, message = 405, "Method Not Allowed"
    headers = {"allow": "POST"}  # noqa: RUF012


class NotAcceptable(TransportError):
    status, message = 406, "Not Acceptable: the client must accept application/json"


class BodyTooLarge(TransportError):
    status, message = 413, "Request body too large"


class UnsupportedMediaType(TransportError):
    status, message = 415, "Invalid Content-Type header: expected application/json"


class AdminRefused(TransportError):
    """A request to an admin JSON API refused (:mod:`portcullis.transport.admin_json`): answered
    ``{"error": message}`` with ``status``; ``message`` is a fixed text, never the request's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- sessions


class SessionError(PortcullisError):
    status = 400
    code = -32600


class MissingSession(SessionError):
    status, message = 400, "Bad Request: Missing session ID"


class UnknownSession(SessionError):
    status, message = 404, "Session not found"


# --------------------------------------------------------------------------- JSON-RPC


class RpcError(PortcullisError):
    code = -32603
    status = 200  # legacy era answers JSON-RPC errors with 200; modern-era statuses come from to_wire

    def __init__(self, message: str | None = None, *, detail: str = "", data: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.data = data


class ParseError(RpcError):
    code, message = -32700, "Parse error"


class InvalidRequest(RpcError):
    code, message = -32600, "Invalid Request"


class MethodNotFound(RpcError):
    code, message = -32601, "Method not found"


class InvalidParams(RpcError):
    code, message = -32602, "Invalid params"


class Denied(InvalidParams):
    """The caller may not see the tool at all (the gate: it is not in its ``tools/list``). On the
    wire it is exactly the unknown-tool error (no data), so such a caller cannot tell a tool it may
    not call from one that does not exist; ``decision`` is kept for the audit record and the log.
    A refusal of a tool the caller *can* see is :class:`PolicyRefused`."""

    def __init__(self, decision: Any, *, detail: str = "") -> None:
        super().__init__("Unknown tool", detail=detail)
        self.decision = decision


class HeaderMismatch(RpcError):
    code, message = -32020, "Request headers do not match the body"


class UnsupportedVersion(RpcError):
    code, message = -32022, "Unsupported protocol version"


class InternalError(RpcError):
    code, message = -32603, "Internal error"


# --------------------------------------------------------------------------- calls


class GatewayCallError(RpcError):
    code, message = -31001, "The call could not be completed"


class UpstreamUnavailable(GatewayCallError):
    code, message = -31002, "Service unavailable"


class UpstreamTimeout(GatewayCallError):
    code, message = -31003, "Service timed out"


class UpstreamFailed(GatewayCallError):
    code, message = -31004, "Service error"


class ResultTooLarge(UpstreamFailed):
    """The service's answer passed the service's ``max_result_bytes`` (reading stopped there) or
    its ``max_result_depth``; the message says which. A kind of :class:`UpstreamFailed`."""

    code, message = -31005, "Service result too large"


RESULT_TOO_DEEP = "Service result nested too deeply"


class ApprovalRequired(GatewayCallError):
    """The policy decided ``require_approval``: the call was not forwarded. ``data`` (when an
    approval request exists) tells the agent its id, status, expiry and how to resume."""

    code, message = -31010, "This call requires human approval"

    def __init__(self, decision: Any, *, detail: str = "", data: Any = None) -> None:
        super().__init__(detail=detail, data=data)
        self.decision = decision


class InputRequired(ApprovalRequired):
    """``require_approval`` answered with the protocol's own mechanism: a 2026-07-28
    ``input_required`` result carrying a URL-mode elicitation (``result``), not an error. The
    record stage audits it like :class:`ApprovalRequired` and returns ``result``."""

    def __init__(self, decision: Any, result: dict[str, Any], *, detail: str = "") -> None:
        super().__init__(decision, detail=detail)
        self.result = result


class ApprovalDenied(GatewayCallError):
    """An approver denied the approval the call presented."""

    code, message = -31011, "Approval denied"


class ApprovalExpired(GatewayCallError):
    """The approval the call presented expired before it was used (expiry means deny)."""

    code, message = -31012, "Approval expired"


class ApprovalInvalid(GatewayCallError):
    """The presented approval does not exist, was already used, or is bound to another call
    (tool, arguments, caller or policy version): the same answer for each, so ids cannot be probed."""

    code, message = -31013, "Approval not valid for this call"


class PolicyRefused(GatewayCallError):
    """A policy refused a call of a tool the caller may see (an argument rule, a time window, a
    limit, Rego, the risk score, an evaluation error). ``data`` names the one rule that refused it
    (``rule_id``, e.g. ``billing.process_refund/max_amount``, ``limits/eur-daily``) and, for a
    limit, ``retry_after_s``: the rule's window, after which the caller's own calls counted now
    have left it (an upper bound, the same for every caller of the rule). Nothing else: no other
    failing rule, no threshold, no counter. ``decision`` is kept for the audit record."""

    code, message = -31020, "Call refused by policy"

    def __init__(self, decision: Any, *, detail: str = "", retry_after_s: int | None = None) -> None:
        rule_ids = getattr(decision, "rule_ids", ())
        rule_id = getattr(decision, "denied_by", None) or (rule_ids[-1] if rule_ids else "policy")
        data: dict[str, Any] = {"rule_id": rule_id}
        if retry_after_s is not None:
            data["retry_after_s"] = retry_after_s
        super().__init__(detail=detail, data=data)
        self.decision = decision


class ResultWithheld(GatewayCallError):
    """The output filter withheld the whole result: a ``block`` rule matched, the filter ran past its
    budget, a detector failed, or an injection hit under ``injection: block``. ``data`` carries the
    closed-set ``reason`` and the rule id, never anything from the result."""

    code, message = -31030, "Result withheld by content policy"

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(detail=detail, data={"reason": reason, "rule_id": "output.content"})
        self.reason = reason


class GovernanceWithheld(ResultWithheld):
    """The upstream answered, but the result may not go to this caller (:mod:`portcullis.governance`):
    it is tagged with another tenant, or its tag is missing or malformed. Nothing of it is sent or
    recorded; ``reason`` (a fixed code) goes to the outcome record."""

    code, message = -31021, "Result withheld by data governance"

    def __init__(self, reason: str, *, detail: str = "") -> None:
        GatewayCallError.__init__(self, detail=detail)
        self.reason = reason


class ClientRequestRefused(GatewayCallError):
    """An upstream asked the caller for something (a server-to-client request: sampling, elicitation,
    roots) that the gateway will not relay. ``data`` carries the closed-set ``reason``
    (:data:`portcullis.client_requests.REASONS`): ``unknown_kind``, ``not_allowed`` (the service's
    ``client_requests`` manifest), ``not_declared`` (the caller did not declare the capability),
    ``malformed``, ``too_large``, ``no_filter`` or ``withheld`` (the output filter withheld its text);
    never any text of the request. ``kind`` (or None) is kept for the audit record."""

    code, message = -31040, "Client request refused"

    def __init__(self, reason: str, *, kind: str | None = None, detail: str = "") -> None:
        super().__init__(detail=detail, data={"reason": reason})
        self.reason = reason
        self.kind = kind


class SubscriptionLimit(GatewayCallError):
    """A ``resources/subscribe`` or ``subscriptions/listen`` over the subscription bounds (per session or
    stream, per caller, in total; :mod:`portcullis.subscriptions`). Nothing is subscribed."""

    code, message = -31041, "Subscription limit reached"


class ContainedByKillSwitch(GatewayCallError):
    """A kill switch (:mod:`portcullis.kill`) disables the tool, its service or the caller's tenant, or
    blocks the caller (agent, client, user, source app). ``data`` carries the switch id only: the
    operator's reason is in the audit record, never on the wire. ``decision`` is kept for the audit record."""

    code, message = -31050, "Contained by a kill switch"

    def __init__(self, switch_id: str, decision: Any = None, *, detail: str = "") -> None:
        super().__init__(detail=detail, data={"switch_id": switch_id})
        self.decision = decision


# --------------------------------------------------------------------------- the mapper

_MODERN_STATUS = {-32700: 400, -32600: 400, -32601: 404, -32602: 400, -32020: 400, -32022: 400, -32603: 500}


@dataclass(frozen=True, slots=True)
class WireError:
    """What the transport sends for an error: HTTP status, extra headers, JSON body or text."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None  # a JSON-RPC response object, or None for a plain-text answer
    text: str = ""


def to_wire(error: BaseException, *, request_id: Any = None, modern: bool = False) -> WireError:
    """Turn any exception into what the client sees. Unknown exceptions become a bare -32603."""
    if isinstance(error, TransportError):
        return WireError(error.status, dict(error.headers), None, error.message)
    if isinstance(error, SessionError):
        body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": error.message}}
        return WireError(error.status, {}, body)
    if not isinstance(error, RpcError):
        error = InternalError()
    payload: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.data is not None:
        payload["data"] = error.data
    status = _MODERN_STATUS.get(error.code, 200) if modern else 200
    return WireError(status, {}, {"jsonrpc": "2.0", "id": request_id, "error": payload})
