"""`portcullis init` makes a deployment repository that passes its own gate: lint, policy test, secret scan,
a workflow GitHub accepts, CODEOWNERS that guard every high-risk domain, and hostile options refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from portcullis import __version__
from portcullis.cli.main import app
from portcullis.config.loader import lint_deployment

runner = CliRunner()
SHA_PINNED = re.compile(r"[a-z0-9-]+/[a-z0-9-]+(/[a-z0-9-]+)?@[0-9a-f]{40}")
OWNER = re.compile(r"@[A-Za-z0-9-]+(/[A-Za-z0-9_.-]+)?|[^@\s]+@[^@\s]+")
TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"  # a GitHub token's shape (not a real one)


def _init(target: Path, *args: str) -> None:
    result = runner.invoke(app, ["init", str(target), *args])
    assert result.exit_code == 0, result.output


def _codeowners(root: Path) -> list[tuple[str, list[str]]]:
    """(pattern, owners) per rule line; every line must parse as a pattern and at least one owner."""
    rules = []
    for line in (root / ".github/CODEOWNERS").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern, *owners = line.split()
        assert owners and all(OWNER.fullmatch(owner) for owner in owners), line
        assert pattern == "*" or pattern.startswith("/"), line
        rules.append((pattern, owners))
    return rules


def _owners_of(rules: list[tuple[str, list[str]]], path: str) -> list[str]:
    """GitHub's rule for these patterns: the LAST matching line decides ("/dir/" covers everything below)."""
    found: list[str] = []
    for pattern, owners in rules:
        if pattern == "*" or path == pattern or (pattern.endswith("/") and path.startswith(pattern)):
            found = owners
    return found


def test_a_fresh_repository_passes_lint_policy_test_and_secret_scan(tmp_path: Path) -> None:
    """Default init: lint has only pin warnings, `policy test` and `secrets scan` exit 0."""
    _init(tmp_path / "d")
    problems = lint_deployment(tmp_path / "d")
    assert [p for p in problems if p.rule != "pin.missing"] == []
    assert {p.severity for p in problems} == {"warning"}
    tested = runner.invoke(app, ["policy", "test", str(tmp_path / "d")])
    assert tested.exit_code == 0 and "14 passed, 0 failed" in tested.output, tested.output
    scanned = runner.invoke(app, ["secrets", "scan", str(tmp_path / "d")])
    assert scanned.exit_code == 0 and "0 error(s)" in scanned.output


def test_lint_in_ci_conditions_has_only_the_pin_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as the workflow runs it (from the checkout, with its PORTCULLIS_STATE_DIR, after the SARIF report is
    written there): still only pin warnings, no state.dir warning."""
    _init(tmp_path / "d")
    flow = yaml.safe_load((tmp_path / "d/.github/workflows/portcullis.yml").read_text())
    monkeypatch.chdir(tmp_path / "d")
    monkeypatch.setenv("PORTCULLIS_STATE_DIR", flow["env"]["PORTCULLIS_STATE_DIR"])
    assert runner.invoke(app, ["lint", ".", "--format", "sarif", "--output", "lint.sarif"]).exit_code == 0
    assert {p.rule for p in lint_deployment(Path("."))} == {"pin.missing"}
    monkeypatch.delenv("PORTCULLIS_STATE_DIR")
    assert "state.dir" in {p.rule for p in lint_deployment(Path("."))}  # what the setting is for


def test_custom_domains_pass_too(tmp_path: Path) -> None:
    """Two high domains, a medium and a low one, custom owners: still no errors, and policy test passes."""
    _init(tmp_path / "d", "--domain", "ledger:high", "--domain", "infra_ops:high", "--domain", "crm-sync:medium",
          "--domain", "kb:low", "--owner", "@acme/platform", "--security-team", "security@acme.example")
    assert {p.rule for p in lint_deployment(tmp_path / "d")} == {"pin.missing"}
    assert runner.invoke(app, ["policy", "test", str(tmp_path / "d")]).exit_code == 0
    manifest = yaml.safe_load((tmp_path / "d/tools/ledger/transfer_funds.yml").read_text())
    assert manifest["owner"] == "@acme/platform" and manifest["risk"] == "high"


def test_the_workflow_validates_against_githubs_schema(tmp_path: Path) -> None:
    """check-jsonschema's GitHub workflow schema accepts the scaffolded workflow."""
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("check-jsonschema is not installed (a dev dependency)")
        pytest.skip("check-jsonschema is not installed")
    _init(tmp_path / "d")
    result = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows",
                             str(tmp_path / "d/.github/workflows/portcullis.yml")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_the_three_gates_pinned_and_read_only(tmp_path: Path) -> None:
    """Jobs lint (SARIF, upload, table), policy-test, secret-scan; contents: read; SHA-pinned actions; our version."""
    _init(tmp_path / "d")
    flow = yaml.safe_load((tmp_path / "d/.github/workflows/portcullis.yml").read_text())
    assert flow["permissions"] == {"contents": "read"}
    assert flow["env"]["PORTCULLIS_VERSION"] == __version__
    jobs = flow["jobs"]
    assert {name: job["name"] for name, job in jobs.items()} == {
        "lint": "lint", "policy-test": "policy-test", "secret-scan": "secret-scan"}
    assert jobs["lint"]["permissions"] == {"contents": "read", "security-events": "write"}
    assert all("permissions" not in job for name, job in jobs.items() if name != "lint")
    runs = {name: [step.get("run") for step in job["steps"] if "run" in step] for name, job in jobs.items()}
    install = 'python -m pip install "portcullis==${{ env.PORTCULLIS_VERSION }}"'
    assert runs == {"lint": [install, "portcullis lint . --format sarif --output lint.sarif", "portcullis lint ."],
                    "policy-test": [install, "portcullis policy test ."],
                    "secret-scan": [install, "portcullis secrets scan ."]}
    uses = [step["uses"] for job in jobs.values() for step in job["steps"] if "uses" in step]
    assert len(uses) == 7 and all(SHA_PINNED.fullmatch(use) for use in uses), uses
    upload = next(step for step in jobs["lint"]["steps"] if "upload-sarif" in step.get("uses", ""))
    assert upload["with"]["sarif_file"] == "lint.sarif"
    assert all(step.get("with", {}).get("persist-credentials") is False
               for job in jobs.values() for step in job["steps"] if "checkout" in step.get("uses", ""))


