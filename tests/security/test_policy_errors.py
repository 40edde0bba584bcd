"""Refusals: a caller that may not see a tool learns nothing; a caller that may see it learns
which one rule refused the call (``-31020``), and nothing else.

* Hidden tool (the gate: not in the caller's ``tools/list``) → byte for byte the answer for a tool
  that does not exist, apart from the JSON-RPC id, in both protocol eras, whatever the arguments.
* Listed tool refused by an argument rule, a time window, a limit, Rego, the risk score or an
  evaluation error → ``-31020 Call refused by policy`` with ``data == {"rule_id"}`` (plus
  ``retry_after_s`` for an exceeded limit, the rule's window); never another failing rule, a
  threshold or a counter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from portcullis.policy.rego import RegoPolicy
from portcullis.state.memory import FailingStateStore
from tests.security.harness import (
    _POLICIES,
    BOT,
    INVOICE,
    NO_SUCH_TOOL,
    REFUND,
    SECRET_TOOL,
    STRANGER,
    forwarded,
    in_process_gateway,
    refund,
)

UNKNOWN_TOOL = {"code": -32602, "message": "Unknown tool"}
REFUSED = -31020

REGO = """package portcullis.t

import rego.v1

deny contains {"id": "no_chargeback_refunds", "reason": "chargeback"} if {
    input.tool.name == "billing.process_refund"
    input.arguments.reason == "chargeback"
}

# two values for one complete rule when the reason is "boom": an evaluation error (policy_error)
flag := 1 if input.arguments.reason == "boom"
flag := 2 if input.arguments.reason == "boom"

deny contains {"id": "never", "reason": "never"} if flag == 3
"""
HOURLY = {"id": "refunds-hourly", "tools": [REFUND], "per": ["agent"], "window_s": 3600, "max_calls": 2}
EUR_DAILY = {"id": "eur-daily", "tools": [REFUND], "per": ["agent"], "window_s": 86400, "max_total": 100,
             "amount_pointer": "/amount", "match": {"/currency": "EUR"}}
OFFICE_HOURS = {**_POLICIES["process_refund"],
                "time_windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "17:00"}]}
RISK_DENIES_HIGH = {"thresholds": {"one_approver": 60, "two_approvers": 60, "deny": 60}}


# these rows are about which rule is named, not the CPU budget: the default 20 ms of thread CPU time was
# used up by a first evaluation on a machine at load 15, and the row saw rego/policy_error
REGO_BUDGET_S = 5.0


@dataclass(frozen=True)
class Row:
    """One refusal of a listed tool: the gateway's options, calls made first, the refused call."""

    name: str
    rule_id: str
    arguments: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    before: Sequence[dict[str, Any]] = ()
    retry_after_s: int | None = None
    tool: str = REFUND


ROWS = [
    Row("over-max-amount", "billing.process_refund/max_amount", refund(600)),
    Row("currency-not-allowed", "billing.process_refund/allowed_currencies", refund(50, currency="JPY")),
    Row("two-failing-rules-name-only-the-first", "billing.process_refund/max_amount", refund(600, currency="JPY")),
    Row("deny-after-an-approval-rule", "billing.process_refund/allowed_currencies", refund(300, currency="JPY")),
    Row("argument-pattern", "billing.process_refund/constraint/order_id/pattern", refund(5, order="X-1")),
    Row("outside-the-time-window", "billing.process_refund/time_windows", refund(5),
        {"policies": {"process_refund": OFFICE_HOURS}}),
    Row("call-count-limit", "limits/refunds-hourly", refund(5), {"limits": [HOURLY]}, (refund(5), refund(6)), 3600),
    Row("running-total-limit", "limits/eur-daily", refund(30, currency="EUR"), {"limits": [EUR_DAILY]},
        (refund(40, currency="EUR"), refund(40, currency="EUR")), 86400),
    Row("amount-that-can-never-fit", "limits/eur-daily", refund(101, currency="EUR"), {"limits": [EUR_DAILY]},
        (), 86400),
    Row("limit-store-unavailable", "limits/policy_error", refund(5),
        {"limits": [HOURLY], "state": FailingStateStore()}),
    Row("rego-denial", "rego/no_chargeback_refunds", {**refund(5), "reason": "chargeback"},
        {"rego": RegoPolicy.compile({"t.rego": REGO}, budget_s=REGO_BUDGET_S)}),
    Row("rego-evaluation-error", "rego/policy_error", {**refund(5), "reason": "boom"},
        {"rego": RegoPolicy.compile({"t.rego": REGO}, budget_s=REGO_BUDGET_S)}),
    Row("risk-score-too-high", "risk/deny", refund(5), {"risk": RISK_DENIES_HIGH}),
    Row("risk-signal-unavailable", "risk/policy_error", refund(5), {"risk": {}, "state": FailingStateStore()}),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_a_listed_tool_refused_by_policy_names_only_the_rule_that_refused_it(tmp_path: Path, row: Row) -> None:
    """-31020 with the one refusing rule's id (and retry_after_s for a limit); nothing else."""
    async with in_process_gateway(tmp_path, **row.options) as gw:
        assert row.tool in gw.listed(BOT)  # the caller already knows the tool
        for arguments in row.before:
            assert (await gw.call(row.tool, arguments)).result is not None
        answer = await gw.call(row.tool, row.arguments)
        sent = len(forwarded(gw))
        record = await gw.decision_of_last_call()
    assert answer.code == REFUSED and answer.error["message"] == "Call refused by policy"
    expected = {"rule_id": row.rule_id}
    if row.retry_after_s is not None:
        expected["retry_after_s"] = row.retry_after_s  # type: ignore[assignment]
    assert answer.error["data"] == expected  # exactly: no other rule, threshold or counter
    assert sent == len(row.before)  # the refused call never reached the service
    assert record["decision"]["effect"] == "deny" and row.rule_id in record["decision"]["rule_ids"]
    others = [rule for rule in record["decision"]["rule_ids"] if rule != row.rule_id]
    assert not any(rule in str(answer.body) for rule in others)  # the audit has them all, the caller one


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_a_caller_that_cannot_see_the_tool_gets_the_unknown_tool_answer_for_the_same_refusal(
        tmp_path: Path, row: Row) -> None:
    """Whatever would refuse the call, a caller the tool is hidden from learns only 'Unknown tool'."""
    async with in_process_gateway(tmp_path, **row.options) as gw:
        assert row.tool not in gw.listed(STRANGER)
        hidden = await gw.call(row.tool, row.arguments, principal=STRANGER, jsonrpc_id=7)
        missing = await gw.call(NO_SUCH_TOOL, row.arguments, principal=STRANGER, jsonrpc_id=8)
    assert hidden.error == UNKNOWN_TOOL
    assert hidden.wire_bytes() == missing.wire_bytes() and hidden.status == missing.status


HIDDEN_CALLS: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("stranger-valid-arguments", REFUND, STRANGER, refund(5)),
    ("stranger-schema-invalid-arguments", REFUND, STRANGER, {"amount": "lots"}),
    ("stranger-no-arguments", REFUND, STRANGER, {}),
    ("stranger-extra-arguments", REFUND, STRANGER, {**refund(5), "x" * 100: "y" * 10_000}),
    ("stranger-low-risk-tool", INVOICE, STRANGER, {"invoice_id": "INV-1"}),
    ("bot-auditor-only-tool", SECRET_TOOL, BOT, {"ledger": "main"}),
    ("bot-auditor-only-tool-invalid", SECRET_TOOL, BOT, {"ledger": 5}),
]


