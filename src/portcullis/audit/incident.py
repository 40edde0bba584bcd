"""An incident report from audit records: pure, records in, a frozen report out.

Contract:

* :func:`build_report` reads only what the records hold. Records are already redacted by the
  gateway (sensitive arguments are keyed hashes, outputs are sizes and classifications), and the
  report adds no field that is not in them; what the trail does not record is said to be
  "not recorded" (:data:`NOT_RECORDED`), never guessed.
* The window is by record time (``since`` <= ts <= ``until``); the other filters (agent, user,
  tool, request id, tenant) combine with AND. A request matches when one of its records that
  names a principal and a tool (decision, rejected, approval, attempt) matches; its outcome
  comes with it. Without filters every request in the window is in, and an outcome whose
  decision lies before the window is a row of its own.
* ``spawn`` and ``service_identity`` records describe services: those in the window for the
  services the matched calls touched (all of them with no filter), and the last one of each kind
  before the window for each, which is the confinement and the build identity that were in force
  when the window opened (however long before ``since`` it was recorded). Consecutive equal
  identities fold into one; two or more distinct ones mean the service changed in the window.
* Records are tolerated as tampered data: a field of the wrong type reads as absent.

The chain range and whether it verifies come from the caller (``incident_source.py``), which
runs the project's verifier; this module only carries that verdict into the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from portcullis.audit.incident_model import (
    NOT_RECORDED,
    BlastRadius,
    ChainRange,
    IncidentFilter,
    IncidentReport,
    PinSeen,
    TimelineEntry,
    VersionSeen,
)
from portcullis.audit.incident_services import SERVICE_KINDS, get, service_identity, sorted_text, text
from portcullis.audit.record import KEYED_HASH_PREFIX, AuditRecord

__all__ = ["NOT_RECORDED", "build_report", "in_window", "matches"]

_NAMED_KINDS = frozenset({"decision", "rejected", "approval", "attempt"})


def _principal(record: AuditRecord) -> Mapping[str, Any]:
    who = get(record.fields, "requester" if record.kind == "approval" else "principal")
    return who if isinstance(who, Mapping) else {}


def in_window(record: AuditRecord, flt: IncidentFilter) -> bool:
    """Whether the record's time is in the window (a tampered, non-numeric time never is)."""
    ts = record.ts
    if not isinstance(ts, float | int) or isinstance(ts, bool):
        return False
    return flt.since <= ts and (flt.until is None or ts <= flt.until)


def matches(record: AuditRecord, flt: IncidentFilter) -> bool:
    """Whether a principal-and-tool record matches every non-time filter (AND)."""
    if record.kind not in _NAMED_KINDS:
        return False
    who = _principal(record)
    wanted = ((flt.request_id, record.request_id), (flt.tool, get(record.fields, "tool", "name")),
              (flt.agent, who.get("agent_id")), (flt.user, who.get("user_id")), (flt.tenant, who.get("tenant")))
    return all(want is None or want == have for want, have in wanted)


@dataclass(slots=True)
class _Call:
    """A request being assembled: its first named record, its outcome, its approval events."""

    head: AuditRecord
    outcome: AuditRecord | None = None


def build_report(records: Iterable[AuditRecord], flt: IncidentFilter, chain: ChainRange) -> IncidentReport:
    """The report over ``records`` (every record up to the end of the range, in index order)."""
    prior: dict[tuple[str, str], AuditRecord] = {}  # (kind, service) -> the latest before the window
    window: list[AuditRecord] = []
    for record in records:
        if in_window(record, flt):
            window.append(record)
        elif record.kind in SERVICE_KINDS and isinstance(record.ts, float) and record.ts < flt.since:
            if service := text(get(record.fields, "service")):
                prior[record.kind, service] = record
    # unfiltered: every request in the window (an outcome whose decision came earlier too)
    chosen = {r.request_id for r in window if r.kind not in SERVICE_KINDS and (flt.unfiltered() or matches(r, flt))}
    calls: dict[str, _Call] = {}
    approvals: list[AuditRecord] = []
    others: list[AuditRecord] = []
    for record in window:
        if record.request_id not in chosen or record.kind in SERVICE_KINDS:  # under services
            continue
        if record.kind == "approval":
            approvals.append(record)
        elif record.kind == "outcome" and record.request_id in calls:
            calls[record.request_id].outcome = record
        elif record.kind in ("decision", "rejected") and record.request_id not in calls:
            calls[record.request_id] = _Call(record)
        else:
            others.append(record)
    heads = [c.head for c in calls.values()]
    services = {s for r in heads if (s := text(get(r.fields, "tool", "service")))}
    unfiltered = flt.unfiltered()
    about = [r for r in window if r.kind in SERVICE_KINDS
             and (unfiltered or text(get(r.fields, "service")) in services)]
    services |= {s for r in about if (s := text(get(r.fields, "service")))}
    events = _approval_events(approvals)
    timeline = [_call_entry(c, events) for c in calls.values()]
    timeline += [_approval_entry(r) for r in approvals] + [_other_entry(r) for r in others]
    timeline.sort(key=lambda e: (e.ts, e.index))
    before = [prior[k, s] for s in sorted(services) for k in sorted(SERVICE_KINDS) if (k, s) in prior]
    return IncidentReport(
        filter=flt, chain=chain,
        blast_radius=_blast_radius(heads, approvals, others, [c.outcome for c in calls.values() if c.outcome]),
        policy_versions=_versions(heads, approvals),
        pins=_pins(heads),
        services=tuple(service_identity(s, heads, before, about) for s in sorted(services)),
        timeline=tuple(timeline),
        records_in_window=len(window), records_matched=sum(1 for r in window if r.request_id in chosen))


