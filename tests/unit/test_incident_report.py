"""The pure incident report builder and its Markdown/JSON renderers, over synthetic records."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from portcullis.audit import make_record
from portcullis.audit.incident import build_report
from portcullis.audit.incident_model import NOT_RECORDED, ChainRange, IncidentFilter, IncidentReport
from portcullis.audit.record import GENESIS_HASH, AuditRecord
from portcullis.cli.incident_render import md, render_json, render_markdown
from tests.unit.test_audit_query import ALICE, BOB, SCENARIO, T0, decision, outcome, principal, rejected

CHAIN = ChainRange("verified", "ok", 0, "a" * 64, 10, "b" * 64, 11, checkpoints=(4, 8), signed_through=8)


def chain_of(entries: Sequence[tuple[str, str, dict[str, Any]]], start_ts: float = T0 + 1) -> list[AuditRecord]:
    """``entries`` as linked records, one second apart from ``start_ts``."""
    records, prev = [], GENESIS_HASH
    for i, (kind, request_id, fields) in enumerate(entries):
        record = make_record(i, start_ts + i, request_id, kind, json.loads(json.dumps(fields)), prev)
        records.append(record)
        prev = record.hash
    return records


def spawn(service: str, *, unsafe: Sequence[str] = (), outcome_: str = "spawning") -> dict[str, Any]:
    return {"event": "spawn", "service": service, "launcher": "module", "program": f"demo.{service}",
            "outcome": outcome_, "env_names": ["PATH"],
            "confinement": {"backend": "bubblewrap", "network": "none", "unsafe": list(unsafe), "view": [],
                            "limits": None}}


def approval(event: str, approval_id: str, *, approver: str | None = None, reason: str = "") -> dict[str, Any]:
    fields: dict[str, Any] = {"event": event, "approval_id": approval_id, "status": event,
                              "tool": {"name": "crm.lookup"}, "arguments_hash": "sha256:00",
                              "requester": principal("support-bot", "bob", tenant="globex"),
                              "policy_version": "2027-01-01.1", "rule_ids": ["crm-pii"], "required": 1,
                              "approvals": 0, "expires_at": T0 + 900, "environment": "prod"}
    if approver is not None:
        fields["approver"] = {"user_id": approver, "client_id": "console"}
    if reason:
        fields["reason"] = reason
    return fields


def report(flt: IncidentFilter, entries: Sequence[tuple[str, str, dict[str, Any]]] = SCENARIO) -> IncidentReport:
    return build_report(chain_of(entries), flt, CHAIN)


def test_an_unfiltered_window_names_every_tool_principal_tenant_and_classification() -> None:
    """The blast radius of the whole scenario: distinct tools, services, agents, users, clients, tenants."""
    radius = report(IncidentFilter(since=T0)).blast_radius
    assert radius.tools == ("billing.delete_all", "billing.get_invoice", "billing.refund", "crm.lookup", "crm.notes")
    assert radius.services == ("billing", "crm")
    assert radius.agents == ("billing-bot", "support-bot")
    assert radius.users == ("alice", "bob", "carol")
    assert radius.clients == ("billing-bot-client", "support-bot-client")
    assert radius.tenants == ("acme", "globex")
    assert radius.classifications == ("internal",)
    assert dict(radius.effects) == {"allow": 4, "deny": 1, "rejected": 1, "require_approval": 1}


def test_the_timeline_joins_each_outcome_to_its_decision_in_time_order() -> None:
    """Interleaved decisions and outcomes come out as one row per call, ordered by time."""
    timeline = report(IncidentFilter(since=T0)).timeline
    assert [(e.request_id, e.kind, e.effect, e.outcome) for e in timeline] == [
        ("req-1", "call", "allow", "ok"), ("req-2", "call", "deny", None),
        ("req-3", "call", "require_approval", None), ("req-4", "rejected", "unknown_tool", None),
        ("req-5", "call", "allow", "timeout"), ("req-6", "call", "allow", "ok"),
        ("req-7", "call", "allow", "tool_error")]
    refund = timeline[1]
    assert refund.arguments_hashed == 1 and refund.arguments["card"].startswith("hmac-sha256:")
    assert timeline[4].error_code == -31003 and timeline[6].rule_ids == ("crm-notes", "crm-read")


@pytest.mark.parametrize(("flt", "requests"), [
    (dict(agent="billing-bot"), ["req-1", "req-2", "req-4", "req-6"]),
    (dict(user="alice"), ["req-1", "req-2", "req-4"]),
    (dict(tool="crm.lookup"), ["req-3", "req-5"]),
    (dict(tenant="globex"), ["req-3", "req-5", "req-7"]),
    (dict(request_id="req-6"), ["req-6"]),
    (dict(agent="billing-bot", user="carol"), ["req-6"]),  # AND, not OR
    (dict(agent="billing-bot", tenant="globex"), []),
    (dict(tool="crm.notes", user="alice"), []),
    (dict(agent="nobody"), []),
])
def test_filters_combine_with_and(flt: dict[str, str], requests: list[str]) -> None:
    """Every given filter must match a request's decision or rejection; its outcome comes along."""
    built = report(IncidentFilter(since=T0, **flt))
    assert [e.request_id for e in built.timeline] == requests
    assert built.records_matched == sum(1 for _, rid, _ in SCENARIO if rid in requests)


