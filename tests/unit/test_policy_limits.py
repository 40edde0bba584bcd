"""Windowed limits: the refund and hr.* examples, isolation, shadow mode, fail-closed paths and hostile input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from portcullis.identity.principal import Principal
from portcullis.policy.limits import (
    LimitFailure,
    LimitOutcome,
    LimitRule,
    check_limits,
    counter_key,
    limit_rule_ids,
)
from portcullis.state import FailingStateStore, InMemoryStateStore

T0 = 1_000_000.0
HOUR = 3600.0
DAY = 86400.0
REFUND = "billing.process_refund"

RULES_YAML = """
- id: billing-bot-refunds-eur-daily
  tools: ["billing.process_refund"]
  per: [agent]
  window_s: 86400
  max_total: 1000
  amount_pointer: /amount
  match: {"/currency": "EUR"}
  mode: enforce
- id: hr-hourly
  tools: ["hr.*"]
  per: [agent, user]
  window_s: 3600
  max_calls: 20
"""


def load_rules(text: str = RULES_YAML) -> list[LimitRule]:
    return [LimitRule.model_validate(item) for item in yaml.safe_load(text)]


REFUNDS, HR = load_rules()


def rule(**changes: Any) -> LimitRule:
    fields: dict[str, Any] = {"id": "r", "tools": ["t"], "per": ["agent"], "window_s": 60, "max_calls": 1}
    fields.update(changes)
    return LimitRule.model_validate(fields)


def agent(agent_id: str | None = "billing-bot", **changes: Any) -> Principal:
    fields: dict[str, Any] = {"client_id": "console", "auth_method": "bearer", "issuer": "https://idp.example",
                              "agent_id": agent_id, "user_id": "alice"}
    fields.update(changes)
    return Principal(**fields)


async def call(rules: list[LimitRule], store: Any, *, tool: str = REFUND, principal: Principal | None = None,
               now: float = T0, **arguments: Any) -> LimitOutcome:
    return await check_limits(rules, store, tool=tool, principal=principal or agent(), arguments=arguments,
                              now=now)


def denied(rule_id: str, reason: str = "limit_exceeded") -> tuple[LimitFailure, ...]:
    return (LimitFailure("deny", reason, f"limits/{rule_id}"),)


# ----------------------------------------------------------------------------- the examples


async def test_refunds_are_limited_to_1000_eur_per_day_and_other_currencies_are_not_counted() -> None:
    """600 + 300 EUR pass, another 200 EUR is denied, a JPY refund is neither counted nor limited."""
    store = InMemoryStateStore()
    assert (await call([REFUNDS], store, amount=600, currency="EUR")).allowed
    assert (await call([REFUNDS], store, amount=300, currency="EUR", now=T0 + 60)).allowed
    outcome = await call([REFUNDS], store, amount=200, currency="EUR", now=T0 + 120)
    assert outcome.failures == denied("billing-bot-refunds-eur-daily")
    assert (await call([REFUNDS], store, amount=50_000, currency="JPY", now=T0 + 180)).allowed
    assert (await call([REFUNDS], store, amount=100, currency="EUR", now=T0 + 240)).allowed  # exactly 1000
    key = counter_key(REFUNDS, agent())
    assert await store.window_total(key, now=T0 + 300) == 1000


async def test_budget_comes_back_one_bucket_after_window_s_never_before() -> None:
    """The budget spent at t is not available a moment before t + window_s, and is again by
    t + window_s + window_s/64 (the store's bucket: stricter by at most 1/64, never looser)."""
    store = InMemoryStateStore()
    assert (await call([REFUNDS], store, amount=1000, currency="EUR")).allowed
    assert not (await call([REFUNDS], store, amount=1, currency="EUR", now=T0 + DAY - 0.5)).allowed
    assert (await call([REFUNDS], store, amount=1000, currency="EUR", now=T0 + DAY + DAY / 64)).allowed


async def test_hr_glob_allows_20_calls_per_hour_across_hr_tools() -> None:
    """Twenty calls to any hr.* tools pass within an hour, the 21st is denied, other tools are not limited."""
    store = InMemoryStateStore()
    for i in range(20):
        tool = "hr.lookup_employee" if i % 2 else "hr.update_salary"
        assert (await call([HR], store, tool=tool, now=T0 + i)).allowed
    assert (await call([HR], store, tool="hr.lookup_employee", now=T0 + 30)).failures == denied("hr-hourly")
    assert (await call([HR], store, tool="hrx.lookup", now=T0 + 31)).allowed
    assert (await call([HR], store, tool="billing.lookup", now=T0 + 32)).allowed
    assert (await call([HR], store, tool="hr.lookup_employee", now=T0 + HOUR + HOUR / 64)).allowed


async def test_counters_are_kept_per_agent() -> None:
    """One agent spending its budget does not spend another agent's."""
    store = InMemoryStateStore()
    assert (await call([REFUNDS], store, amount=1000, currency="EUR")).allowed
    assert not (await call([REFUNDS], store, amount=1, currency="EUR")).allowed
    assert (await call([REFUNDS], store, principal=agent("ops-bot"), amount=1000, currency="EUR")).allowed


async def test_callers_without_the_per_field_share_one_counter() -> None:
    """Principals with no agent id are not unlimited: they all share the 'missing' bucket."""
    store = InMemoryStateStore()
    anonymous_a, anonymous_b = agent(None, user_id="alice"), agent(None, user_id="bob")
    assert (await call([REFUNDS], store, principal=anonymous_a, amount=700, currency="EUR")).allowed
    outcome = await call([REFUNDS], store, principal=anonymous_b, amount=700, currency="EUR")
    assert outcome.failures == denied("billing-bot-refunds-eur-daily")
    assert counter_key(REFUNDS, anonymous_a) == "limits/billing-bot-refunds-eur-daily/agent=*"


# ----------------------------------------------------------------------------- modes and combinations


async def test_log_only_rule_reports_shadow_failure_but_does_not_deny() -> None:
    """Over a log_only limit the call is allowed and the would-be failure is in shadow."""
    store = InMemoryStateStore()
    trial = rule(id="trial", max_calls=1, mode="log_only")
    assert await call([trial], store, tool="t") == LimitOutcome()
    outcome = await call([trial], store, tool="t", now=T0 + 1)
    assert outcome.allowed and outcome.failures == ()
    assert outcome.shadow == denied("trial")


async def test_refused_call_consumes_nothing_in_other_rules() -> None:
    """A call refused by one rule leaves every other rule's counter (enforce and log_only) untouched."""
    store = InMemoryStateStore()
    calls = rule(id="calls", tools=[REFUND], max_calls=5)
    shadow = rule(id="shadow", tools=[REFUND], max_calls=5, mode="log_only")
    total = rule(id="total", tools=[REFUND], max_calls=None, max_total=100, amount_pointer="/amount")
    outcome = await call([calls, total, shadow], store, amount=150)
    assert outcome.failures == denied("total")
    for limited in (calls, shadow, total):
        assert await store.window_total(counter_key(limited, agent()), now=T0) == 0
    assert len(store) == 0


async def test_every_failing_rule_is_reported() -> None:
    """Two exhausted limits both appear in the failures, in rule order."""
    store = InMemoryStateStore()
    first, second = rule(id="first"), rule(id="second")
    assert (await call([first, second], store, tool="t")).allowed
    outcome = await call([first, second], store, tool="t", now=T0 + 1)
    assert outcome.failures == denied("first") + denied("second")


async def test_match_compares_type_as_well_as_value() -> None:
    """A match on true does not apply to 1, and a missing argument does not match."""
    store = InMemoryStateStore()
    urgent = rule(id="urgent", match={"/urgent": True})
    assert (await call([urgent], store, tool="t", urgent=True)).allowed
    assert not (await call([urgent], store, tool="t", urgent=True)).allowed
    assert (await call([urgent], store, tool="t", urgent=1)).allowed
    assert (await call([urgent], store, tool="t")).allowed


async def test_no_applicable_rules_touch_no_state() -> None:
    """An unmatched tool and an empty rule list are allowed without a store call."""
    store = FailingStateStore()
    assert (await call([], store)).allowed
    assert (await call([HR], store, tool="billing.lookup")).allowed
    assert store.calls == 0


# ----------------------------------------------------------------------------- fail closed


async def test_unavailable_store_denies_with_policy_error() -> None:
    """A store that raises StateUnavailable turns the call into a policy_error deny, with operator detail."""
    outcome = await call([REFUNDS], FailingStateStore(detail="redis down"), amount=1, currency="EUR")
    assert outcome.failures == denied("policy_error", "policy_error")
    assert "redis down" in outcome.detail


async def test_store_failure_in_a_log_only_rule_is_shadowed_not_denied() -> None:
    """A log_only rule never denies, not even when the store fails for it."""
    trial = rule(id="trial", mode="log_only")
    outcome = await call([trial], FailingStateStore(), tool="t")
    assert outcome.allowed
    assert outcome.shadow == denied("policy_error", "policy_error")
    store = InMemoryStateStore(max_keys=1)
    outcome = await call([rule(id="real"), trial], store, tool="t")
    assert outcome.allowed and outcome.shadow == denied("policy_error", "policy_error")
    assert "StateFull" in outcome.detail


async def test_full_key_table_denies_new_principals() -> None:
    """With the key table full of live counters, a new principal is denied rather than unlimited."""
    store = InMemoryStateStore(max_keys=1)
    assert (await call([REFUNDS], store, amount=1, currency="EUR")).allowed
    outcome = await call([REFUNDS], store, principal=agent("other-bot"), amount=1, currency="EUR")
    assert outcome.failures == denied("policy_error", "policy_error")
    assert "StateFull" in outcome.detail


async def test_store_failure_midway_rolls_back_earlier_reservations() -> None:
    """When the second rule's key does not fit the store, the first rule's reservation is removed."""
    store = InMemoryStateStore(max_keys=1)
    first, second = rule(id="first"), rule(id="second")
    assert not (await call([first, second], store, tool="t")).allowed
    assert len(store) == 0


async def test_duplicate_rule_ids_deny_with_policy_error() -> None:
    """Two rules with one id would share a counter, so evaluation refuses to run them."""
    outcome = await call([rule(), rule(max_calls=5)], InMemoryStateStore(), tool="t")
    assert outcome.failures == denied("policy_error", "policy_error")


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (True, "amount_invalid"),
        (False, "amount_invalid"),
        ("100", "amount_invalid"),
        (float("nan"), "amount_invalid"),
        (float("inf"), "amount_invalid"),
        (Decimal("NaN"), "amount_invalid"),
        (Decimal("sNaN"), "amount_invalid"),
        (-5, "amount_invalid"),
        (1e-30, "amount_invalid"),
        (None, "amount_invalid"),
        ({"value": 100}, "amount_invalid"),
        ([100], "amount_invalid"),
        (10**400, "limit_exceeded"),
        (1e308, "limit_exceeded"),
        (Decimal(10**18) + 1, "limit_exceeded"),
        (1000.000001, "limit_exceeded"),
    ],
)
async def test_hostile_amounts_are_denied_and_consume_nothing(amount: object, reason: str) -> None:
    """Bools, strings, non-finite, negative, over-precise, nested and huge amounts are denied."""
    store = InMemoryStateStore()
    outcome = await call([REFUNDS], store, amount=amount, currency="EUR")
    assert outcome.failures == denied("billing-bot-refunds-eur-daily", reason)
    assert len(store) == 0


