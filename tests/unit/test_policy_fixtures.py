"""Golden decision fixtures: a YAML table of calls run against the policies, with rule coverage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from portcullis.cli.main import demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.policy import PolicyEngine, ToolInfo, ToolPolicy, load_fixtures, run_fixtures
from portcullis.surface import SurfaceCatalog, surface_policies

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


def info(name: str) -> ToolInfo:
    service, _, tool = name.partition(".")
    return ToolInfo(exposed_name=name, service=service, upstream_name=tool, risk="high", owner="payments@example.com",
                    classification_input="Confidential", classification_output="Confidential")


def engine(policies: dict[str, ToolPolicy | None] = POLICIES, environment: str = "production") -> PolicyEngine:
    return PolicyEngine.build({name: (policy, info(name)) for name, policy in policies.items()}, None,
                              environment=environment)


def test_fixtures_all_pass_for_the_refund_table() -> None:
    """The issue's refund table, written as YAML fixtures, passes against the policy."""
    report = run_fixtures(engine(), load_fixtures(FIXTURES))
    assert [result.passed for result in report.results] == [True] * 5
    assert report.passed


def test_fixtures_report_which_rules_were_exercised() -> None:
    """Coverage lists the rules some fixture made fire, and those no fixture did."""
    report = run_fixtures(engine(), load_fixtures(FIXTURES))
    assert report.covered == tuple(f"{TOOL}/{n}" for n in (
        "caller", "max_amount", "requires_approval_over", "allowed_currencies"))
    assert report.uncovered == (f"{TOOL}/tenant_argument", f"{TOOL}/environments")


def test_fixtures_fail_when_effect_or_rule_ids_differ() -> None:
    """A fixture passes only if both the effect and the exact set of rule ids match."""
    wrong = FIXTURES.replace("{effect: deny, rule_ids: [billing.process_refund/max_amount]}",
                             "{effect: deny, rule_ids: []}")
    wrong = wrong.replace("{effect: allow, rule_ids: []}", "{effect: deny, rule_ids: []}")
    report = run_fixtures(engine(), load_fixtures(wrong))
    assert [result.passed for result in report.results] == [False, True, False, True, True]
    assert not report.passed


def test_fixtures_compare_shadow_rule_ids_in_log_only_mode() -> None:
    """In log_only mode the expected effect is allow and the rule ids are the shadow decision's."""
    shadow = {TOOL: POLICIES[TOOL].model_copy(update={"mode": "log_only"})}
    fixtures = load_fixtures(FIXTURES.replace("{effect: deny,", "{effect: allow,")
                             .replace("{effect: require_approval,", "{effect: allow,"))
    report = run_fixtures(engine(shadow), fixtures)
    assert report.passed
    assert f"{TOOL}/max_amount" in report.covered


def test_fixtures_reject_a_tool_the_engine_does_not_know() -> None:
    """A fixture for a tool the deployment does not have is a broken test, reported as an error."""
    fixtures = load_fixtures(FIXTURES.replace("tool: billing.process_refund", "tool: billing.unknown", 1))
    with pytest.raises(ValueError, match=r"unknown tool 'billing\.unknown'"):
        run_fixtures(engine(), fixtures)


def test_fixtures_reject_a_malformed_principal() -> None:
    """A fixture whose principal is not a valid claim form is a broken test, named in the error."""
    fixtures = load_fixtures(FIXTURES.replace("principal: {agent_id: billing-bot,", "principal: {agent_id: 7,", 1))
    with pytest.raises(ValueError, match=r"billing-bot refunds 80 USD.*agent_id must be a string"):
        run_fixtures(engine(), fixtures)


def test_fixtures_show_that_a_tool_without_a_policy_is_denied() -> None:
    """A known tool without a policy is decided (no_policy), so a fixture can pin that denial down."""
    fixtures = load_fixtures(FIXTURES.replace("tool: billing.process_refund", "tool: billing.get_invoice", 1)
                             .replace("{effect: allow, rule_ids: []}",
                                      "{effect: deny, rule_ids: [billing.get_invoice/no_policy]}", 1))
    report = run_fixtures(engine({**POLICIES, "billing.get_invoice": None}), fixtures)
    assert report.passed
    assert "billing.get_invoice/no_policy" in report.covered