def test_the_window_is_inclusive_and_outcomes_after_it_are_left_out() -> None:
    """Records at exactly since/until are in; req-6's outcome at index 9 falls outside an until at 8."""
    built = report(IncidentFilter(since=T0 + 1 + 5, until=T0 + 1 + 8))  # indexes 5..8
    assert [(e.request_id, e.outcome) for e in built.timeline] == [("req-5", "timeout"), ("req-6", None),
                                                                   ("req-7", None)]
    assert built.records_in_window == 4


def test_policy_versions_pins_and_reported_service_versions_are_what_decisions_name() -> None:
    """Versions come from decision records; the build identity is said to be not recorded."""
    entries = [*SCENARIO[:2], ("decision", "req-x", {**decision("billing.get_invoice", ALICE, "allow", ["r"]),
                                                     "decision": {"effect": "allow", "reasons": [], "rule_ids": ["r"],
                                                                  "policy_version": "v2"}})]
    built = report(IncidentFilter(since=T0), entries)
    assert [(v.version, v.decisions) for v in built.policy_versions] == [("2027-01-01.1", 1), ("v2", 1)]
    assert [(p.tool, p.decisions) for p in built.pins] == [("billing.get_invoice", 2)]
    assert built.pins[0].definition_hash.startswith("sha256:")
    [billing] = built.services
    assert billing.reported_versions == ("1.4.2",) and billing.build == NOT_RECORDED
    assert built.manifest_set_version == NOT_RECORDED


def test_spawn_records_show_the_confinement_in_force_before_and_during_the_window() -> None:
    """The last spawn before the window and every spawn inside it, for the services touched."""
    entries = [("spawn", "spawn-1", spawn("billing")),
               ("spawn", "spawn-2", spawn("billing", unsafe=["unsafe_host_network"])),
               ("spawn", "spawn-3", spawn("crm")), *SCENARIO[:2],
               ("spawn", "spawn-4", spawn("billing", outcome_="refused") | {"reason": "sandbox_unavailable"})]
    built = report(IncidentFilter(since=T0 + 1 + 3, agent="billing-bot"), entries)
    [billing] = built.services  # crm was not touched by the matched calls
    assert [(s.index, s.before_window, s.unsafe, s.outcome, s.reason) for s in billing.spawns] == [
        (1, True, ("unsafe_host_network",), "spawning", None), (5, False, (), "refused", "sandbox_unavailable")]