async def test_missing_amount_is_denied_as_amount_missing() -> None:
    """A max_total rule that applies to a call without an amount denies it."""
    outcome = await call([REFUNDS], InMemoryStateStore(), currency="EUR")
    assert outcome.failures == denied("billing-bot-refunds-eur-daily", "amount_missing")


async def test_float_amounts_count_as_the_number_written() -> None:
    """0.1 + 0.2 fills a 0.3 budget exactly (floats become the Decimal of their repr)."""
    store = InMemoryStateStore()
    tiny = rule(max_calls=None, max_total=Decimal("0.3"), amount_pointer="/amount")
    assert (await call([tiny], store, tool="t", amount=0.1)).allowed
    assert (await call([tiny], store, tool="t", amount=0.2)).allowed
    assert not (await call([tiny], store, tool="t", amount=1e-18)).allowed


# ----------------------------------------------------------------------------- counter keys


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"agent_id": "a/user=b", "user_id": "c"}, {"agent_id": "a", "user_id": "b/user=c"}),
        ({"agent_id": "*"}, {"agent_id": None}),
        ({"agent_id": "%2A"}, {"agent_id": "*"}),
        ({"agent_id": "#" + "0" * 64}, {"agent_id": "x" * 200}),
        ({"agent_id": "x" * 200}, {"agent_id": "x" * 199 + "y"}),
    ],
)
def test_counter_keys_are_injective(left: dict[str, Any], right: dict[str, Any]) -> None:
    """Principals that differ never share a key, whatever separators or markers their ids contain."""
    per_both = rule(per=["agent", "user"])
    assert counter_key(per_both, agent(**left)) != counter_key(per_both, agent(**right))


