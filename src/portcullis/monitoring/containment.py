"""The seam through which an alert rule contains what it found: propose or apply a kill switch.

:class:`Containment` is all the monitor knows of kill switches: ``propose(kind, target, reason)``
asks a person to approve an action (nothing changes until they do), ``apply(kind, target, reason)``
takes it now. Which of the two a rule uses is configuration (``alerts.containment[].mode``), and
``proposed`` is the default: high-impact automatic actions wait for a person.

In the gateway the seam is :class:`~portcullis.kill.containment.KillSwitchContainment`: ``apply`` sets
the switch ("this switch, with this reason, by ``portcullis-alerts``"); ``propose`` creates an approval
request through :class:`~portcullis.approvals.service.ApprovalService` (the path a held call takes) for the
synthetic tool ``portcullis.kill_switch`` with the arguments ``{kind, target, reason}``, requested by the
non-person principal ``portcullis-alerts`` (:mod:`portcullis.approvals.system`), so the notice, signed
links, quorum, expiry and audit records are the ones approvers already use; once approved, the approval's
execution sets the switch, once. :class:`NoContainment` (a monitor built without one) logs what would have
happened, and tests use a recording double.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from portcullis.monitoring.detectors import Alert
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.alerts")

#: The kill-switch kinds of issue 15 a containment rule may name; the alert key must carry the target.
KINDS = ("tool", "service", "tenant", "agent", "client", "user", "source_app")
Mode = Literal["proposed", "applied"]


class Containment(Protocol):
    def propose(self, kind: str, target: str, reason: str) -> None: ...
    def apply(self, kind: str, target: str, reason: str) -> None: ...


class NoContainment:
    """A monitor built without containment (tests, tools): records in the log what a rule would have done."""

    def propose(self, kind: str, target: str, reason: str) -> None:
        log.warning("containment not wired: proposal dropped", extra={"fields": {"kind": kind, "reason": reason}})

    def apply(self, kind: str, target: str, reason: str) -> None:
        log.warning("containment not wired: action dropped", extra={"fields": {"kind": kind, "reason": reason}})


@dataclass(frozen=True, slots=True)
class ContainmentRule:
    rule: str  # the alert rule it reacts to
    kind: str  # which kill switch (one of KINDS), its target taken from the alert's key
    mode: Mode = "proposed"


@dataclass(frozen=True, slots=True)
class Action:
    rule: str
    kind: str
    target: str
    mode: Mode
    reason: str


def actions(alert: Alert, rules: Mapping[str, tuple[ContainmentRule, ...]]) -> list[Action]:
    """What the configured rules do about ``alert``: one action per rule whose kind the key names."""
    out = []
    for rule in rules.get(alert.rule, ()):
        target = alert.subject(rule.kind)
        if target is not None:
            observed = escape_invisible(alert.observed) if isinstance(alert.observed, str) else alert.observed
            reason = f"alert {alert.rule}: observed {observed} over threshold {alert.threshold}"
            out.append(Action(alert.rule, rule.kind, target, rule.mode, reason))
    return out


def carry_out(action: Action, containment: Containment) -> bool:
    """Propose or apply ``action``; a failing containment is logged, never raised (False)."""
    try:
        if action.mode == "applied":
            containment.apply(action.kind, action.target, action.reason)
        else:
            containment.propose(action.kind, action.target, action.reason)
    except Exception:
        log.exception("containment failed", extra={"fields": {"rule": action.rule, "kind": action.kind}})
        return False
    return True
