"""A state directory inside the deployment directory, through real gateway processes and the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import yaml

from tests.e2e.harness import GatewayProcess, copy_demo_services, run_cli_in_process

MODERN = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
          "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}


def status(gateway: GatewayProcess, token: str) -> int:
    headers = {**MODERN, "Authorization": f"Bearer {token}"}
    return httpx2.post(gateway.url, headers=headers, json=LIST, timeout=10).status_code


def test_gateway_restarts_with_its_state_inside_the_deployment_and_revokes_when_broken(tmp_path: Path) -> None:
    """Start, stop, start again with state_dir inside the deployment; then break the deployment and
    revoke an agent with `token revoke --config`: the running gateway refuses it within seconds."""
    root = copy_demo_services(tmp_path / "deployment", "billing")  # one service: the test lists tools
    state = root / "state"
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["state_dir"] = str(state)
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root, state_dir=state) as first:
        assert status(first, first.token()) == 200
    assert any(state.glob("*.pem"))  # the gateway's keys now sit inside the deployment
    lint = run_cli_in_process("lint", str(root))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    with GatewayProcess(root, state_dir=state) as second:
        token = second.token(agent="rogue-bot")
        assert status(second, token) == 200
        (root / "tools" / "billing" / "broken.yml").write_text("name: [unclosed\n")  # the deployment is broken
        assert run_cli_in_process("lint", str(root)).returncode == 1
        done = run_cli_in_process("token", "revoke", "--config", str(root), "--agent", "rogue-bot",
                                  "--reason", "incident")
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and status(second, token) == 200:
            time.sleep(0.1)
        assert status(second, token) == 401
        assert status(second, second.token(agent="other-bot")) == 200
