"""Golden decision fixtures: a YAML table of calls run against the policies, with rule coverage."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from portcullis.policy import ToolPolicy, load_fixtures, run_fixtures

TOOL = "billing.process_refund"

POLICIES = {
    TOOL: ToolPolicy.model_validate(yaml.safe_load("""
allowed_callers: ["agent:billing-bot"]
max_amount: 500
requires_approval_over: 100
allowed_currencies: [USD, EUR]
tenant_argument: /tenant_id
environments: [production]
""")),
}

FIXTURES = """
- name: billing-bot refunds 80 USD
  principal: {agent_id: billing-bot, tenant: acme}
  tool: billing.process_refund
  arguments: {amount: 80, currency: USD, tenant_id: acme}
  environment: production
  now: "2026-03-02T10:00:00Z"
  expect: {effect: allow, rule_ids: []}
- name: billing-bot refunds 300 USD
  principal: {agent_id: billing-bot, tenant: acme}
  tool: billing.process_refund
  arguments: {amount: 300, currency: USD, tenant_id: acme}
  environment: production
  now: 2026-03-02T10:00:00Z
  expect: {effect: require_approval, rule_ids: [billing.process_refund/requires_approval_over]}
- name: billing-bot refunds 600 USD
  principal: {agent_id: billing-bot, tenant: acme}
  tool: billing.process_refund
  arguments: {amount: 600, currency: USD, tenant_id: acme}
  environment: production
  now: "2026-03-02T10:00:00+01:00"
  expect: {effect: deny, rule_ids: [billing.process_refund/max_amount]}
- name: any JPY refund
  principal: {agent_id: billing-bot, tenant: acme}
  tool: billing.process_refund
  arguments: {amount: 1, currency: JPY, tenant_id: acme}
  environment: production
  now: "2026-03-02T10:00:00Z"
  expect: {effect: deny, rule_ids: [billing.process_refund/allowed_currencies]}
- name: an unknown agent
  principal: {agent_id: refund-bot, tenant: acme}
  tool: billing.process_refund
  arguments: {amount: 80, currency: USD, tenant_id: acme}
  environment: production
  now: "2026-03-02T10:00:00Z"
  expect: {effect: deny, rule_ids: [billing.process_refund/caller]}
"""


def test_fixtures_all_pass_for_the_refund_table() -> None:
    """The issue's refund table, written as YAML fixtures, passes against the policy."""
    report = run_fixtures(POLICIES, load_fixtures(FIXTURES), policy_version="v1")
    assert [result.passed for result in report.results] == [True] * 5
    assert report.passed


def test_fixtures_report_which_rules_were_exercised() -> None:
    """Coverage lists the rules some fixture made fire, and those no fixture did."""
    report = run_fixtures(POLICIES, load_fixtures(FIXTURES), policy_version="v1")
    assert report.covered == tuple(f"{TOOL}/{n}" for n in (
        "caller", "max_amount", "requires_approval_over", "allowed_currencies"))
    assert report.uncovered == (f"{TOOL}/tenant_argument", f"{TOOL}/environments", f"{TOOL}/policy_error")


def test_fixtures_fail_when_effect_or_rule_ids_differ() -> None:
    """A fixture passes only if both the effect and the exact set of rule ids match."""
    wrong = FIXTURES.replace("{effect: deny, rule_ids: [billing.process_refund/max_amount]}",
                             "{effect: deny, rule_ids: []}")
    wrong = wrong.replace("{effect: allow, rule_ids: []}", "{effect: deny, rule_ids: []}")
    report = run_fixtures(POLICIES, load_fixtures(wrong), policy_version="v1")
    assert [result.passed for result in report.results] == [False, True, False, True, True]
    assert not report.passed


def test_fixtures_compare_shadow_rule_ids_in_log_only_mode() -> None:
    """In log_only mode the expected effect is allow and the rule ids are the shadow decision's."""
    shadow = {TOOL: POLICIES[TOOL].model_copy(update={"mode": "log_only"})}
    fixtures = load_fixtures(FIXTURES.replace("{effect: deny,", "{effect: allow,")
                             .replace("{effect: require_approval,", "{effect: allow,"))
    report = run_fixtures(shadow, fixtures, policy_version="v1")
    assert report.passed
    assert f"{TOOL}/max_amount" in report.covered


def test_fixtures_reject_a_tool_without_a_policy() -> None:
    """A fixture for a tool no policy covers is a broken test, reported as an error."""
    fixtures = load_fixtures(FIXTURES.replace("tool: billing.process_refund", "tool: billing.unknown", 1))
    with pytest.raises(ValueError, match="no policy"):
        run_fixtures(POLICIES, fixtures, policy_version="v1")


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        FIXTURES.replace('"2026-03-02T10:00:00Z"', '"2026-03-02T10:00:00"', 1),  # naive time
        FIXTURES.replace("expect: {effect: allow,", "expect: {effect: maybe,", 1),
        FIXTURES.replace("environment: production", "environment: production\n  extra: 1", 1),
    ],
    ids=["not-a-list", "naive-time", "unknown-effect", "unknown-key"],
)
def test_fixtures_reject_malformed_files(text: str) -> None:
    """A fixture file that is not a list of well-formed entries is rejected when loaded."""
    with pytest.raises((ValueError, ValidationError)):
        load_fixtures(text)
