"""``portcullis policy test`` and ``portcullis policy version`` through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from portcullis.cli.main import app, demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.policy import PolicyEngine

runner = CliRunner()

ONE_FIXTURE = """\
- name: billing-bot refunds 80 USD
  principal: {issuer_name: dev, agent_id: billing-bot}
  tool: billing.process_refund
  arguments: {order_id: ORD-20001, amount: 80, currency: USD, reason: damaged}
  now: "2026-03-02T10:00:00Z"
  expect: {effect: allow, rule_ids: []}
"""


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "deployment"
    shutil.copytree(demo_deployment(), root)
    return root


def test_policy_test_passes_every_demo_fixture_with_full_rule_coverage() -> None:
    """The bundled demo's fixtures all pass and every native and Rego rule fires at least once."""
    result = runner.invoke(app, ["policy", "test"])
    assert result.exit_code == 0, result.output
    assert "rule coverage: 18/18" in result.output
    assert "never fired" not in result.output and "FAIL" not in result.output
    assert "36 passed, 0 failed" in result.output


def test_policy_test_prints_a_json_report(demo: Path) -> None:
    """--json prints the version, each fixture's expected and actual decision, and coverage."""
    result = runner.invoke(app, ["policy", "test", str(demo), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] is True and report["coverage"]["uncovered"] == []
    assert report["policy_version"] == PolicyEngine.from_deployment(
        load_deployment(demo), environment="production").version
    first = report["results"][0]
    assert set(first) == {"file", "name", "tool", "method", "passed", "expected", "got"}
    refund = next(r for r in report["results"] if r["name"] == "billing-bot refunds 300 USD")
    assert refund["got"] == {"effect": "require_approval", "reasons": ["amount_needs_approval"],
                             "rule_ids": ["billing.process_refund/requires_approval_over"]}


def test_policy_test_fails_and_shows_expected_and_actual_decisions(demo: Path) -> None:
    """A fixture whose expectation is wrong fails the run (exit 1) with both decisions shown."""
    path = demo / "policy" / "fixtures" / "billing.yaml"
    path.write_text(path.read_text().replace("expect: {effect: deny, rule_ids: [billing.process_refund/max_amount]}",
                                             "expect: {effect: allow, rule_ids: []}", 1))
    result = runner.invoke(app, ["policy", "test", str(demo)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    failing = [line for line in result.output.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and "billing-bot refunds 600 USD" in failing[0]
    assert "allow" in failing[0] and "deny" in failing[0]
    assert "35 passed, 1 failed" in result.output


def test_policy_test_runs_only_the_given_fixture_files_and_reports_uncovered_rules(demo: Path) -> None:
    """--fixtures replaces the directory's fixtures; rules none of them fired are listed, not failed."""
    only = demo / "only.yaml"
    only.write_text(ONE_FIXTURE)
    result = runner.invoke(app, ["policy", "test", str(demo), "--fixtures", str(only)])
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output
    assert "rule coverage: 0/18" in result.output
    assert "never fired: billing.process_refund/max_amount" in result.output
    assert "never fired: rego/trainee_high_risk" in result.output


def test_policy_test_decides_in_the_requested_environment(demo: Path) -> None:
    """--environment changes the environment fixtures without one are decided in (and the version)."""
    default = runner.invoke(app, ["policy", "version", str(demo)])
    staging = runner.invoke(app, ["policy", "version", str(demo), "--environment", "staging"])
    assert default.exit_code == staging.exit_code == 0
    assert default.output.strip() != staging.output.strip()
    assert runner.invoke(app, ["policy", "test", str(demo), "--environment", "staging"]).exit_code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy/fixtures/billing.yaml": "- {name: [unclosed\n"}, "billing.yaml: not YAML"),
        ({"policy/fixtures/billing.yaml": "{}\n"}, "billing.yaml: a fixture file is a YAML list"),
        ({"policy/fixtures/billing.yaml": ONE_FIXTURE.replace("now: \"2026-03-02T10:00:00Z\"",
                                                              "now: \"2026-03-02T10:00:00\"")},
         "timezone"),
        ({"policy/fixtures/billing.yaml": ONE_FIXTURE.replace("billing.process_refund", "billing.nope")},
         "unknown tool 'billing.nope'"),
        ({"policy/fixtures/billing.yaml": ONE_FIXTURE.replace("agent_id: billing-bot}", "roles: admin}")},
         "principal: roles must be a list"),
        ({"policy/broken.rego": "package portcullis.broken\nimport rego.v1\ndeny contains x if {\n"},
         "broken.rego:3"),
        ({"gateway.yaml": "version: 1\nservices: {}\n"}, "gateway.yaml:2: error"),
    ],
    ids=["fixture-not-yaml", "fixture-not-a-list", "fixture-naive-time", "fixture-unknown-tool",
         "fixture-bad-principal", "rego-does-not-compile", "gateway-invalid"],
)
def test_policy_test_reports_load_errors_cleanly_and_exits_1(demo: Path, change: dict[str, str],
                                                             message: str) -> None:
    """A deployment, Rego module or fixture file that does not load is a clean message and exit 1."""
    for relative, text in change.items():
        (demo / relative).write_text(text)
    result = runner.invoke(app, ["policy", "test", str(demo)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_policy_test_without_fixtures_is_a_failure(demo: Path) -> None:
    """No fixtures at all is not a pass: the run exits 1 and says where fixtures go."""
    shutil.rmtree(demo / "policy" / "fixtures")
    result = runner.invoke(app, ["policy", "test", str(demo)])
    assert result.exit_code == 1
    assert "no fixtures" in result.output


def test_policy_version_prints_the_engine_version(demo: Path) -> None:
    """`portcullis policy version DIR` prints the pv- version decisions and audit records carry."""
    result = runner.invoke(app, ["policy", "version", str(demo)])
    assert result.exit_code == 0
    expected = PolicyEngine.from_deployment(load_deployment(demo), environment="production").version
    assert result.output.strip() == expected
