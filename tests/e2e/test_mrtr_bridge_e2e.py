"""The MRTR bridge end to end: a 2025-era caller (the official SDK client, ``mode="legacy"``) calls tools whose
2026-07-28 upstream answers ``input_required``; the gateway asks the caller each request on its call's stream
and retries for it, every round through the whole pipeline.

Same setup as :mod:`tests.e2e.test_mrtr_e2e` (the conformance fixture over Streamable HTTP, the raw relay):
``fx`` allows every kind of client request, ``shut`` none."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import MCPError, types

from tests.conformance.conftest import start_fixture_server
from tests.conformance.manifests import fixture_tools
from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import GatewayProcess, manifest_from_live, run_cli, write_deployment

ALL = {"sampling": True, "elicitation_form": True, "elicitation_url": True, "roots": True}
TOOLS = ("test_input_required_result_elicitation", "test_input_required_result_sampling",
         "test_input_required_result_list_roots", "test_input_required_result_multi_round",
         "test_input_required_result_multiple_inputs")


@pytest.fixture(scope="module")
def bridge_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    logs = tmp_path_factory.mktemp("fixture-logs")
    fixture, url = start_fixture_server(logs)
    try:
        live = {t["name"]: t for t in asyncio.run(fixture_tools())}
        root = tmp_path_factory.mktemp("bridge") / "deployment"
        services = {"fx": {"transport": "http", "url": url, "client_requests": ALL},
                    "shut": {"transport": "http", "url": url}}
        manifests = [manifest_from_live(service, live[name], classification={"input": "Public", "output": "Public"})
                     for service in services for name in TOOLS]
        write_deployment(root, {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
                                "services": services}, manifests)
        pinned = run_cli("pin", str(root))
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        with GatewayProcess(root) as gateway:
            yield gateway
    finally:
        fixture.stop()


class Caller:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def elicit(self, _ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"name": "Ada", "ok": True})

    async def sample(self, _ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.asked.append("sampling")
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="Hello there"),
                                         model="test-model")

    async def roots(self, _ctx: Any) -> types.ListRootsResult:
        self.asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    def client(self, gateway: GatewayProcess) -> Any:
        return gateway.client(mode="legacy", elicitation_callback=self.elicit, sampling_callback=self.sample,
                              list_roots_callback=self.roots)


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


@pytest.mark.parametrize(("tool", "expected", "asked"), [
    ("test_input_required_result_elicitation", "Ada", ["elicitation"]),
    ("test_input_required_result_sampling", "Hello there", ["sampling"]),
    ("test_input_required_result_list_roots", "file:///work/project", ["roots"]),
    ("test_input_required_result_multi_round", "", ["elicitation", "elicitation"]),
    ("test_input_required_result_multiple_inputs", "roots=1", ["elicitation", "sampling", "roots"]),
], ids=["elicitation", "sampling", "roots", "multi-round", "multiple"])
async def test_a_legacy_caller_is_asked_and_gets_the_result(bridge_gateway: GatewayProcess, tool: str, expected: str,
                                                            asked: list[str]) -> None:
    """The 2025-era caller answers push requests; the gateway retries with its answers until the tool is done."""
    caller = Caller()
    async with caller.client(bridge_gateway) as client:
        result = await client.call_tool(f"fx.{tool}", {})
    assert not result.is_error, _text(result)
    assert expected in _text(result)
    assert sorted(caller.asked) == sorted(asked)


async def test_every_round_is_its_own_decision_and_outcome(bridge_gateway: GatewayProcess) -> None:
    """The bridged call is two dispatches: two decisions, an input_required outcome then ok, and the
    relayed request is on the outcome record of the round that carried its answer."""
    caller = Caller()
    async with caller.client(bridge_gateway) as client:
        await client.call_tool("fx.test_input_required_result_elicitation", {})
    records = await read_chain(bridge_gateway.state_dir / STORE_FILE)
    outcomes = [r.fields for r in records if r.kind == "outcome"]
    assert outcomes[-2]["outcome"] == "input_required" and outcomes[-1]["outcome"] == "ok"
    assert outcomes[-1]["client_requests"] == [{"kind": "elicitation_form", "service": "fx", "outcome": "relayed",
                                                "reason": None, "tool": "fx.test_input_required_result_elicitation"}]


async def test_a_kind_the_service_does_not_allow_is_refused_before_the_caller_is_asked(
        bridge_gateway: GatewayProcess) -> None:
    """shut allows nothing: the screen refuses (-31040 not_allowed) and the caller is never asked."""
    caller = Caller()
    async with caller.client(bridge_gateway) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("shut.test_input_required_result_elicitation", {})
    assert (info.value.error.code, info.value.error.data) == (-31040, {"reason": "not_allowed"})
    assert caller.asked == []


async def test_a_legacy_caller_that_declared_nothing_is_never_asked(bridge_gateway: GatewayProcess) -> None:
    """No callbacks, so no capabilities sealed in the session: refused not_declared."""
    async with bridge_gateway.client(mode="legacy") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("fx.test_input_required_result_elicitation", {})
    assert (info.value.error.code, info.value.error.data) == (-31040, {"reason": "not_declared"})
