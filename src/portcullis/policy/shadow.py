"""Shadow evaluation: a whole candidate version decides beside the active one, never enforced.

An operator sets a stored version (``ps-…``) as the shadow (``POST /policy/shadow``,
``portcullis policy shadow VERSION``). After the enforced decision the authorize stage asks the
shadow engine too and records what it would have decided as ``shadow_version``. The shadow
never changes a call: nothing here raises into the call (an error is recorded as
``{"version", "error"}``) and its effect is never acted on. Two ways, chosen per call:

* **inline** (:func:`shadow_decide`) — the shadow has no Rego, or the very Rego the enforced
  version has (the same workers, and often a decision-cache hit): decided in the stage, the
  result goes into the decision record. A few microseconds (docs/policy-versions.md).
* **in the background** (:class:`ShadowRunner`) — the shadow has Rego of its own, evaluated by
  its own worker process(es). The stage schedules the evaluation as a task and goes on at once;
  at most :data:`MAX_PENDING` run at a time and a call beyond that is not shadowed (``dropped``).
  The call's records read the result from a :class:`ShadowCell`: the decision record carries it
  when it is ready by then, else ``{"version", "pending": true}`` and the outcome record carries
  it (or ``{"version", "error": "shadow evaluation late"}`` when it is still not ready). A call
  that has no outcome record (refused, held for approval) gets a log line instead when the shadow
  disagreed or failed. Every result is counted once, when it is known.

Counts: ``portcullis_shadow_version_total{result="agree"|"disagree"|"error"|"dropped"}``. A shadow
decision that is a policy error (its Rego failed, timed out, or its workers were busy) is an
``error``, not a disagreement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from portcullis.identity.principal import Principal
from portcullis.policy.decision import POLICY_ERROR, Decision
from portcullis.policy.engine import PolicyEngine

log = logging.getLogger("portcullis.policy")
SHADOW_ERROR = "shadow evaluation failed"
SHADOW_DROPPED = "shadow evaluation dropped"
SHADOW_LATE = "shadow evaluation late"
MAX_PENDING = 64  # background shadow evaluations at once; more calls are not shadowed (dropped)


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
    if POLICY_ERROR in decided.reasons:  # its Rego failed, timed out or was busy: not a disagreement
        return {"version": vid, "error": SHADOW_ERROR}
    return {"version": vid, "policy_version": decided.policy_version, "effect": decided.effect,
            "rule_ids": list(decided.rule_ids)}


def compared(would: Mapping[str, Any], effect: str) -> str:
    """The counter label of a recorded shadow result against the enforced ``effect``."""
    if "error" in would:
        return "dropped" if would["error"] == SHADOW_DROPPED else "error"
    return "agree" if would["effect"] == effect else "disagree"


def runs_inline(shadow: PolicyEngine, enforced: PolicyEngine) -> bool:
    """Whether the shadow is decided in the stage: no Rego of its own to wait for."""
    rego = getattr(shadow, "rego", None)  # the stage must not fail on a shadow engine of another shape
    return rego is None or rego is enforced.rego


class ShadowCell:
    """One call's background shadow result, read by its records (filled in once, by the runner)."""

    __slots__ = ("in_decision", "result", "version")

    def __init__(self, version: str, result: dict[str, Any] | None = None) -> None:
        self.version = version
        self.result = result
        self.in_decision = False  # the decision record carried the result

    def for_decision(self) -> dict[str, Any]:
        if self.result is None:
            return {"version": self.version, "pending": True}
        self.in_decision = True
        return dict(self.result)

    def for_outcome(self) -> dict[str, Any] | None:
        """What the outcome record carries: nothing if the decision record had it."""
        if self.in_decision:
            return None
        return dict(self.result) if self.result is not None else {"version": self.version, "error": SHADOW_LATE}


class ShadowRunner:
    """Background shadow evaluations, at most ``max_pending`` at a time (see the module docstring)."""

    def __init__(self, count: Callable[[str], None], max_pending: int = MAX_PENDING) -> None:
        self._count, self._max = count, max_pending
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, shadow: tuple[str, PolicyEngine], effect: str, tool: str, principal: Principal,
               arguments: Mapping[str, Any], *, now: datetime, session: Mapping[str, Any] | None,
               request_id: str) -> ShadowCell:
        """Schedule the shadow's decision of this call and return its cell at once; never raises."""
        if len(self._tasks) >= self._max:
            self._count("dropped")
            return ShadowCell(shadow[0], {"version": shadow[0], "error": SHADOW_DROPPED})
        cell = ShadowCell(shadow[0])
        task = asyncio.get_running_loop().create_task(
            self._run(cell, shadow, effect, tool, principal, arguments, now, session, request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return cell

    async def _run(self, cell: ShadowCell, shadow: tuple[str, PolicyEngine], effect: str, tool: str,
                   principal: Principal, arguments: Mapping[str, Any], now: datetime,
                   session: Mapping[str, Any] | None, request_id: str) -> None:
        would = await shadow_decide(shadow, tool, principal, arguments, now=now, session=session)
        cell.result = would
        result = compared(would, effect)
        self._count(result)
        if result != "agree":
            log.warning("shadow version decided differently", extra={"fields": {
                "request_id": request_id, "tool": tool, "result": result, "shadow_version": would}})

    async def aclose(self) -> None:
        """Cancel what still runs (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
