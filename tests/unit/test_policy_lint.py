"""Policy lint: conflicts, unreachable rules and missing policies, reported at their file and line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.cli.main import demo_deployment
from portcullis.config.loader import LoadedManifest, lint_deployment
from portcullis.config.model import ToolManifest
from portcullis.policy.lint import PolicyProblem, covers, lint_policies

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
        "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "tenant_id": {"type": "string"},
        "card": {"type": "object", "properties": {"number": {"type": "string"}}, "additionalProperties": False},
        "path": {"type": "string"},
    },
    "required": ["order_id", "amount", "currency"],
    "additionalProperties": False,
}
BASE_POLICY: dict[str, Any] = {
    "allowed_callers": ["agent:billing-bot", "app:customer-support-ui"],
    "max_amount": 500,
    "requires_approval_over": 100,
    "allowed_currencies": ["USD", "EUR"],
}


def manifest(policy: dict[str, Any] | None = None, schema: dict[str, Any] | None = None,
             **fields: Any) -> LoadedManifest:
    data: dict[str, Any] = {
        "name": "process_refund", "service": "billing", "owner": "payments@example.com",
        "description": "Refund.", "risk": "high",
        "classification": {"input": "Confidential", "output": "Confidential"},
        "input_schema": schema or SCHEMA, **fields,
    }
    if policy is not None:
        data["policy"] = policy
    return LoadedManifest(Path("tools/billing/process_refund.yml"), "billing", ToolManifest.model_validate(data),
                          "billing.process_refund")


def lint(policy_changes: dict[str, Any] | None = None, *, schema: dict[str, Any] | None = None,
         environment: str | None = "production", **fields: Any) -> list[PolicyProblem]:
    policy = {**BASE_POLICY, **(policy_changes or {})}
    return lint_policies([manifest(policy, schema, **fields)], environment=environment)


def rows(problems: list[PolicyProblem]) -> list[tuple[tuple[str | int, ...], str]]:
    return [(p.loc, p.severity) for p in problems]


def test_a_consistent_policy_has_no_problems() -> None:
    """The seed refund policy over its own schema is clean."""
    assert lint() == []


# ----------------------------------------------------------------------------- the table

CASES: dict[str, tuple[dict[str, Any], list[tuple[tuple[str | int, ...], str, str]]]] = {
    "same pattern allowed and denied": (
        {"denied_callers": ["agent:billing-bot"]},
        [(("policy", "allowed_callers", 0), "error", "'agent:billing-bot' is also denied")]),
    "allowed pattern covered by a denied wildcard": (
        {"denied_callers": ["app:customer-*"]},
        [(("policy", "allowed_callers", 1), "error", "covered by denied 'app:customer-*'")]),
    "allowed wildcard inside a wider denied wildcard": (
        {"allowed_callers": ["agent:ops-eu-*"], "denied_callers": ["agent:ops-*"]},
        [(("policy", "allowed_callers", 0), "error", "can never allow anyone")]),
    "environment not listed": (
        {"environments": ["staging"]},
        [(("policy", "environments"), "warning", "'production' is not listed")]),
    "enum value failing its own pattern": (
        {"constraints": [{"pointer": "/order_id", "enum": ["ORD-1", "ord-2"], "pattern": "^ORD-[0-9]+$"}]},
        [(("policy", "constraints", 0, "enum", 1), "warning", "'ord-2' on /order_id fails the constraint's own "
                                                              "pattern")]),
    "enum value over its own max_length": (
        {"constraints": [{"pointer": "/order_id", "enum": ["ORD-1", "ORD-123456"], "max_length": 6}]},
        [(("policy", "constraints", 0, "enum", 1), "warning", "max_length")]),
    "no enum value passes": (
        {"constraints": [{"pointer": "/amount", "enum": [1, 2], "minimum": 5}]},
        [(("policy", "constraints", 0, "enum", 0), "warning", "minimum"),
         (("policy", "constraints", 0, "enum", 1), "warning", "minimum"),
         (("policy", "constraints", 0, "enum"), "error", "every call with this argument is denied")]),
    "max_amount at the schema maximum": (
        {"max_amount": 1000, "requires_approval_over": 100},
        [(("policy", "max_amount"), "warning", "at or above the input schema's maximum 1000")]),
    "approval threshold above the schema maximum": (
        {"max_amount": None, "requires_approval_over": 5000},
        [(("policy", "requires_approval_over"), "warning", "the rule never applies")]),
    "approval threshold at the exclusive minimum": (
        {"requires_approval_over": 0},
        [(("policy", "requires_approval_over"), "warning", "every call needs an approval")]),
    "currency never accepted by the schema pattern": (
        {"allowed_currencies": ["USD", "EUR"], "currency_pointer": "/order_id"},
        [(("policy", "allowed_currencies", 0), "warning", "USD is never accepted"),
         (("policy", "allowed_currencies", 1), "warning", "EUR is never accepted"),
         (("policy", "allowed_currencies"), "error", "accepts none of them")]),
    "amount pointer naming no argument": (
        {"amount_pointer": "/amout"},
        [(("policy", "amount_pointer"), "error", "'/amout' names no argument of the input schema: every call "
                                                 "is denied")]),
    "tenant argument naming no argument": (
        {"tenant_argument": "/tenant"},
        [(("policy", "tenant_argument"), "error", "every call is denied")]),
    "required constraint on a nested argument that cannot exist": (
        {"constraints": [{"pointer": "/card/cvv", "max_length": 4}]},
        [(("policy", "constraints", 0, "pointer"), "error", "'/card/cvv'")]),
    "optional constraint naming no argument": (
        {"constraints": [{"pointer": "/reason", "max_length": 4, "required": False}]},
        [(("policy", "constraints", 0, "pointer"), "warning", "it has no effect")]),
    "redaction of an argument that cannot exist": (
        {"redact": ["/card/number", "/card_number"]},
        [(("policy", "redact", 1), "warning", "it has no effect")]),
}


@pytest.mark.parametrize(("changes", "expected"), CASES.values(), ids=CASES.keys())
def test_lint_reports_each_policy_problem_at_its_yaml_key(
        changes: dict[str, Any], expected: list[tuple[tuple[str | int, ...], str, str]]) -> None:
    """Each contradictory or unreachable rule is reported once, at the key that holds it."""
    problems = lint(changes)
    assert rows(problems) == [(loc, severity) for loc, severity, _ in expected], problems
    for problem, (_, _, fragment) in zip(problems, expected, strict=True):
        assert fragment in problem.message


@pytest.mark.parametrize(
    ("changes", "schema"),
    [
        ({"allowed_callers": ["agent:ops-*"], "denied_callers": ["agent:ops-eu-1"]}, None),  # deny one of a family
        ({"allowed_callers": ["agent:billing-bot"], "denied_callers": ["role:contractor"]}, None),  # other kind
        ({"environments": ["production", "staging"]}, None),
        ({"amount_pointer": "/money/value"}, {"type": "object"}),  # an open schema: cannot tell
        ({"redact": ["/anything"]}, {"type": "object", "properties": {}, "additionalProperties": True}),
        ({"tenant_argument": "/t"}, {"type": "object", "properties": {}, "additionalProperties": False,
                                     "anyOf": [{"required": ["t"]}]}),  # composition: cannot tell
        ({"allowed_currencies": ["JPY"]}, {"type": "object", "properties": {"amount": {"type": "number"},
                                                                            "currency": {}}}),
        ({"constraints": [{"pointer": "/order_id", "enum": ["ORD-1"], "pattern": "ORD-[0-9]+"}]}, None),
    ],
    ids=["deny-one-of-a-family", "other-kind", "environment-listed", "open-schema", "additional-allowed",
         "composition", "unconstrained-currency", "enum-passes"],
)
def test_lint_stays_silent_when_it_cannot_be_sure(changes: dict[str, Any], schema: dict[str, Any] | None) -> None:
    """Only certain problems are reported: open schemas, other caller kinds and partial denials pass."""
    assert lint(changes, schema=schema) == []


def test_lint_skips_the_environment_check_without_a_configured_environment() -> None:
    """With no environment configured the environments rule cannot be judged, so it is not."""
    assert lint({"environments": ["staging"]}, environment=None) == []


def test_lint_checks_sensitive_argument_pointers() -> None:
    """``sensitive_arguments`` that name no argument are reported as having no effect."""
    problems = lint(sensitive_arguments=["/card/number", "/cvv"])
    assert rows(problems) == [(("sensitive_arguments", 1), "warning")]
    assert "'/cvv' names no argument" in problems[0].message


def test_lint_warns_about_a_tool_without_a_policy() -> None:
    """A served tool with no ``policy:`` is denied to every caller, which the lint says."""
    problems = lint_policies([manifest(None)], environment="production")
    assert rows(problems) == [(("name",), "warning")]
    assert "billing.process_refund: no policy: the tool is denied to every caller" in problems[0].message
    assert lint_policies([manifest(None)], environment="production", report_missing=False) == []


@pytest.mark.parametrize(
    ("wider", "narrower", "expected"),
    [
        ("agent:a", "agent:a", True),
        ("agent:a*", "agent:ab", True),
        ("agent:a*", "agent:ab*", True),
        ("agent:ab*", "agent:a*", False),
        ("agent:ab", "agent:ab*", False),
        ("agent:a*", "user:ab", False),
        ("agent:a", "agent:A", True),  # a deny compares case-folded
        ("agent:a*", "agent:AB", True),
        ("issuer:corp/agent:a", "issuer:corp/agent:a", True),
        ("agent:a", "issuer:corp/agent:a", True),
        ("issuer:*/agent:a", "issuer:corp/agent:a", True),
        ("issuer:corp/agent:a", "agent:a", False),  # the allow admits other issuers too
        ("issuer:corp/agent:a", "issuer:partner/agent:a", False),
        ("issuer:corp/agent:a", "issuer:*/agent:a", False),
    ],
)
def test_covers_compares_kind_and_prefix(wider: str, narrower: str, expected: bool) -> None:
    """A denied pattern covers an allowed one of the same kind and issuer scope, by folded equality or prefix."""
    assert covers(wider, narrower) is expected


# ----------------------------------------------------------------------------- through portcullis lint


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "deployment"
    shutil.copytree(demo_deployment(), root)
    return root


def test_the_demo_deployment_lints_clean(demo: Path) -> None:
    """The bundled demo's policies and Rego module have no problem at all."""
    assert lint_deployment(demo) == []


