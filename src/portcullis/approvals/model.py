"""What an approval is and what it is bound to.

An approval is created when the policy answers ``require_approval`` for a call, and it binds
exactly that call:

* the tool (its exposed name),
* the canonical arguments — ``sha256`` of their canonical JSON (sorted keys, compact, UTF-8:
  :func:`~portcullis.audit.record.canonical_bytes`), so any change of any argument, however
  small, is a different call,
* the requesting identity — ``sha256`` over the principal's issuer, client, user, agent and
  tenant (not its roles, scopes or session, which change between tokens of the same caller),
* the policy version that asked for it.

It is single use (``approved`` → ``executed`` in one atomic step), expires (``expires_at``;
expiry means deny), and needs ``required`` distinct human approvers, none of them the requester.

Statuses: ``pending`` → ``approved`` (enough approvals) or ``denied`` (any approver denied) or
``expired``; ``approved`` → ``executed`` (the one call it allowed ran) or ``expired``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from portcullis.audit.record import canonical_bytes
from portcullis.identity.principal import Principal
from portcullis.text import escape_invisible

Status = Literal["pending", "approved", "denied", "expired", "executed"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "denied", "expired", "executed")
OPEN: frozenset[str] = frozenset({"pending", "approved"})
ID_PREFIX = "apr_"
MAX_JUSTIFICATION_CHARS = 1000


def new_id() -> str:
    """An unguessable approval id (128 random bits)."""
    return ID_PREFIX + secrets.token_hex(16)


def arguments_hash(arguments: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``arguments`` (what an approver approves)."""
    return "sha256:" + hashlib.sha256(canonical_bytes(dict(arguments))).hexdigest()


def identity_key(principal: Principal) -> str:
    """A stable key of who is asking: issuer, client, user, agent, tenant (not roles, scopes, session)."""
    ident = {"issuer": principal.issuer, "client_id": principal.client_id, "user_id": principal.user_id,
             "agent_id": principal.agent_id, "tenant": principal.tenant}
    return "sha256:" + hashlib.sha256(canonical_bytes(ident)).hexdigest()


def same_person(requester: Mapping[str, Any], approver: Principal) -> bool:
    """Whether ``approver`` is (or acts for) the requester: same user, same agent or same identity."""
    try:
        asked_by = Principal.from_claims(requester)
    except ValueError:
        return True  # unreadable: treat as the same person (fail closed)
    if asked_by.user_id is not None and asked_by.user_id == approver.user_id:
        return True
    if asked_by.agent_id is not None and asked_by.agent_id == approver.agent_id:
        return True
    return identity_key(asked_by) == identity_key(approver)


@dataclass(frozen=True, slots=True)
class Vote:
    """One approver's verdict."""

    approver: Mapping[str, Any]  # the approver principal's claims
    verdict: Literal["approve", "deny"]
    at: float
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"approver": dict(self.approver), "verdict": self.verdict, "at": self.at, "reason": self.reason}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Vote:
        return cls(approver=obj["approver"], verdict=obj["verdict"], at=float(obj["at"]), reason=obj.get("reason", ""))


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval request and everything it is bound to (see the module docstring)."""

    id: str
    tool: str
    arguments: Mapping[str, Any]
    arguments_hash: str
    requester: Mapping[str, Any]  # the requesting principal's claims
    requester_key: str
    policy_version: str
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    required: int  # distinct approvers needed: 1 or 2
    created_at: float
    expires_at: float
    status: Status = "pending"
    justification: str = ""
    risk: Mapping[str, Any] | None = None  # {"score": n, "parts": {...}} when risk scoring ran
    votes: tuple[Vote, ...] = field(default=())
    request_id: str = ""  # the request that proposed it
    tool_risk: str = ""  # the manifest's risk level of the tool (approver rules may depend on it)

    def approvals(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.verdict == "approve")

    def summary(self) -> str:
        """One line for the agent and the approver: what, by whom, bound to which hash."""
        who = self.requester.get("user_id") or self.requester.get("agent_id") or self.requester.get("client_id")
        return (f"{self.tool} requested by {who}: {self.required} approver(s) needed; "
                f"arguments {self.arguments_hash}; rules {', '.join(self.rule_ids) or '-'}")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tool": self.tool, "arguments": dict(self.arguments),
                "arguments_hash": self.arguments_hash, "requester": dict(self.requester),
                "requester_key": self.requester_key, "policy_version": self.policy_version,
                "rule_ids": list(self.rule_ids), "reasons": list(self.reasons), "required": self.required,
                "created_at": self.created_at, "expires_at": self.expires_at, "status": self.status,
                "justification": self.justification, "risk": dict(self.risk) if self.risk else None,
                "votes": [v.to_json() for v in self.votes], "request_id": self.request_id,
                "tool_risk": self.tool_risk}


# ----------------------------------------------------------------------------- what approvers see

_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """``text`` with every control, format (zero-width, bidirectional) and other invisible
    character shown as ``\\u{XXXX}``, so an approver sees exactly what will run. Nothing is cut."""
    return escape_invisible(text, _VISIBLE)


def visible_json(value: Any) -> Any:
    """``value`` with :func:`visible` applied to every string, keys included."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, Mapping):
        return {visible(str(k)): visible_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [visible_json(v) for v in value]
    return value