def test_approval_events_attach_to_the_call_that_presented_the_approval() -> None:
    """Approval records are their own rows and are listed on the call that named the approval."""
    held = decision("crm.lookup", BOB, "allow", ["crm-pii"]) | {
        "approval_presented": {"id": "ap-1", "via": "meta", "poll": False, "result": "redeemed"}}
    entries = [("decision", "req-3", decision("crm.lookup", BOB, "require_approval", ["crm-pii"])),
               ("approval", "req-3", approval("proposed", "ap-1")),
               ("approval", "req-3", approval("approved", "ap-1", approver="dana")),
               ("decision", "req-9", held), ("outcome", "req-9", outcome("ok"))]
    built = report(IncidentFilter(since=T0, tenant="globex"), entries)
    assert [(e.kind, e.effect) for e in built.timeline] == [
        ("call", "require_approval"), ("approval", "proposed"), ("approval", "approved by dana"), ("call", "allow")]
    assert built.timeline[-1].approval_events == ("proposed", "approved by dana")


def test_output_filter_findings_count_as_redactions() -> None:
    """content.findings on the outcome: redact actions are counted, every finding is labelled."""
    content = {"findings": [{"kind": "aws_access_key_id", "action": "redact", "count": 2},
                            {"kind": "email", "action": "flag", "count": 1}]}
    entries = [("decision", "r", decision("billing.get_invoice", ALICE, "allow", ["a"])),
               ("outcome", "r", outcome("ok") | {"content": content})]
    [entry] = report(IncidentFilter(since=T0), entries).timeline
    assert entry.redactions == 2 and entry.findings == ("aws_access_key_id:redact x2", "email:flag x1")


def test_tampered_field_types_read_as_absent_instead_of_crashing() -> None:
    """A record whose fields hold the wrong types (tampering) still gives a report."""
    entries = [("decision", "r", {"tool": "x", "principal": ["a"], "decision": 5, "arguments": None}),
               ("outcome", "r", {"outcome": 7, "output": "big", "content": {"findings": "many"}})]
    [entry] = report(IncidentFilter(since=T0), entries).timeline
    assert (entry.tool, entry.effect, entry.outcome, entry.redactions) == (None, None, None, 0)


@pytest.mark.parametrize("bad", [dict(since=float("nan")), dict(since=T0, until=T0 - 1), dict(since=T0, agent=""),
                                 dict(since=T0, tool=5)])
def test_a_malformed_filter_is_refused(bad: dict[str, Any]) -> None:
    """NaN times, an until before since and empty or non-string values are errors, not empty reports."""
    with pytest.raises(ValueError):
        IncidentFilter(**bad)


# --------------------------------------------------------------------------- hostile strings

