"""Data governance through a real gateway process: a result tagged with another tenant is withheld,
a call naming two tenants is refused, and a Restricted tool stays inside its environment."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from mcp import Client, MCPError

from tests.e2e import tenant_service
from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment


async def _live_tools() -> list[dict[str, Any]]:
    async with Client(tenant_service.server) as client:
        tools = (await client.list_tools()).tools
    return [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        live = {t["name"]: t for t in pool.submit(asyncio.run, _live_tools()).result()}
    root = tmp_path_factory.mktemp("governance") / "deployment"
    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
               "services": {"tenants": {"transport": "stdio", "command": sys.executable,
                                        "args": ["-m", "tests.e2e.tenant_service"], "cwd": str(REPO)}}}
    policy = {"allowed_callers": ["scope:mcp:tools"]}
    manifests = [
        manifest_from_live("tenants", live["account"], egress=False, policy=policy),
        manifest_from_live("tenants", live["transfer"], egress=False,
                           policy={**policy, "tenant_argument": "/source", "tenant_arguments": ["/target"]}),
    ]
    restricted = manifest_from_live("tenants", live["account"], egress=False, policy=policy,
                                    classification={"input": "Restricted", "output": "Restricted"})
    write_deployment(root, gateway, manifests)
    # the same upstream tool exposed a second time as a Restricted tool
    (root / "tools" / "restricted").mkdir(parents=True)
    (root / "gateway.yaml").write_text((root / "gateway.yaml").read_text().replace(
        "services:\n", "services:\n  restricted:\n    transport: stdio\n    command: " + sys.executable +
        "\n    args: ['-m', 'tests.e2e.tenant_service']\n    cwd: '" + str(REPO) + "'\n", 1))
    (root / "tools" / "restricted" / "account.yml").write_text(yaml.safe_dump({**restricted, "service": "restricted"}))
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    with GatewayProcess(root) as process:
        yield process


async def _outcomes(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in await read_chain(gateway.state_dir / STORE_FILE) if r.kind == "outcome"]


async def test_a_result_tagged_with_the_callers_tenant_is_returned(gateway: GatewayProcess) -> None:
    """The tenant's own result reaches it, and the upstream's tag does not."""
    async with gateway.client(token=gateway.token(tenant="acme")) as client:
        result = await client.call_tool("tenants.account", {"tenant": "acme"})
    assert not result.is_error
    assert "balance of acme" in result.content[0].text
    assert "io.portcullis/tenant" not in str(result.meta or {})


@pytest.mark.parametrize("other", ["globex", "ACME", "\uff41cme"])
async def test_a_result_tagged_with_another_tenant_is_withheld(gateway: GatewayProcess, other: str) -> None:
    """A confused upstream answering for another tenant: -31021, nothing of the result, a recorded outcome."""
    async with gateway.client(token=gateway.token(tenant="acme")) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("tenants.account", {"tenant": other})
    assert caught.value.code == -31021
    assert "balance" not in str(caught.value.error)
    assert "balance" not in gateway.log()
    withheld = [o for o in await _outcomes(gateway) if o.get("error_code") == -31021]
    assert withheld and withheld[-1]["governance"] == {"withheld": "tenant_mismatch"}
    assert "balance" not in str(withheld)


async def test_a_call_mixing_two_tenants_is_refused(gateway: GatewayProcess) -> None:
    """Source and target must both be the caller's tenant; nothing is forwarded otherwise."""
    async with gateway.client(token=gateway.token(tenant="acme")) as client:
        ok = await client.call_tool("tenants.transfer", {"source": "acme", "target": "acme"})
        with pytest.raises(MCPError) as caught:
            await client.call_tool("tenants.transfer", {"source": "acme", "target": "globex"})
    assert not ok.is_error
    assert caught.value.code == -31020
    assert caught.value.error.data["rule_id"] == "tenants.transfer/tenant_argument"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_restricted_tool_is_hidden_from_a_caller_outside_the_environment(gateway: GatewayProcess,
                                                                                  mode: str) -> None:
    """The development token carries no environment attribute: the Restricted tool is not listed, and a
    call is answered exactly as for a tool that does not exist, before anything is forwarded."""
    async with gateway.client(mode=mode, token=gateway.token(tenant="acme")) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as hidden:
            await client.call_tool("restricted.account", {"tenant": "acme"})
        with pytest.raises(MCPError) as missing:
            await client.call_tool("restricted.no_such_tool", {"tenant": "acme"})
    assert "restricted.account" not in listed and "tenants.account" in listed
    assert hidden.value.error.model_dump() == missing.value.error.model_dump()
    assert hidden.value.error.message == "Unknown tool"
