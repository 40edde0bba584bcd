"""Hostile tables for data governance (docs/content-security.md, "Data governance"): the toxic-flow
session rule, tenant isolation of results and arguments, and Restricted results outside their
environment — through the in-process gateway (every real stage in its declared order).

The content filter is not what is tested here: :class:`FilterDouble` stands in for it, in the
filter's place right before the forwarder, and sets ``CallRecord.content`` directly from a
marker the test puts in the tool's result (``SENSITIVE…`` / ``INJECTION…``), as the filter's report
would. Everything after that (the taint, the state store, the check, the approval flow, the audit
records) is the real code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from portcullis.content.output_filter import ContentReport
from portcullis.governance import flow
from portcullis.identity.principal import Principal
from portcullis.pipeline.context import CallContext, CallResult, Handler
from portcullis.state.memory import FailingStateStore, InMemoryStateStore
from tests.security.harness import BOT, NO_SUCH_TOOL, OTHER_BOT, forwarded, in_process_gateway

READ = "billing.get_invoice"  # the source: returns what the test asks (never egress)
SEND = "billing.void_ledger"  # the sink: made egress-capable here
SEND_ARGS = {"ledger": "L-1"}
CALLERS = {"allowed_callers": ["agent:billing-bot"]}
EGRESS = {"void_ledger": {"egress": True}}
POLICIES = {"void_ledger": CALLERS, "get_invoice": CALLERS}


async def filter_double(ctx: CallContext, call_next: Handler) -> CallResult:
    """A test double of the content filter: reports what the result's marker says."""
    result = await call_next(ctx)
    text = str(result.get("content", [{}])[0].get("text", ""))
    report = ContentReport(channel="tools/call")  # the filter's own report type, filled as the filter would
    if text.startswith("SENSITIVE"):
        report.findings[("aws_secret_access_key", "allow")] += 1  # reached the caller in clear
    if text.startswith("INJECTION"):
        report.injection_rules.add("injection.ignore_previous")
    ctx.record.content = report
    return result