def test_codeowners_parse_and_guard_every_high_domain(tmp_path: Path) -> None:
    """Every line is a pattern and owners; high-risk tools, policy, gateway.yaml and .github need the
    security team (last match wins); low and medium tools are the owner's alone."""
    _init(tmp_path / "d", "--domain", "ledger:high", "--domain", "vault:high", "--domain", "kb:low",
          "--domain", "ops:medium", "--owner", "@acme/platform", "--security-team", "@acme/security")
    rules = _codeowners(tmp_path / "d")
    assert rules[0] == ("*", ["@acme/platform"])
    guarded = ["@acme/security", "@acme/platform"]
    for path in ("/tools/ledger/transfer_funds.yml", "/tools/vault/transfer_funds.yml", "/policy/fixtures/kb.yaml",
                 "/gateway.yaml", "/.github/workflows/portcullis.yml", "/.github/CODEOWNERS"):
        assert _owners_of(rules, path) == guarded, path
    for path in ("/tools/kb/get_record.yml", "/tools/ops/update_record.yml", "/README.md"):
        assert _owners_of(rules, path) == ["@acme/platform"], path


def test_one_team_for_both_roles_is_named_once(tmp_path: Path) -> None:
    """--owner equal to --security-team: guarded lines name it once."""
    _init(tmp_path / "d", "--owner", "@acme/all", "--security-team", "@acme/all")
    assert all(owners == ["@acme/all"] for _, owners in _codeowners(tmp_path / "d"))


def test_the_readme_states_the_branch_protection_to_apply(tmp_path: Path) -> None:
    """README.md: PR, code-owner review, stale dismissal, the three required checks, up to date, no force
    push or deletion, no bypass (administrators included), signed commits as an option."""
    _init(tmp_path / "d")
    text = (tmp_path / "d/README.md").read_text()
    for phrase in ("Require a pull request before merging", "Required approvals: 2", "Require review from Code Owners",
                   "Dismiss stale pull request approvals", "`lint`, `policy-test`, `secret-scan`",
                   "Require branches to be up to date", "Do not allow force pushes", "do not allow deletions",
                   "Include administrators", "require signed commits"):
        assert phrase in text, phrase
    _init(tmp_path / "low", "--domain", "kb:low")
    assert "Required approvals: 1" in (tmp_path / "low/README.md").read_text()


def _scaffolded(tmp_path: Path) -> list[str]:
    target = tmp_path / "probe"
    _init(target)
    return sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())


@pytest.mark.parametrize("relative", [
    "gateway.yaml", "tools/payments/transfer_funds.yml", "policy/fixtures/readonly.yaml", "policy/README.md",
    ".github/CODEOWNERS", ".github/workflows/portcullis.yml", "README.md", ".gitignore"])