HOSTILE = [
    "**bold** _em_ ~~strike~~",
    "[click](https://evil.example/x) ![img](https://evil.example/i.png)",
    "a | b | c",
    "`code` ```fence```",
    "line one\nline two\r\n# heading",
    "<script>alert(1)</script> &amp; &#124;",
    "evil\u202ereversed\u202c",
    "zero\u200bwidth\u2060joiner\ufeff",
    "\x1b[31mred\x1b]8;;https://evil.example\x07link",
    "back\\slash \\| \\`",
    ":smile: @user $x$",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_md_leaves_no_markup_pipe_newline_or_invisible_character(hostile: str) -> None:
    """Every character that could open markup is escaped; nothing invisible or line-breaking is left."""
    shown = md(hostile)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert not re.search(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]", shown)
    assert not re.search(r"(?<!\\)(?:\\\\)*[|`*_\[\]<>&~!#]", shown)  # every markup character escaped


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_tool_names_arguments_and_reasons_cannot_break_the_markdown_tables(hostile: str) -> None:
    """A hostile tool name, principal, argument and reason keep every table row on one line with its cells."""
    who = principal(hostile, hostile, tenant=hostile)
    fields = decision("svc.tool", who, "deny", [hostile], note=hostile)
    fields["tool"]["name"] = fields["tool"]["service"] = hostile
    fields["decision"]["reasons"] = [hostile]
    fields["decision"]["policy_version"] = fields["tool"]["definition_hash"] = hostile
    fields["tool"]["service_version"] = hostile
    child = spawn(hostile, unsafe=[hostile]) | {"program": hostile, "launcher": hostile}
    refused = rejected(hostile, who, hostile)
    entries = [("spawn", "spawn-1", child), ("decision", hostile, fields), ("rejected", "r2", refused),
               ("approval", hostile, approval(hostile, hostile, approver=hostile, reason=hostile)),
               ("outcome", hostile, outcome(hostile) | {"output": {"bytes": 1, "classification": hostile}})]
    text = render_markdown(report(IncidentFilter(since=T0), entries))
    for header, width in (("| # |", 15), ("| what |", 3), ("| policy version |", 4), ("| tool |", 4),
                          ("| service |", 4)):
        table = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
        assert table, header
        for row in table:
            assert len(re.findall(r"(?<!\\)(?:\\\\)*\|", row)) == width + 1, row
    assert hostile not in text or hostile.isalnum()
    assert "\u202e" not in text and "\u200b" not in text and "\x1b" not in text


@pytest.mark.parametrize("hostile", HOSTILE)
def test_json_output_is_plain_json_that_round_trips_hostile_values(hostile: str) -> None:
    """JSON output is ASCII-only, parses back, and holds the values exactly as recorded."""
    fields = decision("svc.tool", principal(hostile, "u"), "allow", ["r"], note=hostile)
    text = render_json(report(IncidentFilter(since=T0), [("decision", "r", fields)]))
    assert text.isascii()
    parsed = json.loads(text)
    [entry] = parsed["timeline"]
    assert entry["arguments"]["note"] == hostile and entry["who"]["agent"] == hostile
    assert parsed["chain"]["status"] == "verified" and parsed["chain"]["ok"] is True


def test_markdown_states_a_failed_chain_and_the_range_it_read() -> None:
    """A failed verification is the first thing in the chain section, with the index and reason."""
    failed = ChainRange("FAILED", "record hash does not match its content", 3, "c" * 64, 9, "d" * 64, 3,
                        first_bad_index=3)
    text = render_markdown(build_report(chain_of(SCENARIO), IncidentFilter(since=T0), failed))
    assert "**verification: FAILED** at index 3: record hash does not match its content" in text
    assert "range read: records 3 to 9" in text and "c" * 64 in text and "d" * 64 in text


def test_refused_attempts_are_counted_but_not_in_the_blast_radius() -> None:
    """An attempt refused before the pipeline reached no tool: it is a timeline row and a count only."""
    attempt = {"source": "203.0.113.7", "reason": "invalid_token", "status": 401, "detail": "expired",
               "method": "tools/call", "tool": {"name": "billing.refund"}, "named": "headers", "principal": None,
               "token_hash": "hmac-sha256:3f9a0c51d2e4b7a6", "count": 3, "first_ts": T0, "last_ts": T0,
               "window_s": 10.0}
    built = report(IncidentFilter(since=T0), [*SCENARIO[:2], ("attempt", "attempt-1", attempt)])
    assert built.blast_radius.tools == ("billing.get_invoice",)
    assert dict(built.blast_radius.effects) == {"allow": 1, "refused attempt": 3}
    assert [(e.kind, e.effect) for e in built.timeline][-1] == ("attempt", "invalid_token x3")
    assert report(IncidentFilter(since=T0, agent="billing-bot"),
                  [("attempt", "attempt-1", attempt)]).timeline == ()


def test_an_outcome_whose_decision_is_before_the_window_is_its_own_row_when_unfiltered() -> None:
    """Unfiltered, the window's first record (req-1's outcome) is shown; a filter cannot attribute it."""
    assert [(e.kind, e.request_id, e.outcome) for e in report(IncidentFilter(since=T0 + 2)).timeline][:2] == [
        ("outcome", "req-1", "ok"), ("call", "req-2", None)]
    assert report(IncidentFilter(since=T0 + 2, user="alice")).timeline[0].request_id == "req-2"


def identity(service: str, version: str, *, sha: str = "a" * 64, **extra: Any) -> dict[str, Any]:
    return {"event": "connected", "service": service, "transport": "stdio",
            "server_info": {"name": service, "version": version}, "protocol_version": "2025-11-25",
            "executable": {"path": "/usr/bin/python3.12", "sha256": sha}, "module": f"demo.{service}", **extra}


def test_the_build_identity_in_force_is_the_last_one_recorded_before_the_window() -> None:
    """Looked up before --since however far back; later identities of other services do not count."""
    entries = [("service_identity", "identity-1", identity("billing", "1.0", sha="0" * 64)),
               ("service_identity", "identity-2", identity("billing", "1.1")),
               ("service_identity", "identity-3", identity("crm", "9.9")), *SCENARIO[:2]]
    built = report(IncidentFilter(since=T0 + 1 + 3, agent="billing-bot"), entries)
    [billing] = built.services
    [seen] = billing.builds
    assert (seen.index, seen.before_window, seen.server_version, seen.executable_sha256) == (1, True, "1.1", "a" * 64)
    assert seen.module == "demo.billing" and seen.executable == "/usr/bin/python3.12"
    assert not billing.build_changed
    assert billing.build == f"billing 1.1 (stdio, 2025-11-25; executable sha256:{'a' * 64}; module demo.billing)"
    assert not [e for e in built.timeline if e.kind == "service_identity"]  # under services, not the timeline


def test_an_identity_that_changed_in_the_window_is_flagged_with_both() -> None:
    """A restart with another version inside the window: both identities, build_changed, in JSON and Markdown."""
    entries = [("service_identity", "identity-1", identity("billing", "1.0")), *SCENARIO[:1],
               ("service_identity", "identity-2", identity("billing", "1.0")),  # a reconnect, same build: folded
               ("service_identity", "identity-3", identity("billing", "2.0", sha="b" * 64)), *SCENARIO[1:2]]
    built = report(IncidentFilter(since=T0, agent="billing-bot"), entries)
    [billing] = built.services
    assert [(b.index, b.records, b.server_version) for b in billing.builds] == [(0, 2, "1.0"), (3, 1, "2.0")]
    assert billing.build_changed
    [service] = json.loads(render_json(built))["services"]
    assert service["build_changed"] is True
    assert [b["executable_sha256"] for b in service["builds"]] == ["a" * 64, "b" * 64]
    markdown = render_markdown(built)
    assert "**CHANGED in the window (2 identities):**" in markdown
    assert "sha256 " + "b" * 64 in markdown


def test_no_identity_record_still_says_not_recorded() -> None:
    """A trail from before this record existed (or a test double) never gets a guessed build."""
    [billing] = report(IncidentFilter(since=T0, agent="billing-bot"), SCENARIO[:2]).services
    assert billing.build == NOT_RECORDED and billing.builds == () and not billing.build_changed
    assert "| billing | 1.4.2 | not recorded |" in render_markdown(report(IncidentFilter(since=T0, agent="billing-bot"),
                                                                          SCENARIO[:2]))


def test_hostile_recorded_identity_text_renders_literally_in_markdown() -> None:
    """An upstream version with markup and a bidi override (escaped at record time) cannot format the report."""
    hostile = identity("billing", "1.0 | **x** [a](http://e) \\u{202E}", executable={"path": "/x", "sha256": None})
    built = report(IncidentFilter(since=T0, agent="billing-bot"), [("service_identity", "identity-1", hostile),
                                                                    *SCENARIO[:1]])
    row = next(line for line in render_markdown(built).splitlines() if line.startswith("| billing |"))
    assert row.count(" | ") == 3  # the pipe in the version did not split a cell
    assert "**x**" not in row and "[a](" not in row and "\u202e" not in row
    assert re.search(r"\\\*\\\*x\\\*\\\*", row)
