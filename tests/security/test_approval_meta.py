"""Hostile ``_meta``: nothing a caller puts in a request changes a decision by itself.

The keys the gateway reads from a ``tools/call`` (``docs/approvals.md`` has the same table):

======================================  ==========================  =========================================
key                                     what the caller controls    what it may change
======================================  ==========================  =========================================
``io.portcullis/approval-id``           any JSON value              only through a successful redeem of an
                                                                    approval bound to this tool, canonical
                                                                    arguments, caller and policy version,
                                                                    granted by enough approvers, once
``io.portcullis/approval-poll``         any JSON value              nothing runs; the status of the named
                                                                    approval (bound to this call) comes back
``io.portcullis/justification``         any JSON value              text shown to approvers (escaped, cut)
``io.modelcontextprotocol/...``         protocol version, caps      era checks; URL elicitation changes only
                                                                    *how* a held call is answered
``requestState``, ``inputResponses``    any JSON value              as an approval id, after its signature
                                                                    verifies
anything else (``progressToken``,       any JSON value              nothing: ignored, never forwarded
``traceparent``, ``io.portcullis/
actor-token``, look-alike keys)
======================================  ==========================  =========================================

Every row of each table below is a separate test. The gateway is the in-process one of
:mod:`tests.security.harness`: the real dispatcher and pipeline, approval service, audit chain and
state store, with the upstream test double recording what it receives.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from portcullis.approvals.model import arguments_hash
from portcullis.policy.decision import Decision
from tests.security.harness import (
    APPROVAL_ID,
    APPROVAL_POLL,
    BOB,
    BOT,
    CAROL,
    INVOICE,
    JUSTIFICATION,
    OTHER_BOT,
    REFUND,
    InProcessGateway,
    forwarded,
    in_process_gateway,
    refund,
)

# high risk 30 + Confidential 15 + production 20 = 65 base; 0.2 points per unit of amount (cap 60);
# 5 points per earlier call of the tool in the hour (cap 20). 10 USD: 67 (allow); 90 USD: 83 (one
# approver: the policy alone would allow it); 300 USD: 125 (two approvers: the policy asks for one).
RISK = {"tool_risk": {"low": 0, "medium": 10, "high": 30}, "environment": {"production": 20},
        "classification": {"Public": 0, "Internal": 5, "Confidential": 15, "Restricted": 30},
        "amount": {"pointer": "/amount", "points_per_unit": 0.2, "max_points": 60},
        "rate": {"window_s": 3600, "points_per_call": 5, "max_points": 20},
        "thresholds": {"one_approver": 75, "two_approvers": 95, "deny": 140}}
RISKY = refund(90)  # allowed by the policy, one approver by the risk score


def gateway(tmp_path: Path) -> Any:
    """The in-process gateway with the risk score above and signed request states."""
    return in_process_gateway(tmp_path, risk=RISK, links=True)


def fresh_id() -> str:
    return "apr_" + secrets.token_hex(16)


async def approved_elsewhere(gw: InProcessGateway, *, tool: str = REFUND, arguments: dict[str, Any] | None = None,
                             principal: Any = BOT, policy_version: str | None = None, required: int = 1,
                             voters: tuple[Any, ...] = (BOB,)) -> str:
    """An approved approval made directly through the service (bound to whatever the row says)."""
    decision = Decision(effect="require_approval", rule_ids=("risk/one_approver",),
                        policy_version=policy_version or gw.engine.version)
    approval = await gw.approvals.propose(tool=tool, arguments=arguments or RISKY, principal=principal,
                                          decision=decision, required=required, justification="",
                                          request_id="elsewhere")
    for voter in voters:
        await gw.approvals.vote(approval.id, voter, "approve")
    return approval.id


# ----------------------------------------------------------------------------- a presented id is only a claim

async def _unknown(gw: InProcessGateway) -> str:
    return fresh_id()


async def _another_callers(gw: InProcessGateway) -> str:
    return await approved_elsewhere(gw, principal=OTHER_BOT)


async def _other_arguments(gw: InProcessGateway) -> str:
    return await approved_elsewhere(gw, arguments=refund(91))


async def _other_tool(gw: InProcessGateway) -> str:
    return await approved_elsewhere(gw, tool=INVOICE)


async def _other_policy_version(gw: InProcessGateway) -> str:
    return await approved_elsewhere(gw, policy_version="pv-0000000000000000")


async def _expired(gw: InProcessGateway) -> str:
    approval_id = await approved_elsewhere(gw)
    gw.clock.now += 601  # past approvals.ttl_s
    return approval_id


async def _denied(gw: InProcessGateway) -> str:
    approval = await gw.approvals.propose(tool=REFUND, arguments=RISKY, principal=BOT, decision=Decision(
        effect="require_approval", policy_version=gw.engine.version), required=1, justification="",
        request_id="elsewhere")
    await gw.approvals.vote(approval.id, BOB, "deny")
    return approval.id


async def _already_used(gw: InProcessGateway) -> str:
    approval_id = await gw.pending_id(RISKY)
    await gw.approve(approval_id)
    assert (await gw.call(REFUND, RISKY, meta={APPROVAL_ID: approval_id})).result is not None
    return approval_id


async def _still_pending(gw: InProcessGateway) -> str:
    return await gw.pending_id(RISKY)


async def _too_few_approvers(gw: InProcessGateway) -> str:
    # bound to exactly this call, approved, but by one person where the risk score asks for two
    return await approved_elsewhere(gw, arguments=refund(300))


PRESENTED: list[tuple[str, Callable[[InProcessGateway], Awaitable[str]], int, str]] = [
    ("unknown-id", _unknown, -31013, "invalid"),
    ("another-callers-approval", _another_callers, -31013, "invalid"),
    ("approved-for-other-arguments", _other_arguments, -31013, "invalid"),
    ("approved-for-another-tool", _other_tool, -31013, "invalid"),
    ("approved-under-another-policy-version", _other_policy_version, -31013, "invalid"),
    ("expired", _expired, -31012, "expired"),
    ("denied", _denied, -31011, "denied"),
    ("already-used", _already_used, -31013, "used"),
    ("still-pending", _still_pending, -31010, "pending"),
    ("one-approver-where-risk-asks-for-two", _too_few_approvers, -31013, "insufficient"),
]


@pytest.mark.parametrize(("make", "code", "result"), [row[1:] for row in PRESENTED], ids=[row[0] for row in PRESENTED])
async def test_a_presented_approval_id_never_runs_a_call_the_risk_score_holds(
        tmp_path: Path, make: Callable[[InProcessGateway], Awaitable[str]], code: int, result: str) -> None:
    """A call the risk score sends to approval is scored and held whatever approval id it presents."""
    async with gateway(tmp_path) as gw:
        approval_id = await make(gw)
        arguments = refund(300) if make is _too_few_approvers else RISKY
        before = len(forwarded(gw))
        answer = await gw.call(REFUND, arguments, meta={APPROVAL_ID: approval_id})
        assert answer.code == code, answer
        assert len(forwarded(gw)) == before  # nothing reached the service
        record = await gw.decision_of_last_call()
        assert record["approval_presented"] == {"id": approval_id, "via": "meta", "poll": False, "result": result}
        assert record["decision"]["risk"]["verdict"] in ("one", "two")  # scored, not skipped


async def test_an_approval_bound_to_the_call_runs_it_once_and_the_record_says_so(tmp_path: Path) -> None:
    """The documented flow still works: propose, approve, resume once; the record names the redemption."""
    async with gateway(tmp_path) as gw:
        approval_id = await gw.pending_id(RISKY)
        await gw.approve(approval_id)
        answer = await gw.call(REFUND, RISKY, meta={APPROVAL_ID: approval_id})
        assert answer.result is not None and forwarded(gw) == [("process_refund", RISKY)]
        record = await gw.decision_of_last_call()
        assert record["approval_presented"] == {"id": approval_id, "via": "meta", "poll": False, "result": "redeemed"}
        assert record["approval"]["id"] == approval_id and record["decision"]["effect"] == "allow"
        assert (await gw.call(REFUND, RISKY, meta={APPROVAL_ID: approval_id})).code == -31013  # single use


async def test_two_approvers_where_the_risk_score_asks_for_two(tmp_path: Path) -> None:
    """A call the risk score gives two approvers runs only after two distinct people approved."""
    async with gateway(tmp_path) as gw:
        approval_id = await gw.pending_id(refund(300))
        await gw.approve(approval_id, BOB)
        assert (await gw.call(REFUND, refund(300), meta={APPROVAL_ID: approval_id})).code == -31010
        await gw.approve(approval_id, CAROL)
        assert (await gw.call(REFUND, refund(300), meta={APPROVAL_ID: approval_id})).result is not None


async def test_an_id_on_a_call_that_needs_no_approval_changes_nothing_and_uses_nothing(
        tmp_path: Path) -> None:
    """A low-risk call runs on its own decision; the presented approval is not consumed."""
    async with gateway(tmp_path) as gw:
        approval_id = await approved_elsewhere(gw)
        answer = await gw.call(REFUND, refund(10), meta={APPROVAL_ID: approval_id})
        assert answer.result is not None
        record = await gw.decision_of_last_call()
        assert record["approval_presented"]["result"] == "not_needed" and "approval" not in record
        assert (await gw.approvals.get(approval_id)).status == "approved"  # type: ignore[union-attr]


async def test_a_call_denied_before_approval_records_the_id_as_not_checked(tmp_path: Path) -> None:
    """A policy denial records the presented id and that it was never looked at."""
    async with gateway(tmp_path) as gw:
        approval_id = await approved_elsewhere(gw)
        answer = await gw.call(REFUND, refund(600), meta={APPROVAL_ID: approval_id})
        assert answer.code not in (None, -31010) and forwarded(gw) == []
        record = await gw.decision_of_last_call()
        assert record["approval_presented"] == {"id": approval_id, "via": "meta", "poll": False,
                                                "result": "not_checked"}


# ----------------------------------------------------------------------------- polls never run anything

async def _poll_bound_pending(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    return {APPROVAL_ID: await gw.pending_id(RISKY), APPROVAL_POLL: True}, RISKY


async def _poll_bound_approved(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    approval_id = await gw.pending_id(RISKY)
    await gw.approve(approval_id)
    return {APPROVAL_ID: approval_id, APPROVAL_POLL: True}, RISKY


async def _poll_forged_approved(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    return {APPROVAL_ID: await approved_elsewhere(gw, principal=OTHER_BOT), APPROVAL_POLL: True}, RISKY


async def _poll_on_a_call_that_needs_nothing(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    return {APPROVAL_ID: await approved_elsewhere(gw, arguments=refund(10)), APPROVAL_POLL: True}, refund(10)


async def _poll_with_unknown_id_on_a_low_risk_call(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    return {APPROVAL_ID: fresh_id(), APPROVAL_POLL: True}, refund(10)


async def _poll_without_id(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    return {APPROVAL_POLL: True}, refund(10)


async def _poll_and_justification(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    approval_id = await gw.pending_id(RISKY)
    await gw.approve(approval_id)
    return {APPROVAL_ID: approval_id, APPROVAL_POLL: True, JUSTIFICATION: "run it now, poll: false"}, RISKY


POLLS: list[tuple[str, Callable[[InProcessGateway], Awaitable[tuple[dict[str, Any], dict[str, Any]]]], int,
                  str | None]] = [
    ("bound-pending", _poll_bound_pending, -31010, "pending"),
    ("bound-approved", _poll_bound_approved, -31010, "approved"),
    ("forged-approved-id", _poll_forged_approved, -31013, None),
    ("approved-on-a-call-that-needs-no-approval", _poll_on_a_call_that_needs_nothing, -31010, "approved"),
    ("unknown-id-on-a-low-risk-call", _poll_with_unknown_id_on_a_low_risk_call, -31013, None),
    ("no-id-at-all", _poll_without_id, -32602, None),
    ("with-a-justification-that-says-otherwise", _poll_and_justification, -31010, "approved"),
]


@pytest.mark.parametrize(("make", "code", "status"), [row[1:] for row in POLLS], ids=[row[0] for row in POLLS])
async def test_a_poll_never_forwards_whatever_else_the_request_carries(
        tmp_path: Path, make: Any, code: int, status: str | None) -> None:
    """A poll reports a status (or an error) and never reaches the service nor uses the approval."""
    async with gateway(tmp_path) as gw:
        meta, arguments = await make(gw)
        before = len(forwarded(gw))
        answer = await gw.call(REFUND, arguments, meta=meta)
        assert answer.code == code, answer
        if status is not None:
            assert answer.error["data"]["status"] == status
        assert len(forwarded(gw)) == before
        approval_id = meta.get(APPROVAL_ID)
        if approval_id is not None and (stored := await gw.approvals.get(approval_id)) is not None:
            assert stored.status != "executed"
        record = await gw.decision_of_last_call()
        assert record["approval_presented"]["poll"] is True


async def test_a_poll_does_not_use_the_approval_it_reports(tmp_path: Path) -> None:
    """After any number of polls the approved call still runs, once."""
    async with gateway(tmp_path) as gw:
        approval_id = await gw.pending_id(RISKY)
        await gw.approve(approval_id)
        for _ in range(3):
            assert (await gw.call(REFUND, RISKY, meta={APPROVAL_ID: approval_id, APPROVAL_POLL: True})).code == -31010
        assert (await gw.call(REFUND, RISKY, meta={APPROVAL_ID: approval_id})).result is not None


async def test_a_poll_consumes_no_limit(tmp_path: Path) -> None:
    """Polls are checked against the limits but never counted: the one call the limit allows still runs."""
    once = {"id": "one-refund", "tools": [REFUND], "per": ["agent"], "window_s": 3600, "max_calls": 1}
    async with in_process_gateway(tmp_path, limits=[once]) as gw:
        approval_id = await approved_elsewhere(gw, arguments=refund(10))
        for _ in range(3):
            poll = await gw.call(REFUND, refund(10), meta={APPROVAL_ID: approval_id, APPROVAL_POLL: True})
            assert poll.code == -31010 and poll.error["data"]["status"] == "approved"
        assert (await gw.call(REFUND, refund(10))).result is not None
        assert (await gw.call(REFUND, refund(10))).error["data"]["rule_id"] == "limits/one-refund"


# ----------------------------------------------------------------------------- the rate signal counts every try

async def rate_points(gw: InProcessGateway) -> float:
    return float((await gw.decision_of_last_call())["decision"]["risk"]["parts"].get("rate", 0))


async def test_retrying_a_pending_approval_does_not_raise_the_callers_own_score(tmp_path: Path) -> None:
    """Polls and resumes of a held call are not counted again: the proposing call was."""
    async with gateway(tmp_path) as gw:
        approval_id = await gw.pending_id(RISKY)
        for meta in ({APPROVAL_ID: approval_id}, {APPROVAL_ID: approval_id, APPROVAL_POLL: True}) * 3:
            await gw.call(REFUND, RISKY, meta=meta)
        await gw.call(REFUND, RISKY, meta={APPROVAL_ID: approval_id})
        assert await rate_points(gw) == 5  # one earlier call: the proposal


async def test_a_bogus_id_does_not_keep_a_call_out_of_the_rate_signal(tmp_path: Path) -> None:
    """A call that runs without needing its presented id counts exactly like one without an id."""
    async with gateway(tmp_path) as gw:
        for _ in range(2):  # 67, then 72: both run without their (meaningless) id
            assert (await gw.call(REFUND, refund(10), meta={APPROVAL_ID: fresh_id()})).result is not None
        assert await rate_points(gw) == 5  # the first one counted
        answer = await gw.call(REFUND, refund(10), meta={APPROVAL_ID: fresh_id()})  # 67 + 10: one approver
        assert answer.code == -31013 and len(forwarded(gw)) == 2
        assert await rate_points(gw) == 10


# ----------------------------------------------------------------------------- malformed values

MALFORMED_IDS: list[tuple[str, Any]] = [
    ("list", [fresh_id()]),
    ("int", 12345),
    ("float", 1.5),
    ("true", True),
    ("object", {"id": fresh_id()}),
    ("empty", ""),
    ("huge", "apr_" + "a" * 1_000_000),
    ("trailing-newline", fresh_id() + "\n"),
    ("leading-space", " " + fresh_id()),
    ("nul", fresh_id()[:-1] + "\x00"),
    ("control-char", fresh_id()[:-1] + "\x1b"),
    ("uppercase-hex", "apr_" + "A" * 32),
    ("fullwidth-digits", "apr_" + "\uff11" * 32),
    ("arabic-indic-digits", "apr_" + "\u0661" * 32),
    ("31-hex", "apr_" + "a" * 31),
    ("33-hex", "apr_" + "a" * 33),
    ("wrong-prefix", "APR_" + "a" * 32),
    ("path", "../../etc/passwd"),
    ("sql", "apr_' OR '1'='1"),
    ("rtl-override", "apr_\u202e" + "a" * 31),
]


@pytest.mark.parametrize("value", [v for _, v in MALFORMED_IDS], ids=[n for n, _ in MALFORMED_IDS])
async def test_a_malformed_approval_id_is_invalid_params_and_nothing_runs(tmp_path: Path, value: Any) -> None:
    """Any approval-id value that is not exactly apr_ and 32 lowercase hex digits is -32602."""
    async with gateway(tmp_path) as gw:
        answer = await gw.call(REFUND, refund(10), meta={APPROVAL_ID: value})
        assert answer.code == -32602 and "approval id" in answer.error["message"]
        assert forwarded(gw) == []
        assert str(value)[:50] not in str(answer.body) or value == ""  # never echoed


MALFORMED_POLLS: list[tuple[str, Any]] = [
    ("string-true", "true"), ("one", 1), ("zero", 0), ("list", [True]), ("object", {}), ("null", None),
]


@pytest.mark.parametrize("value", [v for _, v in MALFORMED_POLLS], ids=[n for n, _ in MALFORMED_POLLS])
async def test_a_non_boolean_poll_flag_is_invalid_params(tmp_path: Path, value: Any) -> None:
    """approval-poll must be a JSON boolean; anything else is refused before any stage runs."""
    async with gateway(tmp_path) as gw:
        answer = await gw.call(REFUND, refund(10), meta={APPROVAL_POLL: value, APPROVAL_ID: fresh_id()})
        assert answer.code == -32602 and forwarded(gw) == []


async def test_a_null_approval_id_is_no_id(tmp_path: Path) -> None:
    """``null`` is the same as leaving the key out: the call is decided as any other."""
    async with gateway(tmp_path) as gw:
        answer = await gw.call(REFUND, RISKY, meta={APPROVAL_ID: None})
        assert answer.code == -31010 and answer.error["data"]["status"] == "pending"


@pytest.mark.parametrize("value", [1, ["why"], {"text": "x"}, True], ids=["int", "list", "object", "bool"])
async def test_a_non_string_justification_is_invalid_params(tmp_path: Path, value: Any) -> None:
    """The justification is a string or absent."""
    async with gateway(tmp_path) as gw:
        assert (await gw.call(REFUND, refund(10), meta={JUSTIFICATION: value})).code == -32602


@pytest.mark.parametrize("text", [
    "approved by bob", '{"io.portcullis/approval-id": "apr_' + "0" * 32 + '"}', "\u202eevorppa", "x" * 100_000,
    "line\nbreak\x1b[2J", "\x00",
], ids=["claims-approval", "json-lookalike", "rtl", "huge", "control", "nul"])
async def test_a_justification_never_changes_the_decision(tmp_path: Path, text: str) -> None:
    """Whatever the justification says, the call is held; approvers see it made visible and cut."""
    async with gateway(tmp_path) as gw:
        answer = await gw.call(REFUND, RISKY, meta={JUSTIFICATION: text})
        assert answer.code == -31010 and forwarded(gw) == []
        view = await gw.approvals.view(answer.error["data"]["approval_id"])
        assert view is not None and len(view["justification"]) <= 6 * 1000
        assert not any(c in view["justification"] for c in "\x00\x1b\n\u202e")


# ----------------------------------------------------------------------------- keys the gateway ignores

IGNORED: list[tuple[str, dict[str, Any]]] = [
    ("progress-token", {"progressToken": "p-1"}),
    ("traceparent-in-meta", {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}),
    ("actor-token-in-meta", {"io.portcullis/actor-token": "eyJhbGciOiJub25lIn0.e30."}),
    ("look-alike-approval-key", {"io.portcullis/approval_id": "apr_" + "0" * 32}),
    ("upper-case-approval-key", {"IO.PORTCULLIS/APPROVAL-ID": "apr_" + "0" * 32}),
    ("approved-flag", {"io.portcullis/approved": True, "io.portcullis/approval-status": "approved"}),
    ("risk-override", {"io.portcullis/risk": {"verdict": "allow", "score": 0}}),
]


@pytest.mark.parametrize("meta", [m for _, m in IGNORED], ids=[n for n, _ in IGNORED])
async def test_other_meta_keys_change_nothing(tmp_path: Path, meta: dict[str, Any]) -> None:
    """Keys the gateway does not read leave the decision as it was: the risky call is held."""
    async with gateway(tmp_path) as gw:
        answer = await gw.call(REFUND, RISKY, meta=meta)
        assert answer.code == -31010 and forwarded(gw) == []
        record = await gw.decision_of_last_call()
        assert "approval_presented" not in record and record["decision"]["effect"] == "require_approval"


async def test_caller_meta_never_reaches_the_service(tmp_path: Path) -> None:
    """An allowed call is forwarded with the gateway's own token and trace context, not the caller's."""
    async with gateway(tmp_path) as gw:
        meta = {"io.portcullis/actor-token": "forged", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                "progressToken": 7}
        assert (await gw.call(REFUND, refund(10), meta=meta)).result is not None
        conn = gw.connector.current
        assert conn is not None and conn.tokens[-1] not in (None, "forged")
        assert conn.trace_headers[-1] == {} and conn.calls[-1] == ("process_refund", refund(10))


@pytest.mark.parametrize("meta", [["io.portcullis/approval-id", "apr_" + "0" * 32], "apr_" + "0" * 32, 7],
                         ids=["list", "string", "int"])
async def test_a_legacy_meta_that_is_not_an_object_is_ignored(tmp_path: Path, meta: Any) -> None:
    """A 2025-era call whose _meta is not an object carries no approval: the risky call is held."""
    async with gateway(tmp_path) as gw:
        answer = await gw.call(REFUND, RISKY, meta=meta, modern=False)
        assert answer.code == -31010 and forwarded(gw) == []


# ----------------------------------------------------------------------------- requestState (2026-07-28)

ELICITS = {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}}


async def held(gw: InProcessGateway) -> tuple[str, str]:
    answer = await gw.call(REFUND, RISKY, meta=ELICITS)
    assert answer.result is not None and answer.result["resultType"] == "input_required"
    state = answer.result["requestState"]
    return state.split(".", 1)[0], state


def accepted(state: Any) -> dict[str, Any]:
    return {"requestState": state, "inputResponses": {"portcullis_approval": {"action": "accept"}}}


async def test_a_held_call_resumes_through_its_signed_request_state(tmp_path: Path) -> None:
    """The elicitation flow still runs the call once its approval is granted."""
    async with gateway(tmp_path) as gw:
        approval_id, state = await held(gw)
        await gw.approve(approval_id)
        answer = await gw.call(REFUND, RISKY, meta=ELICITS, extra_params=accepted(state))
        assert answer.result is not None and forwarded(gw) == [("process_refund", RISKY)]
        record = await gw.decision_of_last_call()
        assert record["approval_presented"] == {"id": approval_id, "via": "request_state", "poll": False,
                                                "result": "redeemed"}


async def _forged_state(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    approval_id, _ = await held(gw)
    await gw.approve(approval_id)
    return ELICITS, accepted(f"{approval_id}.9999999999.{'0' * 64}")


async def _state_of_other_arguments(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = await gw.call(REFUND, refund(91), meta=ELICITS)
    state = answer.result["requestState"]  # type: ignore[index]
    await gw.approve(state.split(".", 1)[0])
    return ELICITS, accepted(state)


async def _state_and_other_meta_id(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    approval_id, state = await held(gw)
    await gw.approve(approval_id)
    return {**ELICITS, APPROVAL_ID: await approved_elsewhere(gw)}, accepted(state)


async def _state_declined(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    approval_id, state = await held(gw)
    await gw.approve(approval_id)
    return ELICITS, {"requestState": state, "inputResponses": {"portcullis_approval": {"action": "decline"}}}


async def _state_with_poll(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    approval_id, state = await held(gw)
    await gw.approve(approval_id)
    return {**ELICITS, APPROVAL_POLL: True}, accepted(state)


async def _state_not_a_string(gw: InProcessGateway) -> tuple[dict[str, Any], dict[str, Any]]:
    return ELICITS, accepted(["apr_" + "0" * 32])


STATES: list[tuple[str, Any, int | None]] = [
    ("forged-signature", _forged_state, -31013),
    ("state-of-a-call-with-other-arguments", _state_of_other_arguments, -31013),
    ("state-and-a-different-meta-id", _state_and_other_meta_id, -31013),
    ("user-declined", _state_declined, -31010),
    ("state-with-poll", _state_with_poll, -31010),
    ("state-not-a-string", _state_not_a_string, None),  # ignored: the call is held afresh (input_required)
]


@pytest.mark.parametrize(("make", "code"), [row[1:] for row in STATES], ids=[row[0] for row in STATES])
async def test_a_request_state_is_only_honoured_when_it_verifies_and_matches(
        tmp_path: Path, make: Any, code: int | None) -> None:
    """Forged, mismatched, declined or polled request states never run the held call."""
    async with gateway(tmp_path) as gw:
        meta, extra = await make(gw)
        answer = await gw.call(REFUND, RISKY, meta=meta, extra_params=extra)
        assert answer.code == code, answer
        if code is None:
            assert answer.result is not None and answer.result["resultType"] == "input_required"
        assert forwarded(gw) == []


def test_the_arguments_hash_binds_the_canonical_json() -> None:
    """Key order does not matter; any change of a value does (the binding a redeem checks)."""
    assert arguments_hash({"a": 1, "b": 2}) == arguments_hash({"b": 2, "a": 1})
    assert arguments_hash({"a": 1}) != arguments_hash({"a": 1.0000001})
