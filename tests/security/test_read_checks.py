"""Rego, limits and approvals on ``resources/read`` and ``prompts/get``, through the real read pipeline.

The tables an attacker would try: a read the Rego modules deny (by method, by URI, by prompt argument), a
Rego module that raises (refused, never allowed), a policy that asks a read for an approval (refused with
its own rule, never allowed), reads over a limit (the same -31020 shape as a limited tools/call), refused
reads that must not consume counters, and a state store that cannot answer (refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from portcullis.policy.limits import LimitRule
from portcullis.policy.rego import RegoPolicy
from portcullis.state.memory import FailingStateStore, InMemoryStateStore

from .harness import BOT
from .test_surface import STAFF, surface_gateway

READ = ("resources/read", {"uri": "billing+docs://terms"})
PAGE = ("resources/read", {"uri": "billing+docs://pages/intro"})
GET = ("prompts/get", {"name": "billing.summarize", "arguments": {"topic": "x"}})

REGO = """package portcullis.reads

import rego.v1

deny contains {"id": "reads/no_pages", "reason": "pages_closed"} if {
    input.method == "resources/read"
    input.resource.template == "billing+docs://pages/{topic}"
}

deny contains {"id": "reads/no_secret_topic", "reason": "topic_closed"} if {
    input.method == "prompts/get"
    input.arguments.topic == "secret"
}

deny contains {"id": "reads/internal_only", "reason": "class"} if {
    input.method == "resources/read"
    input.resource.classification.output != "Internal"
}

require_approval contains {"id": "reads/needs_human", "reason": "human"} if {
    input.prompt.name == "billing.summarize"
    input.arguments.topic == "payroll"
}
"""

BROKEN = """package portcullis.reads

import rego.v1

deny contains {"id": "reads/broken", "reason": "broken"} if {
    input.method != "tools/call"
    to_number("not a number") > 1
}
"""


def _error(body: bytes | None) -> dict[str, Any]:
    assert body is not None
    return dict(orjson.loads(body)["error"])


def _limit(**fields: Any) -> LimitRule:
    return LimitRule.model_validate({"id": "reads", "per": ["agent", "user"], "window_s": 60, "max_calls": 2,
                                     **fields})


@pytest.mark.parametrize(("request_", "principal", "refused"), [
    (READ, BOT, None),  # a static resource: no rule denies it
    (PAGE, BOT, ("resources/read", None)),  # the template: denied, and looks unknown
    (("prompts/get", {"name": "billing.summarize", "arguments": {"topic": "secret"}}), STAFF,
     ("prompts/get", "rego/reads/no_secret_topic")),
    (GET, STAFF, None),
])
async def test_rego_decides_reads(tmp_path: Path, request_: tuple[str, dict[str, Any]], principal: Any,
                                  refused: tuple[str, str | None] | None) -> None:
    """Rego rules see the read's method, resource or prompt and arguments, and their denials stop it."""
    rego = RegoPolicy.compile({"reads.rego": REGO})
    async with surface_gateway(tmp_path, rego=rego) as gw:
        result, error = await gw.request(*request_, principal)
        if refused is None:
            assert result is not None and error is None
            return
        assert result is None
        method, rule = refused
        if method == "resources/read":  # a denied read is byte-identical to an unknown resource
            assert _error(error) == {"code": -32602, "message": "Resource not found", "data": request_[1]}
        else:
            assert _error(error) == {"code": -31020, "message": "Call refused by policy", "data": {"rule_id": rule}}
        decisions = [r for r in await gw.records() if r.kind == "decision"]
        assert [d.fields["decision"]["effect"] for d in decisions] == ["deny"]
        conn = gw.connector.current
        assert conn is not None and conn.surface.reads == []


@pytest.mark.parametrize("request_", [READ, GET])
async def test_rego_error_refuses_the_read(tmp_path: Path, request_: tuple[str, dict[str, Any]]) -> None:
    """A Rego module that fails at run time (a strict built-in error) denies the read: fail closed."""
    rego = RegoPolicy.compile({"broken.rego": BROKEN})
    async with surface_gateway(tmp_path, rego=rego) as gw:
        result, error = await gw.request(*request_, STAFF)
        assert result is None
        if request_[0] == "resources/read":
            assert _error(error)["message"] == "Resource not found"
        else:
            assert _error(error)["data"] == {"rule_id": "rego/policy_error"}
        [decision] = [r for r in await gw.records() if r.kind == "decision"]
        assert decision.fields["decision"]["reasons"][-1] == "policy_error"
        assert gw.connector.current is not None and gw.connector.current.surface.reads == []


async def test_require_approval_on_a_read_is_refused_with_its_own_rule(tmp_path: Path) -> None:
    """No approval flow for reads: a require_approval is a documented refusal, never an allow."""
    rego = RegoPolicy.compile({"reads.rego": REGO})
    async with surface_gateway(tmp_path, rego=rego) as gw:
        result, error = await gw.request("prompts/get", {"name": "billing.summarize",
                                                         "arguments": {"topic": "payroll"}}, STAFF)
        assert result is None
        assert _error(error) == {"code": -31020, "message": "Call refused by policy",
                                 "data": {"rule_id": "reads/no_approval_flow"}}
        [decision] = [r for r in await gw.records() if r.kind == "decision"]
        assert decision.fields["decision"]["rule_ids"] == ["rego/reads/needs_human", "reads/no_approval_flow"]