@pytest.mark.parametrize("modern", [True, False], ids=["2026-07-28", "2025-11-25"])
@pytest.mark.parametrize(("tool", "principal", "arguments"), [row[1:] for row in HIDDEN_CALLS],
                         ids=[row[0] for row in HIDDEN_CALLS])
@pytest.mark.parametrize("jsonrpc_id", [1, "abc", 2**53], ids=["int-id", "str-id", "big-id"])
async def test_a_hidden_tool_is_byte_identical_to_a_nonexistent_one(
        tmp_path: Path, tool: str, principal: Any, arguments: dict[str, Any], modern: bool, jsonrpc_id: Any) -> None:
    """Same status, same body apart from the id: a hidden tool cannot be told from a missing one."""
    async with in_process_gateway(tmp_path) as gw:
        hidden = await gw.call(tool, arguments, principal=principal, modern=modern, jsonrpc_id=jsonrpc_id)
        missing = await gw.call(NO_SUCH_TOOL, arguments, principal=principal, modern=modern, jsonrpc_id=jsonrpc_id)
        also_missing = await gw.call("x" * 256, arguments, principal=principal, modern=modern, jsonrpc_id=jsonrpc_id)
    assert hidden.error == UNKNOWN_TOOL
    assert hidden.body == missing.body == also_missing.body and hidden.status == missing.status


async def test_retry_after_tells_nothing_of_other_callers_sharing_the_counter(tmp_path: Path) -> None:
    """With a counter shared per tenant, the answer is the same however much others used it."""
    acme_alice = dataclasses.replace(BOT, tenant="acme")
    acme_bob = dataclasses.replace(acme_alice, user_id="bob-user")
    shared = {**HOURLY, "per": ["tenant"]}
    answers = []
    for others_first in (0, 1, 2):
        async with in_process_gateway(tmp_path, limits=[shared]) as gw:
            for _ in range(others_first):
                assert (await gw.call(REFUND, refund(5), principal=acme_bob)).result is not None
            gw.clock.now += 1234.5  # later, so an exact expiry would differ between the runs
            while (answer := await gw.call(REFUND, refund(5), principal=acme_alice)).result is not None:
                gw.clock.now += 1
            answers.append(answer.wire_bytes())
    assert answers[0] == answers[1] == answers[2]
    assert b'"retry_after_s":3600' in answers[0]


async def test_tools_outside_their_time_window_stay_listed(tmp_path: Path) -> None:
    """Visibility depends on who calls and where, not when: the time window refuses the call itself."""
    async with in_process_gateway(tmp_path, policies={"process_refund": OFFICE_HOURS}) as gw:
        assert REFUND in gw.listed(BOT)
        assert (await gw.call(REFUND, refund(5))).error["data"] == {"rule_id": "billing.process_refund/time_windows"}
        gw.clock.now += 3600  # 09:00 on the Friday
        assert (await gw.call(REFUND, refund(5))).result is not None