def test_counter_keys_are_bounded_in_length() -> None:
    """Every per field at its longest still gives a key of a few hundred characters."""
    every = rule(id="x" * 64, per=["agent", "user", "client", "tenant", "session", "app"])
    longest = agent("é" * 256, user_id="/" * 256, client_id="c" * 256, tenant="t" * 256,
                    session_id="s" * 256, source_app="a" * 256)
    assert len(counter_key(every, longest)) <= 600


def test_limit_rule_ids_lists_each_rule_and_policy_error() -> None:
    """limit_rule_ids names each rule as limits/<id>, then limits/policy_error."""
    assert limit_rule_ids([REFUNDS, HR]) == (
        "limits/billing-bot-refunds-eur-daily", "limits/hr-hourly", "limits/policy_error")


# ----------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tools": []}, "at least 1 item"),
        ({"tools": ["hr.*.x"]}, "pattern"),
        ({"tools": ["*hr"]}, "pattern"),
        ({"per": []}, "at least 1 item"),
        ({"per": ["agent", "agent"]}, "twice"),
        ({"per": ["role"]}, "per"),
        ({"max_total": 10, "amount_pointer": "/amount"}, "exactly one"),
        ({"max_calls": None}, "exactly one"),
        ({"max_calls": 0}, "greater than or equal to 1"),
        ({"max_calls": True}, "integer"),
        ({"max_calls": None, "max_total": 10}, "amount_pointer is required"),
        ({"amount_pointer": "/amount"}, "amount_pointer is required"),
        ({"max_calls": None, "max_total": 0, "amount_pointer": "/amount"}, "greater than 0"),
        ({"max_calls": None, "max_total": "10", "amount_pointer": "/amount"}, "must be a number"),
        ({"max_calls": None, "max_total": Decimal("1e-19"), "amount_pointer": "/a"}, "decimal places"),
        ({"max_calls": None, "max_total": 10**19, "amount_pointer": "/a"}, "less than or equal"),
        ({"max_calls": None, "max_total": 10, "amount_pointer": "amount"}, "pattern"),
        ({"id": "Bad Id"}, "pattern"),
        ({"id": "-leading"}, "pattern"),
        ({"id": "x" * 65}, "pattern"),
        ({"window_s": 0}, "greater than 0"),
        ({"window_s": -1}, "greater than 0"),
        ({"window_s": float("inf")}, "window_s"),
        ({"window_s": float("nan")}, "window_s"),
        ({"window_s": "60"}, "must be a number"),
        ({"window_s": 400 * 86400}, "less than or equal"),
        ({"match": {"currency": "EUR"}}, "pattern"),
        ({"match": {"/x": 1.5}}, "match"),
        ({"mode": "off"}, "mode"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_invalid_limit_rules_are_configuration_errors(changes: dict[str, Any], message: str) -> None:
    """Empty, ambiguous, unbounded or mistyped rule fields are rejected when the rule is loaded."""
    with pytest.raises(ValidationError, match=message):
        rule(**changes)


def test_limit_rules_are_frozen() -> None:
    """A loaded rule cannot be changed in place."""
    with pytest.raises(ValidationError):
        REFUNDS.max_total = Decimal(10**6)  # type: ignore[misc]