_sorted = sorted_text


def _blast_radius(heads: Sequence[AuditRecord], approvals: Sequence[AuditRecord], others: Sequence[AuditRecord],
                  outcomes: Sequence[AuditRecord]) -> BlastRadius:
    named = [*heads, *approvals]  # refused attempts reached no tool: counted, not in the radius
    who = [_principal(r) for r in named]
    effects: dict[str, int] = {}
    for record in heads:
        effect = text(get(record.fields, "decision", "effect")) or ("rejected" if record.kind == "rejected" else None)
        if effect is not None:
            effects[effect] = effects.get(effect, 0) + 1
    for record in others:
        if record.kind == "attempt" and type(count := get(record.fields, "count")) is int:
            effects["refused attempt"] = effects.get("refused attempt", 0) + count
    classes = [get(r.fields, "output", "classification") for r in outcomes]
    classes += [get(r.fields, "retention_class") for r in heads]
    return BlastRadius(
        tools=_sorted(get(r.fields, "tool", "name") for r in named),
        services=_sorted(get(r.fields, "tool", "service") for r in heads),
        agents=_sorted(w.get("agent_id") for w in who), users=_sorted(w.get("user_id") for w in who),
        clients=_sorted(w.get("client_id") for w in who), tenants=_sorted(w.get("tenant") for w in who),
        classifications=_sorted(classes), effects=tuple(sorted(effects.items())))


def _versions(heads: Sequence[AuditRecord], approvals: Sequence[AuditRecord]) -> tuple[VersionSeen, ...]:
    seen: dict[str, list[float]] = {}
    for record in heads:
        version = get(record.fields, "decision", "policy_version")
        if record.kind == "decision":
            seen.setdefault(version if isinstance(version, str) else NOT_RECORDED, []).append(record.ts)
    for record in approvals:
        if isinstance(version := get(record.fields, "policy_version"), str):
            seen.setdefault(version, []).append(record.ts)
    return tuple(VersionSeen(v, len(t), min(t), max(t)) for v, t in sorted(seen.items(), key=lambda i: min(i[1])))


def _pins(heads: Sequence[AuditRecord]) -> tuple[PinSeen, ...]:
    seen: dict[tuple[str, str, str], int] = {}
    for record in heads:
        name = text(get(record.fields, "tool", "name"))
        if record.kind != "decision" or name is None:
            continue
        key = (name, text(get(record.fields, "tool", "definition_hash")) or NOT_RECORDED,
               text(get(record.fields, "tool", "service")) or NOT_RECORDED)
        seen[key] = seen.get(key, 0) + 1
    return tuple(PinSeen(tool, pin, service, count) for (tool, pin, service), count in sorted(seen.items()))


def _approval_events(approvals: Sequence[AuditRecord]) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = {}
    for record in approvals:
        approval_id = text(get(record.fields, "approval_id"))
        if approval_id is not None:
            by_id.setdefault(approval_id, []).append(_approval_event(record))
    return by_id


def _approval_event(record: AuditRecord) -> str:
    event = text(get(record.fields, "event")) or NOT_RECORDED
    approver = text(get(record.fields, "approver", "user_id")) or text(get(record.fields, "approver", "client_id"))
    return event if approver is None else f"{event} by {approver}"