def test_fixtures_decide_in_their_own_environment_or_the_engines() -> None:
    """A fixture's environment overrides the engine's; without one the engine's environment applies."""
    text = FIXTURES.replace("  environment: production\n", "", 1)
    staging = text.replace("environment: production", "environment: staging", 1)
    staging = staging.replace("{effect: require_approval, rule_ids: [billing.process_refund/requires_approval_over]}",
                              "{effect: deny, rule_ids: [billing.process_refund/requires_approval_over, "
                              "billing.process_refund/environments]}")
    report = run_fixtures(engine(), load_fixtures(staging))
    assert report.passed, [(r.fixture.label, r.decision) for r in report.results]
    assert f"{TOOL}/environments" in report.covered
    assert {r.decision.policy_version for r in report.results} == {engine().version,
                                                                  engine(environment="staging").version}


def test_fixtures_pass_their_session_through() -> None:
    """A fixture's optional session is parsed; without one the engine is given none."""
    fixtures = load_fixtures(FIXTURES.replace("  expect: {effect: allow,", "  session: {refunds: 2}\n"
                                              "  expect: {effect: allow,", 1))
    assert fixtures[0].session == {"refunds": 2}
    assert fixtures[1].session is None


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        FIXTURES.replace('"2026-03-02T10:00:00Z"', '"2026-03-02T10:00:00"', 1),  # naive time
        FIXTURES.replace("expect: {effect: allow,", "expect: {effect: maybe,", 1),
        FIXTURES.replace("environment: production", "environment: production\n  extra: 1", 1),
        FIXTURES.replace("environment: production", "environment: ''", 1),
        "- {name: [unclosed\n",
    ],
    ids=["not-a-list", "naive-time", "unknown-effect", "unknown-key", "empty-environment", "not-yaml"],
)
def test_fixtures_reject_malformed_files(text: str) -> None:
    """A fixture file that is not a list of well-formed entries is rejected when loaded."""
    with pytest.raises((ValueError, ValidationError)):
        load_fixtures(text)


def test_the_demo_fixtures_pass_and_cover_every_rule() -> None:
    """The bundled demo's fixture files pass against its manifests and Rego module, with no rule left unfired."""
    root = demo_deployment()
    deployment = load_deployment(root)
    demo = PolicyEngine.from_deployment(deployment, environment="production", rego_budget_s=10.0)
    surface = PolicyEngine.build(surface_policies(SurfaceCatalog(deployment)), demo.rego, environment="production")
    fixtures = [f for path in sorted(Path(root, "policy", "fixtures").glob("*.yaml"))
                for f in load_fixtures(path.read_text())]
    report = run_fixtures(demo, fixtures, surface)
    assert [r.fixture.label for r in report.results if not r.passed] == []
    assert {r.fixture.method for r in report.results} == {"tools/call", "resources/read", "prompts/get"}
    assert report.uncovered == ()
    assert {"rego/contractor_sensitive_data", "rego/cross_tenant", "rego/trainee_high_risk"} <= set(report.covered)


@pytest.mark.parametrize("targets", [{}, {"tool": "a.b", "prompt": "a.p"}, {"resource": "x+r://i", "prompt": "a.p"}])
def test_a_fixture_names_exactly_one_tool_resource_or_prompt(targets: dict[str, str]) -> None:
    """None, or two of tool/resource/prompt, is a malformed fixture."""
    entry = {"principal": {"user_id": "u"}, "now": "2026-03-02T10:00:00Z", "expect": {"effect": "allow"}, **targets}
    with pytest.raises(ValueError, match="exactly one"):
        load_fixtures(yaml.safe_dump([entry]))


def test_a_resource_fixture_without_the_surface_engine_is_a_broken_test() -> None:
    """A resource or prompt fixture is never silently decided by the tools' engine."""
    deployment = load_deployment(demo_deployment())
    demo = PolicyEngine.from_deployment(deployment, environment="production", rego_budget_s=10.0)
    fixture = load_fixtures(yaml.safe_dump([{"principal": {"user_id": "u"}, "resource": "files+handbook://index",
                                              "now": "2026-03-02T10:00:00Z", "expect": {"effect": "allow"}}]))
    with pytest.raises(ValueError, match="unknown resource"):
        run_fixtures(demo, fixture)
