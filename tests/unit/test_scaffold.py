"""``init_deployment`` scaffolds a deployment that lints clean and can be pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.config.loader import lint_deployment, load_deployment, write_pin
from portcullis.config.scaffold import init_deployment
from portcullis.errors import Problem


def _lint(root: Path) -> list[Problem]:
    """The scaffold's problems but the note that it has no decision fixtures yet (issue 18's init adds them)."""
    return [p for p in lint_deployment(root) if p.rule != "coverage.fixture"]


def test_scaffold_writes_the_documented_layout(tmp_path: Path) -> None:
    """init writes gateway.yaml, one example manifest and the policy folder, and returns their paths."""
    target = tmp_path / "deploy"
    written = init_deployment(target)
    assert [p.relative_to(target).as_posix() for p in written] == [
        "gateway.yaml",
        "tools/example/echo.yml",
        "policy/data_class.yml",
        "policy/README.md",
    ]
    assert all(p.is_file() for p in written)


def test_scaffold_lints_with_only_the_not_pinned_warning(tmp_path: Path) -> None:
    """A fresh scaffold has no errors; its one warning says the example tool is not pinned yet."""
    init_deployment(tmp_path)
    problems = _lint(tmp_path)
    assert [(p.path.relative_to(tmp_path).as_posix(), p.severity) for p in problems] == [
        ("tools/example/echo.yml", "warning")
    ]
    assert problems[0].message.startswith("not pinned:")


def test_scaffold_loads_with_the_example_http_service(tmp_path: Path) -> None:
    """The scaffold loads: one http service 'example' and its tool exposed as 'example.echo'."""
    init_deployment(tmp_path)
    deployment = load_deployment(tmp_path)
    service = deployment.gateway.services["example"]
    assert service.transport == "http"
    assert service.url == "http://127.0.0.1:9001/mcp"
    assert [m.exposed_name for m in deployment.manifests] == ["example.echo"]


def test_pinning_the_scaffold_clears_the_last_warning(tmp_path: Path) -> None:
    """After write_pin on the example manifest, lint reports nothing and its comments remain."""
    init_deployment(tmp_path)
    manifest = tmp_path / "tools/example/echo.yml"
    before = manifest.read_text()
    write_pin(manifest, "sha256:" + "1" * 64)
    assert _lint(tmp_path) == []
    assert manifest.read_text() == before + "pin: sha256:" + "1" * 64 + "\n"


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
    """With force, init rewrites its own files and leaves unrelated files alone."""
    init_deployment(tmp_path)
    (tmp_path / "gateway.yaml").write_text("broken: [\n")
    (tmp_path / "notes.txt").write_text("mine")
    init_deployment(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert [p.severity for p in _lint(tmp_path)] == ["warning"]


def test_forced_scaffold_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    """A symlink where a scaffold file goes is replaced, so the file it pointed to is not overwritten."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    target = tmp_path / "deploy"
    target.mkdir()
    (target / "gateway.yaml").symlink_to(outside)
    init_deployment(target, force=True)
    assert outside.read_text() == "keep me"
    assert not (target / "gateway.yaml").is_symlink()
