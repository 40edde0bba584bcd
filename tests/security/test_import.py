"""`portcullis import` from real stdio upstreams: drafts a person must review, never a path a hostile
upstream chose.

Poisoned definitions (tests/security/poisoned_service.py): findings head the manifest as an escaped,
ASCII-only comment block and are printed; no pin for a flagged definition; every manifest carries
REVIEW-ME placeholders that lint (and serve, through the same model) refuse until a person fills them in.
Hostile tool names (tests/security/hostile_names_service.py): refused, nothing written outside
tools/<domain>/. Existing files and links are never replaced without --force (links never).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, StdioServerParameters

from portcullis.config.loader import load_deployment
from portcullis.errors import ConfigError
from portcullis.pinning import definition_hash
from tests.e2e.harness import REPO, run_cli

POISONED = "tests.security.poisoned_service"
HOSTILE = "tests.security.hostile_names_service"


def _live(module: str) -> dict[str, dict[str, Any]]:
    async def listing() -> list[Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", module], cwd=str(REPO))
        async with Client(params, cache=None) as client:
            return (await client.list_tools()).tools

    return {t.name: t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in asyncio.run(listing())}


def _deployment(root: Path, module: str) -> Path:
    root.mkdir(parents=True)
    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
        "svc": {"transport": "stdio", "command": sys.executable, "args": ["-m", module], "cwd": str(REPO)}}}
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    return root


def _review(path: Path) -> None:
    """What the reviewing person does: fill in the placeholders."""
    text = path.read_text().replace("owner: REVIEW-ME", "owner: team@example.com")
    text = text.replace("risk: REVIEW-ME", "risk: low").replace(": REVIEW-ME", ": Internal")
    path.write_text(text)


def test_import_drafts_manifests_lint_refuses_until_reviewed(tmp_path: Path) -> None:
    root = _deployment(tmp_path / "d", POISONED)
    done = run_cli("import", "svc", "--config", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    add, echo = root / "tools" / "svc" / "add.yml", root / "tools" / "svc" / "echo.yml"
    live = _live(POISONED)
    # findings: printed escaped, and at the head of the file as comments; the file is pure ASCII
    assert "poisoning.secret_file" in done.stderr and "\u202e" not in done.stdout + done.stderr
    head = [line for line in add.read_text().splitlines() if line.startswith("#")]
    assert any("poisoning.secret_file" in line for line in head) and any("\\u{202E}" in line for line in head)
    for path in (add, echo):
        assert path.read_bytes().isascii()
    drafted = yaml.safe_load(add.read_text())
    assert drafted["description"] == live["add"]["description"]  # exactly as served (YAML-escaped in the file)
    assert drafted["input_schema"] == live["add"]["inputSchema"] and "pin" not in drafted and "policy" not in drafted
    assert yaml.safe_load(echo.read_text())["pin"] == definition_hash(live["echo"])
    # unreviewed: lint and serve's loader refuse both files, at the placeholders
    lint = run_cli("lint", "--format", "text", str(root))
    assert lint.returncode == 1
    refused = [line for line in (lint.stdout + lint.stderr).splitlines() if "REVIEW-ME" in line]
    assert {Path(line.split(":")[0]).name for line in refused} == {"add.yml", "echo.yml"}
    with pytest.raises(ConfigError):
        load_deployment(root)
    # reviewed: echo is clean; add still fails lint on its poisoned description (the scanner reads the copy)
    _review(echo)
    _review(add)
    lint = run_cli("lint", "--format", "text", str(root))
    output = lint.stdout + lint.stderr
    assert "REVIEW-ME" not in output and "echo.yml" not in output.replace("echo.yml differs", "")
    assert lint.returncode == 1 and "add.yml" in output and "poisoning.secret_file" in output


def test_import_never_replaces_a_manifest_without_force_and_never_follows_a_link(tmp_path: Path) -> None:
    root = _deployment(tmp_path / "d", POISONED)
    folder = root / "tools" / "svc"
    folder.mkdir(parents=True)
    (folder / "echo.yml").write_text("# mine\n")
    target = tmp_path / "outside.yml"
    target.write_text("outside\n")
    os.symlink(target, folder / "add.yml")
    kept = run_cli("import", "svc", "--config", str(root))
    assert (folder / "echo.yml").read_text() == "# mine\n" and target.read_text() == "outside\n"
    assert "--force" in kept.stderr
    forced = run_cli("import", "svc", "--config", str(root), "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "REVIEW-ME" in (folder / "echo.yml").read_text()
    assert target.read_text() == "outside\n" and (folder / "add.yml").is_symlink()  # a link: never replaced


def test_import_refuses_hostile_tool_names_and_writes_nothing_outside_its_folder(tmp_path: Path) -> None:
    root = _deployment(tmp_path / "d", HOSTILE)
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    done = run_cli("import", "svc", "--config", str(root), "--out", str(out))
    assert done.returncode == 1, done.stdout + done.stderr  # some tools refused
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - {p.relative_to(tmp_path) for p in before}
    files = sorted(str(p) for p in written if (tmp_path / p).is_file())
    assert files == ["out/tools/svc/Same.yml", "out/tools/svc/ok.yml"], files
    assert not Path("/tmp/absolute-escape.yml").exists()
    shown = done.stdout + done.stderr
    assert "\x00" not in shown and "\u202e" not in shown and "\u0430" not in shown
    assert shown.count("refused") >= 12
