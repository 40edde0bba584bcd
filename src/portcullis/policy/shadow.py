"""Shadow evaluation: a whole candidate version decides beside the active one, never enforced.

An operator sets a stored version (``ps-…``) as the shadow (``POST /policy/shadow``,
``portcullis policy shadow VERSION``). The authorize stage, after the enforced decision, asks
the shadow engine too and adds what it would have decided to the decision record as
``shadow_version``. The shadow never changes a call: it cannot raise here (an error is recorded
as ``{"version", "error"}``) and its effect is never acted on.

Cost: with no shadow set, one attribute read per call; with one set, a second evaluation
(native rules plus, when the version has Rego, a second query to the same workers).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision
from portcullis.policy.engine import PolicyEngine

log = logging.getLogger("portcullis.policy")
SHADOW_ERROR = "shadow evaluation failed"


async def shadow_decide(shadow: tuple[str, PolicyEngine], tool: str, principal: Principal,
                        arguments: Mapping[str, Any], *, now: datetime,
                        session: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the shadow version would decide, as recorded; never raises (an error is recorded)."""
    vid, engine = shadow
    try:
        decided: Decision = await engine.decide_async(tool, principal, arguments, now=now, session=session)
    except Exception as exc:  # the shadow never changes a call
        log.warning("shadow policy evaluation failed", extra={"fields": {"version": vid,
                                                                         "error": type(exc).__name__}})
        return {"version": vid, "error": SHADOW_ERROR}
    return {"version": vid, "policy_version": decided.policy_version, "effect": decided.effect,
            "rule_ids": list(decided.rule_ids)}
