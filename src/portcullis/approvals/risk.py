"""Risk scoring: a number per call from what it touches, mapped to allow, one approver, two
approvers or deny.

The score is the sum of its parts (each configured in ``approvals.risk``):

* ``tool_risk`` — the manifest's risk level (low / medium / high);
* ``classification`` — the most sensitive of the tool's input and output classification (data
  scope);
* ``environment`` — the gateway's environment (production counts more than a sandbox);
* ``amount`` — ``points_per_unit`` times the amount argument, capped at ``max_points``;
* ``rate`` — ``points_per_call`` times the same requester's earlier calls of the same tool within
  ``window_s``, capped (a burst of refunds scores higher than one).

Thresholds map the score: below ``one_approver`` the policy's decision stands; from
``one_approver`` the call needs one approver, from ``two_approvers`` two, from ``deny`` it is
denied. The score can only make a decision stricter: a policy deny stays a deny, and a policy
``require_approval`` needs at least one approver whatever the score. Score, parts and verdict are
recorded with the decision (audit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from portcullis.config.model import Classification, RiskConfig

_ORDER = list(Classification)
MAX_AMOUNT_VALUE = 10**15


def amount_at(arguments: Mapping[str, Any], pointer: str) -> float | None:
    value: Any = arguments
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def score(config: RiskConfig, *, risk: str, classification_in: Classification, classification_out: Classification,
          environment: str, arguments: Mapping[str, Any], earlier_calls: int) -> dict[str, Any]:
    """The score, its parts, and what it asks for (``verdict``: allow / one / two / deny)."""
    highest = max(classification_in, classification_out, key=_ORDER.index)
    parts: dict[str, float] = {
        "tool_risk": config.tool_risk.get(risk, 0.0),  # type: ignore[call-overload]
        "classification": config.classification.get(highest, 0.0),
        "environment": config.environment.get(environment, 0.0),
    }
    if config.amount is not None:
        amount = amount_at(arguments, config.amount.pointer)
        if amount is not None:
            points = min(amount, MAX_AMOUNT_VALUE) * config.amount.points_per_unit
            parts["amount"] = min(config.amount.max_points, points)
    if config.rate is not None:
        parts["rate"] = min(config.rate.max_points, earlier_calls * config.rate.points_per_call)
    parts = {name: round(points, 2) for name, points in parts.items()}
    total = round(sum(parts.values()), 2)
    t = config.thresholds
    verdict = "deny" if total >= t.deny else "two" if total >= t.two_approvers else (
        "one" if total >= t.one_approver else "allow")
    return {"score": total, "parts": parts, "verdict": verdict,
            "approvers": {"allow": 0, "one": 1, "two": 2, "deny": 0}[verdict]}
