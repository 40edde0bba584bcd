"""`portcullis pin` and `portcullis lint` against a service with a poisoned tool definition.

The poisoned definition is not pinned (so it is never served), its findings are shown escaped,
the clean tool next to it is pinned; `--accept-findings` pins it after review, loudly.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml
from mcp import Client, StdioServerParameters

from tests.e2e.harness import REPO, manifest_from_live, run_cli, write_deployment

MODULE = "tests.security.poisoned_service"


def _live() -> dict[str, dict[str, Any]]:
    async def listing() -> list[Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", MODULE], cwd=str(REPO))
        async with Client(params, cache=None) as client:
            return (await client.list_tools()).tools

    return {t.name: t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in asyncio.run(listing())}


def _deployment(root: Path, manifests: list[dict[str, Any]]) -> Path:
    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
        "svc": {"transport": "stdio", "command": sys.executable, "args": ["-m", MODULE], "cwd": str(REPO)}}}
    return write_deployment(root, gateway, manifests)


def test_pin_refuses_a_poisoned_definition_and_shows_why(tmp_path: Path) -> None:
    """The poisoned tool stays unpinned (state flagged, exit 1) with its findings escaped on stderr; the clean
    one is pinned. With --accept-findings it is pinned, and the command says how unsafe that is."""
    live = _live()
    clean = {**live["add"], "description": "Add two numbers."}  # the reviewed manifest copy is clean
    root = _deployment(tmp_path / "d", [manifest_from_live("svc", clean), manifest_from_live("svc", live["echo"])])
    done = run_cli("pin", str(root))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "flagged" in done.stdout
    add = yaml.safe_load((root / "tools" / "svc" / "add.yml").read_text())
    echo = yaml.safe_load((root / "tools" / "svc" / "echo.yml").read_text())
    assert add.get("pin") is None and echo.get("pin", "").startswith("sha256:")
    for rule in ("poisoning.secret_file", "poisoning.concealment", "poisoning.hidden_block",
                 "poisoning.invisible_unicode"):
        assert rule in done.stderr
    assert "\u202e" not in done.stderr + done.stdout and "\\u{202E}" in done.stderr

    accepted = run_cli("pin", str(root), "--accept-findings")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "--accept-findings" in accepted.stderr and "poisoning.secret_file" in accepted.stderr
    assert yaml.safe_load((root / "tools" / "svc" / "add.yml").read_text())["pin"].startswith("sha256:")


def test_lint_reports_a_poisoned_manifest_at_its_line(tmp_path: Path) -> None:
    """A manifest that carries the poisoned description fails lint with the finding at the description's line."""
    live = _live()
    manifests = [manifest_from_live("svc", live["add"]), manifest_from_live("svc", live["echo"])]
    root = _deployment(tmp_path / "d", manifests)
    done = run_cli("lint", "--format", "text", str(root))
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "poisoning.secret_file" in line]
    assert lines and "add.yml:4:" in lines[0].replace("\\", "/"), lines
    assert not [line for line in (done.stdout + done.stderr).splitlines() if "echo.yml" in line and "error" in line]


def test_accepting_findings_records_who_and_when_and_a_pinned_unaccepted_definition_is_flagged(tmp_path: Path) -> None:
    """A poisoned definition pinned without acceptance (pinned before the scanner, say) is flagged by
    `pin --check`; `--accept-findings --reviewer` writes findings_accepted (= the pin) with a comment naming
    the reviewer, the time and the rules; after that `pin --check` is clean."""
    from portcullis.pinning import definition_hash

    live = _live()
    pinned = manifest_from_live("svc", {**live["add"], "description": "Add two numbers."},
                                pin=definition_hash(live["add"]))
    root = _deployment(tmp_path / "d", [pinned])
    path = root / "tools" / "svc" / "add.yml"
    flagged = run_cli("pin", str(root), "--check")
    assert flagged.returncode == 1 and "flagged" in flagged.stdout and "poisoning.secret_file" in flagged.stderr
    accepted = run_cli("pin", str(root), "--accept-findings", "--reviewer", "carol@example.com")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    manifest = yaml.safe_load(path.read_text())
    assert manifest["findings_accepted"] == manifest["pin"] == definition_hash(live["add"])
    (note,) = [line for line in path.read_text().splitlines() if line.startswith("# findings accepted by")]
    assert note.startswith("# findings accepted by carol@example.com at 20") and "poisoning.secret_file" in note
    again = run_cli("pin", str(root), "--check")
    assert again.returncode == 0, again.stdout + again.stderr
