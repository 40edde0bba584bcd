"""What a policy evaluation returns: an effect, why, which rules, and what the gateway must do.

A :class:`Decision` is a plain frozen value. ``reasons`` are short fixed strings (the constants
below) and never echo argument values, so a decision can be logged, audited and shown to a
caller without leaking what was sent. ``rule_ids`` name the failing rules as
``<tool>/<rule>`` (``billing.process_refund/max_amount``) and stay stable when a policy file
is reordered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Effect = Literal["allow", "deny", "require_approval"]

# Reasons: one fixed string per way a rule can fail.
CALLER_NOT_ALLOWED = "caller_not_allowed"
CALLER_ID_REJECTED = "caller_id_rejected"
CALLER_DENIED = "caller_denied"
NO_POLICY = "no_policy"
AMOUNT_MISSING = "amount_missing"
AMOUNT_INVALID = "amount_invalid"
AMOUNT_OVER_MAX = "amount_over_max"
AMOUNT_NEEDS_APPROVAL = "amount_needs_approval"
CURRENCY_NOT_ALLOWED = "currency_not_allowed"
ATTRIBUTE_NOT_ALLOWED = "attribute_not_allowed"
TENANT_MISMATCH = "tenant_mismatch"
OUTSIDE_TIME_WINDOW = "outside_time_window"
ENVIRONMENT_NOT_ALLOWED = "environment_not_allowed"
ARGUMENT_MISSING = "argument_missing"
ARGUMENT_INVALID = "argument_invalid"
PATH_OUTSIDE_ROOT = "path_outside_root"
POLICY_ERROR = "policy_error"
SHADOW_MODE = "shadow_mode"
DATA_CLASS_SINK = "data_class_sink"  # governance.sinks: a class that may not reach this caller or place


@dataclass(frozen=True, slots=True)
class Obligation:
    """Something the gateway must do with an allowed (or recorded) call.

    Fields:
        kind: ``"audit"`` (write the full audit record) or ``"redact"`` (replace the argument
            at ``pointer`` in logs and audit records).
        pointer: the RFC 6901 pointer a ``"redact"`` obligation applies to; ``None`` for ``"audit"``.
    """

    kind: Literal["audit", "redact"]
    pointer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of one evaluation.

    Fields:
        effect: ``"allow"``, ``"deny"`` or ``"require_approval"``.
        reasons: fixed reason strings of the failing rules, in rule order, without duplicates.
        rule_ids: ids of the failing rules, in rule order.
        obligations: what the gateway must do whatever the effect (audit, redaction).
        policy_version: the version of the policy that decided (for the audit record).
        shadow: in ``log_only`` mode, the decision the policy *would* have made; else ``None``.
        denied_by: for a ``deny``, the one rule that made it one (the first failing deny rule;
            ``rule_ids`` may also hold approval rules): what a refused caller is told.
    """

    effect: Effect
    reasons: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    policy_version: str
    shadow: Decision | None = None
    risk: Mapping[str, Any] | None = None  # {"score", "parts", "verdict", "approvers"} when risk scoring ran
    denied_by: str | None = None
    # a whole shadow version's would-be decision ({"version", "policy_version", "effect", "rule_ids"} or
    # {"version", "error"}); set by the authorize stage only while a shadow version is set
    shadow_version: Mapping[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        """True only for ``"allow"``: ``"require_approval"`` is not an allow until a human says so."""
        return self.effect == "allow"