@pytest.mark.parametrize(("rule", "request_", "principal"), [
    ({"tools": ["billing.terms"], "methods": ["resources/read"]}, READ, BOT),  # the resource's manifest name
    ({"tools": ["billing.page"], "methods": ["resources/read"]}, PAGE, BOT),  # a template's
    ({"tools": ["*"], "methods": ["resources/read", "prompts/get"]}, READ, BOT),  # method-wide
    ({"tools": ["billing.summarize"], "methods": ["prompts/get"]}, GET, STAFF),  # the exposed prompt name
    ({"tools": ["billing.*"], "methods": ["prompts/get"]}, GET, STAFF),
])
async def test_a_read_over_its_limit_is_refused_like_a_limited_call(
        tmp_path: Path, rule: dict[str, Any], request_: tuple[str, dict[str, Any]], principal: Any) -> None:
    """Two reads fit, the third gets -31020 naming the limit and retry_after_s, and is never forwarded."""
    async with surface_gateway(tmp_path, limit_rules=(_limit(**rule),)) as gw:
        for _ in range(2):
            result, error = await gw.request(*request_, principal)
            assert error is None and result is not None
        result, error = await gw.request(*request_, principal)
        assert result is None
        assert _error(error) == {"code": -31020, "message": "Call refused by policy",
                                 "data": {"rule_id": "limits/reads", "retry_after_s": 60}}
        records = await gw.records()
        assert [r.fields["decision"]["effect"] for r in records if r.kind == "decision"] == ["allow", "allow", "deny"]


@pytest.mark.parametrize("rule", [
    {"tools": ["*"]},  # a tools/call rule (the default methods) never counts a read
    {"tools": ["billing.terms"], "methods": ["prompts/get"]},
    {"tools": ["billing.summarize"], "methods": ["resources/read"]},
    {"tools": ["billing.page"], "methods": ["resources/read"]},  # another entry
])
async def test_rules_that_do_not_name_the_read_do_not_limit_it(tmp_path: Path, rule: dict[str, Any]) -> None:
    async with surface_gateway(tmp_path, limit_rules=(_limit(**rule),)) as gw:
        for _ in range(4):
            result, error = await gw.request(*READ, BOT)
            assert error is None and result is not None


async def test_refused_reads_consume_no_counter(tmp_path: Path) -> None:
    """Reads the gate, Rego or an unknown URI refuse count nothing; the allowed ones still fit the limit."""
    rego = RegoPolicy.compile({"reads.rego": REGO})
    state = InMemoryStateStore()
    rule = _limit(tools=["*"], methods=["resources/read", "prompts/get"])
    async with surface_gateway(tmp_path, rego=rego, limit_rules=(rule,), state=state) as gw:
        for _ in range(5):
            assert (await gw.request(*PAGE, BOT))[0] is None  # Rego denies the template
            assert (await gw.request("resources/read", {"uri": "billing+docs://board-minutes"}, BOT))[0] is None
            assert (await gw.request("resources/read", {"uri": "billing+docs://nothing"}, BOT))[0] is None
        for _ in range(2):
            assert (await gw.request(*READ, BOT))[1] is None
        assert (await gw.request(*READ, BOT))[0] is None  # the limit is exactly what the allowed reads used


@pytest.mark.parametrize("request_", [READ, GET])
async def test_a_store_that_cannot_answer_refuses_the_read(tmp_path: Path,
                                                            request_: tuple[str, dict[str, Any]]) -> None:
    """Limits fail closed on reads too: limits/policy_error, nothing forwarded."""
    rule = _limit(tools=["*"], methods=["resources/read", "prompts/get"])
    async with surface_gateway(tmp_path, limit_rules=(rule,), state=FailingStateStore()) as gw:
        result, error = await gw.request(*request_, STAFF)
        assert result is None and _error(error)["data"] == {"rule_id": "limits/policy_error"}
        assert gw.connector.current is not None and gw.connector.current.surface.reads == []


@pytest.mark.parametrize("fields", [
    {"tools": ["*"], "methods": []},
    {"tools": ["*"], "methods": ["resources/list"]},
    {"tools": ["*"], "methods": ["completion/complete"]},
    {"tools": ["*"], "methods": ["prompts/get", "prompts/get"]},
    {"tools": ["*"], "methods": ["resources/read"], "max_total": 5, "amount_pointer": "/uri", "max_calls": None},
])
def test_limit_rule_methods_are_checked(fields: dict[str, Any]) -> None:
    """A rule naming no method, one that cannot be limited, a repeat, or amounts on reads is a config error."""
    with pytest.raises(ValueError, match="validation error"):
        _limit(**fields)