def _hashed(arguments: object) -> int:
    """How many argument values the record holds only as keyed hashes (at any depth)."""
    if isinstance(arguments, str):
        return int(arguments.startswith(KEYED_HASH_PREFIX))
    if isinstance(arguments, Mapping):
        return sum(_hashed(v) for v in arguments.values())
    if isinstance(arguments, list):
        return sum(_hashed(v) for v in arguments)
    return 0


def _redactions(outcome: AuditRecord | None) -> tuple[int, tuple[str, ...]]:
    """Output-filter redactions (``content.findings``): the redacted count and ``kind:action xN`` labels."""
    findings = get(outcome.fields if outcome is not None else None, "content", "findings")
    if not isinstance(findings, list):
        return 0, ()
    labels, redacted = [], 0
    for finding in findings:
        count = get(finding, "count")
        count = count if type(count) is int else 0
        action = text(get(finding, "action"))
        redacted += count if action == "redact" else 0
        labels.append(f"{text(get(finding, 'kind'))}:{action} x{count}")
    return redacted, tuple(labels)


def _who(record: AuditRecord) -> tuple[str | None, str | None, str | None, str | None]:
    who = _principal(record)
    return text(who.get("agent_id")), text(who.get("user_id")), text(who.get("client_id")), text(who.get("tenant"))


def _call_entry(call: _Call, events: Mapping[str, list[str]]) -> TimelineEntry:
    head, fields = call.head, call.head.fields
    ids = sorted(i for i in (text(get(fields, "approval", "id")), text(get(fields, "approval_presented", "id")))
                 if i is not None)
    redacted, findings = _redactions(call.outcome)
    rule_ids, reasons = get(fields, "decision", "rule_ids"), get(fields, "decision", "reasons")
    return TimelineEntry(
        index=head.index, ts=head.ts, request_id=head.request_id,
        kind="call" if head.kind == "decision" else "rejected",
        tool=text(get(fields, "tool", "name")), service=text(get(fields, "tool", "service")), who=_who(head),
        effect=text(get(fields, "decision", "effect")) or text(get(fields, "reason")),
        rule_ids=_sorted(rule_ids) if isinstance(rule_ids, list) else (),
        reasons=tuple(r for r in reasons if isinstance(r, str)) if isinstance(reasons, list) else (),
        policy_version=text(get(fields, "decision", "policy_version")),
        approval_events=tuple(e for i in dict.fromkeys(ids) for e in events.get(i, ())),
        arguments=get(fields, "arguments"), arguments_hashed=_hashed(get(fields, "arguments")),
        redactions=redacted, findings=findings,
        outcome=None if call.outcome is None else text(get(call.outcome.fields, "outcome")),
        error_code=get(call.outcome.fields if call.outcome else fields, "error_code"),
        classification=None if call.outcome is None else text(get(call.outcome.fields, "output", "classification")))


def _approval_entry(record: AuditRecord) -> TimelineEntry:
    fields = record.fields
    rule_ids, reason = get(fields, "rule_ids"), text(get(fields, "reason"))
    return TimelineEntry(
        index=record.index, ts=record.ts, request_id=record.request_id, kind="approval",
        tool=text(get(fields, "tool", "name")), service=None, who=_who(record),
        effect=_approval_event(record), rule_ids=_sorted(rule_ids) if isinstance(rule_ids, list) else (),
        reasons=() if reason is None else (reason,), policy_version=text(get(fields, "policy_version")),
        approval_events=(), arguments=None, arguments_hashed=0, redactions=0, findings=(), outcome=None,
        error_code=None, classification=None)


def _other_entry(record: AuditRecord) -> TimelineEntry:
    """An attempt, a retention run, or (unfiltered) an outcome whose decision lies before the window."""
    fields = record.fields
    attempt = record.kind == "attempt"
    detail = f"{text(get(fields, 'reason'))} x{get(fields, 'count')}" if attempt else None
    return TimelineEntry(
        index=record.index, ts=record.ts, request_id=record.request_id, kind=record.kind,
        tool=text(get(fields, "tool", "name")), service=None, who=_who(record) if attempt else (None,) * 4,
        effect=detail, rule_ids=(), reasons=(), policy_version=None, approval_events=(), arguments=None,
        arguments_hashed=0, redactions=_redactions(record)[0], findings=_redactions(record)[1],
        outcome=None if attempt else text(get(fields, "outcome")), error_code=get(fields, "error_code"),
        classification=text(get(fields, "output", "classification")))
