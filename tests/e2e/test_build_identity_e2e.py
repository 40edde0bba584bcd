"""Build identity end to end: the demo services and a restarted one, as `portcullis incident report` shows them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client, MCPError

from portcullis.pinning import definition_hash
from tests.e2e import versioned_service
from tests.e2e.harness import REPO, GatewayProcess, copy_demo, manifest_from_live

SCRIPT = REPO / "tests" / "e2e" / "versioned_service.py"


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(os.path.realpath(path)).read_bytes()).hexdigest()


def _deployment(root: Path, version_file: Path) -> Path:
    """The demo deployment plus the versioned service, run as `python <script>` (an interpreter and its script)."""
    copy_demo(root)
    gateway = yaml.safe_load((root / "gateway.yaml").read_text())
    gateway["services"]["versioned"] = {
        "transport": "stdio", "command": sys.executable, "args": [str(SCRIPT)],
        "env": {"VERSIONED_FILE": str(version_file)},
        "sandbox": {"read_only_paths": [str(SCRIPT.parent), str(version_file.parent)]}}
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))

    async def live() -> list[Any]:
        async with Client(versioned_service.server) as client:
            return [t.model_dump(by_alias=True, exclude_none=True, mode="json")
                    for t in (await client.list_tools()).tools]

    for tool in anyio.run(live):
        path = root / "tools" / "versioned" / f"{tool['name']}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        # pinned as `portcullis pin` would (the same definition, listed in process: no extra gateway start)
        manifest = manifest_from_live("versioned", tool, pin=definition_hash(tool))
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def _report(state_dir: Path, since: float, *args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from portcullis.cli.main import app

    result = CliRunner().invoke(app, ["incident", "report", "--since", str(since), "--state-dir", str(state_dir),
                                      *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


async def _calls(gateway: GatewayProcess, version_file: Path) -> None:
    async with gateway.client() as client:
        invoice = await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
        assert not invoice.is_error
        assert (await client.call_tool("versioned.version", {})).structured_content == {"result": "1.0.0"}
        version_file.write_text("2.0.0\n")  # the next start of the service is another build
        with pytest.raises(MCPError):
            await client.call_tool("versioned.stop", {})
        deadline = time.monotonic() + 60
        while True:  # poll: the service restarts with backoff
            try:
                result = await client.call_tool("versioned.version", {})
                if result.structured_content == {"result": "2.0.0"}:
                    return
            except MCPError:
                pass
            assert time.monotonic() < deadline, "the service did not come back"
            await anyio.sleep(0.2)


def test_incident_report_names_each_touched_services_build_and_a_restart_with_another_version(
        tmp_path: Path) -> None:
    """Executable (and script) SHA-256 for stdio services, the identity in force from before --since,
    and both identities, flagged, for the service restarted as a new version inside the window."""
    version_file = tmp_path / "version" / "VERSION"
    version_file.parent.mkdir()
    version_file.write_text("1.0.0\n")
    root = _deployment(tmp_path / "deployment", version_file)
    with GatewayProcess(root) as gateway:
        since = time.time()  # after every service's first identity record: the report must look back
        anyio.run(_calls, gateway, version_file)
    code, output = _report(gateway.state_dir, since, "--format", "json")
    assert code == 0, output
    report = json.loads(output)
    assert report["chain"]["status"] == "verified"
    services = {s["service"]: s for s in report["services"]}
    assert set(services) == {"billing", "versioned"}  # only the services the window's calls touched

    billing = services["billing"]
    [build] = billing["builds"]
    assert build["before_window"] and build["transport"] == "stdio"
    assert build["module"] == "portcullis.demo.services.billing"
    assert build["executable"] == os.path.realpath(sys.executable)
    assert build["executable_sha256"] == _sha256(sys.executable)
    assert not billing["build_changed"] and billing["build"] != "not recorded"

    versioned = services["versioned"]
    assert versioned["build_changed"] is True
    assert [(b["server_name"], b["server_version"], b["before_window"]) for b in versioned["builds"]] == [
        ("versioned", "1.0.0", True), ("versioned", "2.0.0", False)]
    for seen in versioned["builds"]:
        assert seen["executable_sha256"] == _sha256(sys.executable)
        assert (seen["script"], seen["script_sha256"]) == (str(SCRIPT), _sha256(SCRIPT))
        assert seen["protocol_version"] not in ("", "not recorded")

    code, markdown = _report(gateway.state_dir, since)
    assert code == 0 and "**CHANGED in the window (2 identities):**" in markdown