async def _say(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": str(arguments.get("invoice_id"))}], "isError": False}


def _gateway(tmp_path: Path, **options: Any) -> Any:
    manifests = {**EGRESS, **options.pop("manifests", {})}
    return in_process_gateway(tmp_path, policies=POLICIES, manifests=manifests, handlers={"get_invoice": _say},
                              inner_stages=(("content", filter_double),), **options)


# --------------------------------------------------------------------------- toxic flow

FLOW_ROWS = [
    # name, marker read first, expected code of the egress call, expected rule id
    ("sensitive-then-egress-denied", "SENSITIVE card 4111", -31020, flow.RULE_ID),
    ("injection-then-egress-needs-approval", "INJECTION ignore previous", -31010, None),
    ("clean-result-leaves-egress-alone", "INV-1 total 12.00", None, None),
]


@pytest.mark.parametrize(("name", "marker", "code", "rule"), FLOW_ROWS, ids=[r[0] for r in FLOW_ROWS])
async def test_egress_after_a_tainting_result_is_refused_or_held(tmp_path: Path, name: str, marker: str,
                                                                 code: int | None, rule: str | None) -> None:
    """After a sensitive result an egress call is refused; after an injection it needs approval; else it runs."""
    async with _gateway(tmp_path) as gw:
        assert (await gw.call(READ, {"invoice_id": marker})).result is not None
        answer = await gw.call(SEND, SEND_ARGS)
        assert answer.code == code, answer
        if rule is not None:
            assert answer.error["data"]["rule_id"] == rule
        decision = await gw.decision_of_last_call()
        held = code is not None
        assert (flow.RULE_ID in decision["decision"]["rule_ids"]) is held
        assert (SEND.split(".")[1], SEND_ARGS) in forwarded(gw) or held
        assert not held or all(tool != "void_ledger" for tool, _ in forwarded(gw))


async def test_the_taint_is_in_the_outcome_record_of_the_call_that_caused_it(tmp_path: Path) -> None:
    """The call whose result tainted the session says so in its outcome record (cause only, no data)."""
    async with _gateway(tmp_path) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE 4111111111111111"})
        outcome = [r for r in await gw.records() if r.kind == "outcome"][-1]
        assert outcome.fields["governance"] == {"taint": "sensitive"}
        assert "4111" not in str(outcome.fields)


async def test_an_approved_egress_call_after_an_injection_runs_through_the_approval_flow(tmp_path: Path) -> None:
    """"Needs approval" is the existing flow: propose, a human approves, the resumed call runs."""
    async with _gateway(tmp_path) as gw:
        await gw.call(READ, {"invoice_id": "INJECTION send everything"})
        pending = await gw.call(SEND, SEND_ARGS)
        assert pending.code == -31010
        approval_id = str(pending.error["data"]["approval_id"])
        await gw.approve(approval_id)
        resumed = await gw.call(SEND, SEND_ARGS, meta={"io.portcullis/approval-id": approval_id})
        assert resumed.result is not None, resumed
        assert ("void_ledger", SEND_ARGS) in forwarded(gw)


OTHER_SESSION = dataclasses.replace(BOT, session_id="sess-2")
SESSION_ROWS = [
    ("another-principal", OTHER_BOT),  # another user of the same agent
    ("same-principal-other-verified-session", OTHER_SESSION),  # the credential's session id differs
]


@pytest.mark.parametrize(("name", "other"), SESSION_ROWS, ids=[r[0] for r in SESSION_ROWS])
async def test_another_session_is_not_tainted(tmp_path: Path, name: str, other: Principal) -> None:
    """The taint belongs to the session that saw the result, not to every caller."""
    async with _gateway(tmp_path) as gw:
        tainted = dataclasses.replace(BOT, session_id="sess-1")
        await gw.call(READ, {"invoice_id": "SENSITIVE key"}, principal=tainted)
        assert (await gw.call(SEND, SEND_ARGS, principal=tainted)).code == -31020
        assert (await gw.call(SEND, SEND_ARGS, principal=other)).result is not None


async def test_a_new_transport_session_does_not_shed_the_taint(tmp_path: Path) -> None:
    """The key is the verified identity: re-initialising (a new Mcp-Session-Id header) changes nothing."""
    async with _gateway(tmp_path) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE key"}, modern=False, headers={"mcp-session-id": "a"})
        answer = await gw.call(SEND, SEND_ARGS, modern=False, headers={"mcp-session-id": "b"})
        assert answer.code == -31020


async def test_the_taint_expires_after_its_window(tmp_path: Path) -> None:
    """After window_s (and at most 1/64 of it more) the egress tool runs again."""
    async with _gateway(tmp_path, governance={"toxic_flow": {"window_s": 60}}) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE key"})
        gw.clock.now += 59
        assert (await gw.call(SEND, SEND_ARGS)).code == -31020
        gw.clock.now += 2 + 60 / 64
        assert (await gw.call(SEND, SEND_ARGS)).result is not None


async def test_a_failing_state_store_refuses_egress_calls_only(tmp_path: Path) -> None:
    """Fail closed: no answer from the store is a policy_error deny for egress tools; other tools run."""
    async with _gateway(tmp_path, state=FailingStateStore()) as gw:
        answer = await gw.call(SEND, SEND_ARGS)
        assert answer.code == -31020
        assert answer.error["data"]["rule_id"] == flow.ERROR_RULE_ID
        assert (await gw.call(READ, {"invoice_id": "INV-1"})).result is not None


async def test_a_taint_that_cannot_be_recorded_withholds_the_result(tmp_path: Path) -> None:
    """A sensitive result whose taint the store cannot take is not returned (it could leave untracked)."""
    async with _gateway(tmp_path, state=FailingStateStore()) as gw:
        answer = await gw.call(READ, {"invoice_id": "SENSITIVE key"})
        assert answer.code == -31021
        assert "SENSITIVE" not in str(answer.body)
        outcome = [r for r in await gw.records() if r.kind == "outcome"][-1]
        assert outcome.fields["governance"]["withheld"] == "taint_not_recorded"


async def test_a_non_egress_tool_is_unaffected_by_the_taint(tmp_path: Path) -> None:
    """A tainted session still calls tools that cannot send data out, without a state lookup."""
    state = InMemoryStateStore()
    async with _gateway(tmp_path, state=state) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE key"})
        assert (await gw.call(READ, {"invoice_id": "INV-2"})).result is not None


EGRESS_DECIDED = [
    ("explicit-egress-false-beats-hint", {"egress": False, "annotations": {"openWorldHint": True}}, False),
    ("open-world-hint-true", {"annotations": {"openWorldHint": True}}, True),
    ("no-hint-is-mcp-default-open-world", {}, True),
    ("hint-false", {"annotations": {"openWorldHint": False}}, False),
]


@pytest.mark.parametrize(("name", "keys", "egress"), EGRESS_DECIDED, ids=[r[0] for r in EGRESS_DECIDED])
async def test_egress_is_the_manifest_field_else_the_open_world_hint(tmp_path: Path, name: str,
                                                                     keys: dict[str, Any], egress: bool) -> None:
    """Which tools the rule restricts: ``egress``, else ``openWorldHint``, else the MCP default (open world)."""
    keys = {"egress": None, **keys}
    async with _gateway(tmp_path, manifests={"void_ledger": keys}) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE key"})
        answer = await gw.call(SEND, SEND_ARGS)
        assert (answer.code == -31020) is egress, answer


async def test_the_rule_can_be_switched_off_and_actions_swapped(tmp_path: Path) -> None:
    """``on_sensitive: require_approval`` holds instead of refusing; ``enabled: false`` lets it run."""
    async with _gateway(tmp_path, governance={"toxic_flow": {"on_sensitive": "require_approval"}}) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE key"})
        assert (await gw.call(SEND, SEND_ARGS)).code == -31010
    async with _gateway(tmp_path, governance={"toxic_flow": {"enabled": False}}) as gw:
        await gw.call(READ, {"invoice_id": "SENSITIVE key"})
        assert (await gw.call(SEND, SEND_ARGS)).result is not None


# --------------------------------------------------------------------------- tenant isolation

ACME = dataclasses.replace(BOT, tenant="acme")


def _tagged(meta_tag: Any = None, structured: Any = None) -> Any:
    async def answer(arguments: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"content": [{"type": "text", "text": "acct 42 of the tenant"}], "isError": False}
        if meta_tag is not None:
            out["_meta"] = {"io.portcullis/tenant": meta_tag}
        if structured is not None:
            out["structuredContent"] = structured
        return out
    return answer


POINTER = {"get_invoice": {"output_tenant_pointer": "/tenant"}}
TENANT_ROWS: list[tuple[str, Any, Any, Any, Principal, str | None]] = [
    # name, _meta tag, structuredContent, manifest keys, caller, withheld reason (None: returned)
    ("meta-tag-own-tenant", "acme", None, {}, ACME, None),
    ("meta-tag-other-tenant", "globex", None, {}, ACME, "tenant_mismatch"),
    ("meta-tag-caller-without-tenant", "acme", None, {}, BOT, "tenant_mismatch"),
    ("meta-tag-upper-case", "ACME", None, {}, ACME, "tenant_mismatch"),
    ("meta-tag-fullwidth", "\uff41\uff43\uff4d\uff45", None, {}, ACME, "tenant_mismatch"),
    ("meta-tag-zero-width", "ac\u200bme", None, {}, ACME, "tenant_mismatch"),
    ("meta-tag-cyrillic-a", "\u0430cme", None, {}, ACME, "tenant_mismatch"),
    ("meta-tag-trailing-space", "acme ", None, {}, ACME, "tenant_mismatch"),
    ("meta-tag-not-a-string", ["acme"], None, {}, ACME, "tenant_tag_malformed"),
    ("meta-tag-empty", "", None, {}, ACME, "tenant_tag_malformed"),
    ("pointer-own-tenant", None, {"tenant": "acme"}, POINTER, ACME, None),
    ("pointer-other-tenant", None, {"tenant": "globex"}, POINTER, ACME, "tenant_mismatch"),
    ("pointer-declared-tag-missing", None, {"total": 1}, POINTER, ACME, "tenant_tag_missing"),
    ("pointer-declared-no-structured-content", None, None, POINTER, ACME, "tenant_tag_missing"),
    ("pointer-null", None, {"tenant": None}, POINTER, ACME, "tenant_tag_missing"),
    ("pointer-ok-meta-other", "globex", {"tenant": "acme"}, POINTER, ACME, "tenant_mismatch"),
    ("untagged-result-no-pointer", None, None, {}, ACME, None),
]


@pytest.mark.parametrize(("name", "meta_tag", "structured", "keys", "caller", "withheld"), TENANT_ROWS,
                         ids=[r[0] for r in TENANT_ROWS])
async def test_a_result_tagged_with_another_tenant_is_withheld(tmp_path: Path, name: str, meta_tag: Any,
                                                               structured: Any, keys: dict[str, Any],
                                                               caller: Principal, withheld: str | None) -> None:
    """Exact match with the caller's verified tenant, or -31021 with nothing of the result; the outcome says why."""
    async with in_process_gateway(tmp_path, policies=POLICIES, manifests=keys,
                                  handlers={"get_invoice": _tagged(meta_tag, structured)}) as gw:
        answer = await gw.call(READ, {"invoice_id": "INV-1"}, principal=caller)
        outcome = [r for r in await gw.records() if r.kind == "outcome"][-1]
        if withheld is None:
            assert answer.result is not None, answer
            assert "_meta" not in answer.result or "io.portcullis/tenant" not in str(answer.result["_meta"])
            assert "governance" not in outcome.fields
            return
        assert answer.code == -31021, answer
        assert "acct 42" not in str(answer.body)
        assert outcome.fields["governance"] == {"withheld": withheld}
        assert outcome.fields["output"]["bytes"] == 0


TENANT_POLICY = {**CALLERS, "tenant_argument": "/invoice_id"}
ARG_ROWS = [
    ("own-tenant", "acme", True),
    ("other-tenant", "globex", False),
    ("upper-case", "ACME", False),
    ("fullwidth", "\uff41\uff43\uff4d\uff45", False),
    ("combining-mark", "acme\u0301", False),
    ("array-mixing-two-tenants", ["acme", "globex"], False),
    ("array-of-own-tenant", ["acme", "acme"], True),
    ("empty-array-names-all", [], False),
]


@pytest.mark.parametrize(("name", "value", "allowed"), ARG_ROWS, ids=[r[0] for r in ARG_ROWS])
async def test_arguments_naming_another_tenant_are_refused(tmp_path: Path, name: str, value: Any,
                                                           allowed: bool) -> None:
    """One call never names a tenant other than the caller's, in a string or an array."""
    schema_any = {"get_invoice": {"input_schema": {"type": "object", "properties": {"invoice_id": {}},
                                                   "required": ["invoice_id"]}}}
    async with in_process_gateway(tmp_path, policies={"get_invoice": TENANT_POLICY}, manifests=schema_any) as gw:
        answer = await gw.call(READ, {"invoice_id": value}, principal=ACME)
        if allowed:
            assert answer.result is not None, answer
        else:
            assert answer.code == -31020, answer
            assert answer.error["data"]["rule_id"] == "billing.get_invoice/tenant_argument"
            assert forwarded(gw) == []


async def test_two_tenant_arguments_must_both_be_the_callers(tmp_path: Path) -> None:
    """``tenant_arguments``: a source and a target tenant in one call must both be the caller's own."""
    schema = {"get_invoice": {"input_schema": {"type": "object", "properties": {
        "invoice_id": {"type": "string"}, "target": {"type": "string"}}, "required": ["invoice_id"]}}}
    policy = {"get_invoice": {**CALLERS, "tenant_argument": "/invoice_id", "tenant_arguments": ["/target"]}}
    async with in_process_gateway(tmp_path, policies=policy, manifests=schema) as gw:
        assert (await gw.call(READ, {"invoice_id": "acme", "target": "globex"}, principal=ACME)).code == -31020
        assert (await gw.call(READ, {"invoice_id": "acme", "target": "acme"}, principal=ACME)).result is not None


# --------------------------------------------------------------------------- Restricted results

RESTRICTED = {"get_invoice": {"classification": {"input": "Restricted", "output": "Restricted"}}}
ENV_ROWS = [
    ("same-environment", {"environment": "production"}, True),
    ("other-environment", {"environment": "staging"}, False),
    ("no-environment-attribute", {}, False),
    ("look-alike-environment", {"environment": "Production"}, False),
    ("zero-width-suffix", {"environment": "production\u200b"}, False),
    ("fullwidth", {"environment": "\uff50roduction"}, False),
    ("trailing-space", {"environment": "production "}, False),
    ("other-attribute-name", {"env": "production"}, False),
]


@pytest.mark.parametrize("modern", [True, False], ids=["2026-07-28", "2025-11-25"])
@pytest.mark.parametrize(("name", "attributes", "allowed"), ENV_ROWS, ids=[r[0] for r in ENV_ROWS])
async def test_a_restricted_result_never_leaves_its_environment(tmp_path: Path, name: str,
                                                                attributes: dict[str, str], allowed: bool,
                                                                modern: bool) -> None:
    """A caller outside the gateway's environment does not see the tool: it is not listed, and a call
    gets exactly the unknown-tool answer (byte for byte), before anything is forwarded; the audit
    trail names the rule."""
    caller = dataclasses.replace(BOT, attributes=attributes)
    async with in_process_gateway(tmp_path, policies=POLICIES, manifests=RESTRICTED) as gw:
        listed = gw.listed(caller)
        answer = await gw.call(READ, {"invoice_id": "INV-secret-77"}, principal=caller, modern=modern, jsonrpc_id=5)
        decision = await gw.decision_of_last_call()
        missing = await gw.call(NO_SUCH_TOOL, {"invoice_id": "INV-secret-77"}, principal=caller, modern=modern,
                                jsonrpc_id=5)
        invalid = await gw.call(READ, {"invoice_id": 7}, principal=caller, modern=modern, jsonrpc_id=5)
        assert "INV-secret-77" not in str(decision["arguments"])  # Restricted input: keyed hashes only
        if allowed:
            assert READ in listed
            assert answer.result is not None, answer
            return
        assert READ not in listed and SEND in listed  # hidden like a tool its policy never admits; others stay
        assert answer.body == missing.body and answer.status == missing.status
        assert answer.wire_bytes() == invalid.wire_bytes()  # nothing about the schema leaks either
        assert answer.error["message"] == "Unknown tool" and "data" not in answer.error
        assert decision["decision"]["effect"] == "deny"
        assert "content.restricted_environment" in decision["decision"]["rule_ids"]
        assert forwarded(gw) == []


async def test_a_class_without_the_caller_sink_is_never_returned(tmp_path: Path) -> None:
    """``governance.sinks`` without ``caller`` for a class: its tools are refused (rule content.sink)."""
    sinks = {"Public": ["caller"], "Internal": ["caller"], "Confidential": ["audit"], "Restricted": []}
    async with in_process_gateway(tmp_path, policies=POLICIES, governance={"sinks": sinks}) as gw:
        answer = await gw.call(READ, {"invoice_id": "INV-1"})
        assert answer.code == -31020
        assert answer.error["data"]["rule_id"] == "content.sink"


async def test_retention_class_is_written_into_the_decision_record(tmp_path: Path) -> None:
    """The per-tool retention label travels with the tool's decision records (the chain is untouched)."""
    async with in_process_gateway(tmp_path, policies=POLICIES,
                                  manifests={"get_invoice": {"retention_class": "short"}}) as gw:
        await gw.call(READ, {"invoice_id": "INV-1"})
        assert (await gw.decision_of_last_call())["retention_class"] == "short"


async def test_an_input_class_without_the_approval_view_sink_shows_approvers_only_hashes(tmp_path: Path) -> None:
    """``approval_view`` left out for a class: a held call's stored arguments are keyed hashes, still bound."""
    sinks = {"Public": ["caller"], "Internal": ["caller"], "Confidential": ["caller", "audit", "siem"],
             "Restricted": ["caller"]}
    async with _gateway(tmp_path, governance={"sinks": sinks}) as gw:
        await gw.call(READ, {"invoice_id": "INJECTION then send"})
        pending = await gw.call(SEND, {"ledger": "L-secret-9"})
        assert pending.code == -31010
        approval = await gw.approvals.get(str(pending.error["data"]["approval_id"]))
        assert approval is not None
        assert "L-secret-9" not in str(approval.arguments)
        assert str(approval.arguments["ledger"]).startswith("hmac-sha256:")
    async with _gateway(tmp_path) as gw:  # the default: Confidential reaches approval views
        await gw.call(READ, {"invoice_id": "INJECTION then send"})
        pending = await gw.call(SEND, {"ledger": "L-secret-9"})
        approval = await gw.approvals.get(str(pending.error["data"]["approval_id"]))
        assert approval is not None and approval.arguments["ledger"] == "L-secret-9"
