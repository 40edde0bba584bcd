"""The toxic-flow session rule: what taints a session, which tools it then restricts, and how.

A result that carried sensitive data (a secret, PII) or an injection hit taints the session that
received it; while tainted (``governance.toxic_flow.window_s``, 15 minutes by default, from the
*last* such result), a call of an **egress-capable** tool by that session is refused
(``on_sensitive: deny``) or held for a human approval (``on_injection: require_approval``), with
the rule id :data:`RULE_ID`. Non-egress tools are never affected and cost nothing.

1. *What taints* is read from the call's record (:func:`signals_of`): the content filter puts its
   report there as ``CallRecord.content`` (anything with boolean ``sensitive`` and
   ``injection``: :class:`ContentSignals`). No report means no taint.
2. *Egress-capable* (:func:`is_egress`): the manifest's ``egress`` when set; else the MCP
   ``openWorldHint`` annotation; else true (the MCP default for ``openWorldHint``: a tool that says
   nothing may reach the outside world).
3. *The session* (:func:`session_key`): the principal's identity (issuer, client, user, agent,
   tenant, as approvals and the sealed session bind it) plus the ``session_id`` claim of the
   verified credential when it has one. Not the 2025-era ``Mcp-Session-Id``: the gateway seals a new
   one for every ``initialize`` the caller sends, so a tainted agent could shed the taint by
   opening a new session; every claim in the key comes from the credential, which it cannot change.
4. *The state* is one windowed counter per session in the state store (in process or SQLite today,
   Redis later): a sensitive taint adds :data:`DENY_WEIGHT`, an injection taint adds 1 (or the
   other way round, as configured), so one read tells the strictest action due. A store that
   cannot answer is a deny (``policy_error``) for egress tools, never an allow.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal, Protocol

from portcullis.config.model import ToolManifest, ToxicFlowConfig
from portcullis.identity.principal import Principal

RULE_ID = "content.toxic_flow"
REASON = "toxic_flow"
ERROR_RULE_ID = "content.toxic_flow/policy_error"
DENY_WEIGHT = 2**32  # an approval taint adds 1: 2**32 approval taints in one window would be needed to look like a deny
Action = Literal["deny", "require_approval"]


class ContentSignals(Protocol):
    """What the governance hook reads of the content filter's per-call report."""

    @property
    def exposed(self) -> bool: ...  # a secret or PII reached the caller in clear (an ``allow`` rule let it through)

    @property
    def injection(self) -> bool: ...  # an injection pattern was found in the result


def signals_of(record: object) -> tuple[bool, bool]:
    """``(sensitive, injection)`` of a call's record; ``(False, False)`` when no filter reported.

    *Sensitive* here means a secret or PII value reached the caller in clear (the filter's policy
    allowed it): a value the filter redacted, masked or hashed never reached the model, so it
    cannot be carried out by a later egress call and does not taint the session."""
    report = getattr(record, "content", None)
    if report is None:
        return False, False
    return getattr(report, "exposed", False) is True, getattr(report, "injection", False) is True


def is_egress(manifest: ToolManifest) -> bool:
    """Whether the tool can send data out: ``egress``, else ``openWorldHint``, else true (MCP default)."""
    if manifest.egress is not None:
        return manifest.egress
    return manifest.annotations.openWorldHint is not False


def session_key(principal: Principal) -> str:
    """The state-store key of the caller's session (see the module docstring, 3): a digest of the
    identity fields and the session claim, each length-prefixed so no two tuples share a key."""
    fields = (principal.issuer, principal.client_id, principal.user_id, principal.agent_id, principal.tenant,
              principal.session_id)
    text = "".join("-" if value is None else f"{len(value)}:{value}" for value in fields)
    return "flow/" + hashlib.sha256(text.encode()).hexdigest()


def taint_weight(config: ToxicFlowConfig, *, sensitive: bool, injection: bool) -> int:
    """What a result with these signals adds to its session's counter (0: nothing to add)."""
    actions = [action for hit, action in ((sensitive, config.on_sensitive), (injection, config.on_injection)) if hit]
    if not actions:
        return 0
    return DENY_WEIGHT if "deny" in actions else 1


def action_for(total: Decimal | int) -> Action | None:
    """The strictest action a session counter of ``total`` asks for (None: not tainted)."""
    if total >= DENY_WEIGHT:
        return "deny"
    return "require_approval" if total > 0 else None
