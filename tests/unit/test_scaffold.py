"""``init_deployment`` scaffolds a deployment by risk domain that lints clean, passes its fixtures and can be pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.config.loader import lint_deployment, load_deployment, write_pin
from portcullis.config.scaffold import DEFAULT_DOMAINS, Domain, init_deployment
from portcullis.errors import Problem
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.fixtures import load_fixtures, run_fixtures

LAYOUT = [
    "gateway.yaml",
    "tools/readonly/get_record.yml",
    "policy/fixtures/readonly.yaml",
    "tools/operations/update_record.yml",
    "policy/fixtures/operations.yaml",
    "tools/payments/transfer_funds.yml",
    "policy/fixtures/payments.yaml",
    "policy/data_class.yml",
    "policy/README.md",
    ".gitignore",
    ".github/CODEOWNERS",
    ".github/workflows/portcullis.yml",
    "README.md",
]
TOOLS = ["tools/operations/update_record.yml", "tools/payments/transfer_funds.yml", "tools/readonly/get_record.yml"]


def _where(root: Path, problems: list[Problem]) -> list[tuple[str, str, str]]:
    return sorted((p.path.relative_to(root).as_posix(), p.severity, p.rule) for p in problems)


def test_scaffold_writes_the_documented_layout(tmp_path: Path) -> None:
    """init writes gateway.yaml, a tool and a fixture file per default domain, policy/, CODEOWNERS, CI and README."""
    target = tmp_path / "deploy"
    written = init_deployment(target)
    assert [p.relative_to(target).as_posix() for p in written] == LAYOUT
    assert all(p.is_file() for p in written)


def test_scaffold_lints_with_only_the_not_pinned_warnings(tmp_path: Path) -> None:
    """A fresh scaffold has no errors and no notes; its only warnings say the example tools are not pinned yet."""
    init_deployment(tmp_path)
    assert _where(tmp_path, lint_deployment(tmp_path)) == [(path, "warning", "pin.missing") for path in TOOLS]


def test_scaffold_loads_one_service_per_domain_with_its_risk(tmp_path: Path) -> None:
    """Each domain is an http service of its name; its tool has the domain's risk and a policy."""
    init_deployment(tmp_path)
    deployment = load_deployment(tmp_path)
    assert sorted(deployment.gateway.services) == ["operations", "payments", "readonly"]
    assert all(s.transport == "http" for s in deployment.gateway.services.values())
    risks = {m.exposed_name: (m.domain, m.manifest.risk) for m in deployment.manifests}
    assert risks == {"readonly.get_record": ("readonly", "low"), "operations.update_record": ("operations", "medium"),
                     "payments.transfer_funds": ("payments", "high")}
    assert all(m.manifest.policy is not None and m.manifest.owner == "@your-org/platform-team"
               for m in deployment.manifests)


def test_scaffold_fixtures_pass_and_trip_every_rule(tmp_path: Path) -> None:
    """The scaffold's fixtures all pass and every native rule fires in one, the approval path included."""
    init_deployment(tmp_path)
    engine = PolicyEngine.from_deployment(load_deployment(tmp_path), environment="production")
    fixtures = [f for path in sorted((tmp_path / "policy/fixtures").glob("*.yaml"))
                for f in load_fixtures(path.read_text())]
    report = run_fixtures(engine, fixtures)
    assert report.passed and len(report.results) == 14
    assert report.uncovered == ()
    assert {f.expect.effect for f in fixtures} == {"allow", "deny", "require_approval"}


def test_a_high_domain_has_an_approval_path_and_an_approver(tmp_path: Path) -> None:
    """Each high-risk domain: requires_approval_over on its tool and an approver rule for <domain>.*."""
    init_deployment(tmp_path, domains=[Domain("vault", "high"), Domain("deploy", "high"), Domain("docs", "low")])
    deployment = load_deployment(tmp_path)
    rules = {rule.tools: rule.approvers for rule in deployment.gateway.approvals.approvers}
    assert rules == {("vault.*",): ("issuer:corp/role:vault-approver",),
                     ("deploy.*",): ("issuer:corp/role:deploy-approver",)}
    for loaded in deployment.manifests:
        policy = loaded.manifest.policy
        assert policy is not None
        assert (policy.requires_approval_over is not None) == (loaded.manifest.risk == "high")
    assert [p for p in lint_deployment(tmp_path) if p.severity != "warning"] == []


def test_a_scaffold_without_high_domains_has_no_approvals(tmp_path: Path) -> None:
    """Low and medium domains only: no approvals section (nothing waits for a person)."""
    init_deployment(tmp_path, domains=[Domain("wiki", "low"), Domain("tickets", "medium")])
    assert "approvals:" not in (tmp_path / "gateway.yaml").read_text()
    assert load_deployment(tmp_path).gateway.approvals.approvers == ()
    assert [p.rule for p in lint_deployment(tmp_path)] == ["pin.missing", "pin.missing"]


def test_pinning_the_scaffold_clears_the_last_warnings(tmp_path: Path) -> None:
    """After write_pin on each example manifest, lint reports nothing and the manifests' comments remain."""
    init_deployment(tmp_path)
    for relative in TOOLS:
        manifest = tmp_path / relative
        before = manifest.read_text()
        write_pin(manifest, "sha256:" + "1" * 64)
        assert manifest.read_text() == before + "pin: sha256:" + "1" * 64 + "\n"
    assert lint_deployment(tmp_path) == []


def test_scaffold_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    """init refuses to write into a directory that already has files, and leaves it untouched."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        init_deployment(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_scaffold_refuses_a_file_as_target(tmp_path: Path) -> None:
    """init refuses a target path that is an existing file."""
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        init_deployment(target)


def test_forced_scaffold_replaces_its_files_and_keeps_others(tmp_path: Path) -> None:
    """With force, init rewrites its own files and leaves unrelated files (a tool of its own included) alone."""
    init_deployment(tmp_path)
    (tmp_path / "gateway.yaml").write_text("broken: [\n")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "policy/fixtures/readonly.yaml").write_text("[]\n")
    mine = tmp_path / ".github/workflows/other.yml"
    mine.write_text("name: other\n")
    init_deployment(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and mine.read_text() == "name: other\n"
    assert {p.rule for p in lint_deployment(tmp_path)} == {"pin.missing"}


def test_forced_scaffold_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    """A symlink where a scaffold file goes is replaced, so the file it pointed to is not overwritten."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    target = tmp_path / "deploy"
    (target / ".github").mkdir(parents=True)
    (target / "gateway.yaml").symlink_to(outside)
    (target / ".github" / "CODEOWNERS").symlink_to(outside)
    init_deployment(target, force=True)
    assert outside.read_text() == "keep me"
    assert not (target / "gateway.yaml").is_symlink() and not (target / ".github/CODEOWNERS").is_symlink()


def test_default_domains_are_one_of_each_risk() -> None:
    """The defaults show all three risk levels."""
    assert sorted(d.risk for d in DEFAULT_DOMAINS) == ["high", "low", "medium"]


@pytest.mark.parametrize("linked", [".github", "tools", "policy/fixtures"])
def test_forced_scaffold_refuses_a_linked_directory_and_writes_nothing(tmp_path: Path, linked: str) -> None:
    """A directory of the scaffold that is a symlink (a hostile checkout) is refused before any write."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "deploy"
    (target / linked).parent.mkdir(parents=True)
    (target / linked).symlink_to(outside, target_is_directory=True)
    with pytest.raises(FileExistsError, match="symbolic link"):
        init_deployment(target, force=True)
    assert list(outside.iterdir()) == [] and not (target / "gateway.yaml").exists()
