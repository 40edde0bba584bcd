"""A third-party stdio upstream: the npm reference server @modelcontextprotocol/server-everything."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters

from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment

EVERYTHING = REPO / ".tools/everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
TOOLS = ("echo", "get-sum", "get-env")


def _node() -> str:
    node = shutil.which("node")
    if node is None or not EVERYTHING.exists():
        pytest.fail("server-everything is not installed: run scripts/install-node-tools.sh (make test does)")
    return node


async def _live(node: str) -> dict[str, dict]:
    async with Client(StdioServerParameters(command=node, args=[str(EVERYTHING), "stdio"]), cache=None) as client:
        tools = (await client.list_tools()).tools
    return {t.name: t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    node = _node()
    live = anyio.run(_live, node)
    root = tmp_path_factory.mktemp("everything") / "deployment"
    write_deployment(root, {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {"everything": {
        "transport": "stdio", "command": node, "args": [str(EVERYTHING), "stdio"],
        "env": {"EVERYTHING_VISIBLE": "1"},
        "sandbox": {"read_only_paths": [str(REPO / ".tools/everything")]}}}},  # the script node runs
        [manifest_from_live("everything", live[name]) for name in TOOLS])
    pinned = run_cli("pin", str(root))
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    with GatewayProcess(root, env={"GATEWAY_ONLY_SECRET": "s3cr3t-value"}) as process:
        yield process


@pytest.mark.parametrize("mode", ["auto", "legacy", "2026-07-28"])
async def test_reference_server_tools_work_through_the_gateway(gateway: GatewayProcess, mode: str) -> None:
    """A legacy-era TypeScript stdio server is served to clients of both eras."""
    async with gateway.client(mode=mode) as client:  # type: ignore[arg-type]
        names = sorted(t.name for t in (await client.list_tools()).tools)
        echoed = await client.call_tool("everything.echo", {"message": "hello"})
        summed = await client.call_tool("everything.get-sum", {"a": 2, "b": 3})
    assert names == ["everything.echo", "everything.get-env", "everything.get-sum"]
    assert "hello" in echoed.content[0].text
    assert "5" in summed.content[0].text


async def test_reference_server_sees_none_of_the_gateway_environment(gateway: GatewayProcess) -> None:
    """get-env shows only the configured variable: no PATH, HOME or gateway secrets."""
    async with gateway.client() as client:
        result = await client.call_tool("everything.get-env", {})
    env = json.loads(result.content[0].text)
    gateway_trust = {"PORTCULLIS_GATEWAY_JWKS", "PORTCULLIS_GATEWAY_ISSUER", "PORTCULLIS_SERVICE_AUDIENCE",
                     "PORTCULLIS_POLICY_ROOT", "PORTCULLIS_ENVIRONMENT", "PORTCULLIS_POLICY_ENFORCE"}
    assert set(env) == {"EVERYTHING_VISIBLE"} | gateway_trust
    assert env["EVERYTHING_VISIBLE"] == "1"
    assert '"d"' not in env["PORTCULLIS_GATEWAY_JWKS"]  # public keys only
    assert "s3cr3t-value" not in result.content[0].text


async def test_reference_server_schema_violations_are_refused(gateway: GatewayProcess) -> None:
    """Its draft-07 schemas are enforced at the gateway: a string for a number is refused."""
    async with gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("everything.get-sum", {"a": "2", "b": 3})
    assert caught.value.error.data == {"errors": [{"path": "/a", "rule": "type"}]}