def test_a_secret_planted_in_a_scaffolded_file_fails_the_secret_scan(tmp_path: Path, relative: str) -> None:
    """A literal token added to a scaffolded file: `secrets scan` exits 1 naming the file and rule, not the value."""
    assert relative in _scaffolded(tmp_path)
    _init(tmp_path / "d")
    path = tmp_path / "d" / relative
    path.write_text(path.read_text() + f"# deploy token {TOKEN}\n")
    result = runner.invoke(app, ["secrets", "scan", str(tmp_path / "d"), "--format", "json"])
    assert result.exit_code == 1
    assert f'"path": "{relative}"' in result.output and "secret.github.token" in result.output
    assert TOKEN not in result.output


def test_every_scaffolded_file_is_scanned(tmp_path: Path) -> None:
    """A token in each of the scaffold's files at once: one finding per file."""
    _init(tmp_path / "d")
    files = _scaffolded(tmp_path)
    for relative in files:
        path = tmp_path / "d" / relative
        path.write_text(path.read_text() + f"# {TOKEN}\n")
    found = {p.path.relative_to(tmp_path / "d").as_posix() for p in lint_deployment(tmp_path / "d")
             if p.rule == "secret.github.token"}
    assert found == set(files) and len(files) == 13


HOSTILE_DOMAINS = {
    "parent": "../x", "nested parent": "a/../../x", "absolute": "/abs", "empty": "", "slash": "a/b",
    "backslash": "a\\b", "dot": ".", "hidden": ".github", "upper case": "Payments", "space": "pay ments",
    "cyrillic a": "p\u0430yments", "fullwidth": "\uff50\uff41\uff59", "zero width": "pay\u200bments",
    "bidi override": "pay\u202estnemy", "newline": "pay\nments", "escape": "pay\x1b[2Jments",
    "nul": "pay\x00", "leading digit": "1pay", "leading dash": "-pay", "device name": "con",
    "too long": "p" * 64, "combining": "pay\u0301ments", "ligature": "\ufb01nance",
}


@pytest.mark.parametrize("name", list(HOSTILE_DOMAINS.values()), ids=list(HOSTILE_DOMAINS))
def test_hostile_domain_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    """An unsafe domain name exits 2, writes nothing, and is shown escaped."""
    target = tmp_path / "d"
    result = runner.invoke(app, ["init", str(target), "--domain", f"{name}:high"])
    assert result.exit_code == 2, result.output
    assert not target.exists() and sorted(tmp_path.iterdir()) == []
    assert "domain" in result.output
    assert not any(ch in result.output for ch in "\x1b\x00\u202e\u200b\u0430")


@pytest.mark.parametrize(("args", "message"), [
    (["--domain", "pay:high", "--domain", "pay:low"], "given twice"),
    (["--domain", "pay"], "NAME:RISK"),
    (["--domain", "pay:critical"], "NAME:RISK"),
    (["--domain", "pay:HIGH"], "NAME:RISK"),
    (["--domain", "pay:high:x"], "NAME:RISK"),
    (["--domain", ":high"], "empty"),
    (["--owner", "@acme/team\n* @evil"], "owner"),
    (["--owner", "@acme/team # everyone"], "owner"),
    (["--owner", ""], "owner"),
    (["--security-team", "acme-security"], "security team"),
    (["--security-team", "@acme/sec\u202e"], "security team"),
])
def test_bad_options_are_refused_with_a_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    """Duplicates, a missing or unknown risk, an owner that could inject CODEOWNERS lines: exit 2, nothing written."""
    result = runner.invoke(app, ["init", str(tmp_path / "d"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "d").exists()
    assert "\u202e" not in result.output


def test_force_keeps_foreign_files_and_refreshes_its_own(tmp_path: Path) -> None:
    """init refuses a non-empty directory; with --force it rewrites its files and keeps everyone else's."""
    target = tmp_path / "d"
    _init(target)
    foreign = {"notes.md": "mine\n", ".github/workflows/deploy.yml": "name: deploy\n",
               "tools/payments/refund.yml": "not a manifest: [\n"}
    for relative, text in foreign.items():
        (target / relative).write_text(text)
    (target / ".github/CODEOWNERS").write_text("* @someone\n")
    refused = runner.invoke(app, ["init", str(target)])
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert (target / ".github/CODEOWNERS").read_text() == "* @someone\n"
    _init(target, "--force")
    assert all((target / relative).read_text() == text for relative, text in foreign.items())
    assert _codeowners(target)[0] == ("*", ["@your-org/platform-team"])


def test_a_target_that_cannot_be_written_exits_1_without_a_traceback(tmp_path: Path) -> None:
    """A target below a regular file: exit 1 with the path and the reason, no traceback."""
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["init", str(tmp_path / "file" / "d")])
    assert result.exit_code == 1 and "init: cannot write" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
