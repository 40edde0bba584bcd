"""The command line: init, lint, version and error exits, through the real entry point."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from portcullis import __version__
from portcullis.cli.main import app

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    """`portcullis version` prints the version."""
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_init_scaffolds_a_directory_that_lints_without_errors(tmp_path: Path) -> None:
    """A fresh scaffold has no lint errors, only the 'not pinned' warning."""
    target = tmp_path / "deployment"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    assert (target / "gateway.yaml").is_file() and list((target / "tools").glob("*/*.yml"))
    linted = runner.invoke(app, ["lint", str(target)])
    assert linted.exit_code == 0, linted.output
    assert "0 error(s)" in linted.output and "not pinned" in linted.output


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    """init never overwrites an existing deployment without --force."""
    (tmp_path / "keep.txt").write_text("x")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_lint_reports_file_and_line_and_fails(tmp_path: Path) -> None:
    """A broken gateway.yaml makes lint exit 1 with the file and line of the problem."""
    runner.invoke(app, ["init", str(tmp_path / "d")])
    config = tmp_path / "d" / "gateway.yaml"
    config.write_text(config.read_text() + "\nsurprise_key: 1\n")
    result = runner.invoke(app, ["lint", "--format", "text", str(tmp_path / "d")])
    line = len(config.read_text().splitlines())
    assert result.exit_code == 1
    assert f"gateway.yaml:{line}: error" in result.output


def test_serve_with_a_broken_config_exits_with_the_problems_and_no_traceback(tmp_path: Path) -> None:
    """serve refuses a bad deployment with exit 2 and readable problems."""
    runner.invoke(app, ["init", str(tmp_path / "d")])
    (tmp_path / "d" / "gateway.yaml").write_text("version: 1\nservices: {}\nlisten: {port: -1}\n")
    result = runner.invoke(app, ["serve", "--config", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "gateway.yaml" in result.output and "Traceback" not in result.output