def test_lint_deployment_prints_policy_problems_with_file_and_line(demo: Path) -> None:
    """A conflict in a manifest is reported by ``portcullis lint`` at the line of the offending key."""
    path = demo / "tools" / "billing" / "process_refund.yml"
    text = path.read_text().replace("  audit_required: true\n",
                                    "  audit_required: true\n  denied_callers:\n    - agent:billing-*\n")
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("  allowed_callers:"))
    problems = [p for p in lint_deployment(demo) if p.path == path]
    assert [(p.line, p.severity) for p in problems] == [(line, "error")]
    expected = f"{path}:{line}: error: allowed_callers: 'issuer:dev/agent:billing-bot' is covered"
    assert str(problems[0]).startswith(expected)


def test_lint_deployment_flags_a_missing_policy_once_policies_are_in_use(demo: Path) -> None:
    """In a deployment where tools have policies, one without is a warning at its name line."""
    path = demo / "tools" / "analytics" / "summarize_revenue.yml"
    data = yaml.safe_load(path.read_text())
    del data["policy"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    name_line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.startswith("name:"))
    problems = [(p.path, p.line, p.severity) for p in lint_deployment(demo)]
    assert problems == [(path, name_line, "warning")]


def test_lint_deployment_reports_rego_that_does_not_compile(demo: Path) -> None:
    """A Rego module with a syntax error is a lint error at the module's file and line."""
    broken = demo / "policy" / "broken.rego"
    broken.write_text("package portcullis.broken\n\ndeny contains x if {\n")
    errors = [p for p in lint_deployment(demo) if p.severity == "error"]
    assert [(p.path, p.line) for p in errors] == [(broken, 3)]
    assert errors[0].message.startswith("Rego policy does not compile: ")


def test_lint_deployment_reports_a_rego_module_rejected_without_a_line(demo: Path) -> None:
    """A module refused before compiling (no package) is an error on its file, without a line."""
    (demo / "policy" / "empty.rego").write_text("# nothing here\n")
    errors = [p for p in lint_deployment(demo) if p.severity == "error"]
    assert [(p.path, p.line) for p in errors] == [(demo / "policy" / "empty.rego", None)]
    assert "no package declaration" in errors[0].message
