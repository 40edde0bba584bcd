"""MRTR (2026-07-28 ``input_required``) end to end: the official SDK client in 2026-07-28 mode, through a
gateway process, to the conformance fixture over Streamable HTTP (the raw relay).

Two services front the same fixture: ``fx`` allows every kind of client request, ``shut`` allows none
(the default). The SDK client drives the rounds with its callbacks; a refused kind, a forged
``requestState`` and another caller's ``requestState`` are refused and recorded in the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import MCPError, types

from portcullis.request_state import MESSAGE, PREFIX
from tests.conformance.conftest import start_fixture_server
from tests.conformance.manifests import fixture_tools
from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import GatewayProcess, manifest_from_live, run_cli, write_deployment

ALL = {"sampling": True, "elicitation_form": True, "elicitation_url": True, "roots": True}
TOOLS = ("test_input_required_result_elicitation", "test_input_required_result_sampling",
         "test_input_required_result_list_roots", "test_input_required_result_multi_round",
         "test_input_required_result_multiple_inputs", "test_input_required_result_capabilities")
MODERN = "2026-07-28"


@pytest.fixture(scope="module")
def mrtr_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    logs = tmp_path_factory.mktemp("fixture-logs")
    fixture, url = start_fixture_server(logs)
    try:
        live = {t["name"]: t for t in asyncio.run(fixture_tools())}
        root = tmp_path_factory.mktemp("mrtr") / "deployment"
        services = {"fx": {"transport": "http", "url": url, "client_requests": ALL},
                    "shut": {"transport": "http", "url": url}}
        manifests = [manifest_from_live(service, live[name], classification={"input": "Public", "output": "Public"})
                     for service in services for name in TOOLS]
        write_deployment(root, {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
                                "services": services}, manifests)
        pinned = run_cli("pin", str(root))
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        gateway = GatewayProcess(root)
        with gateway:
            yield gateway
    finally:
        fixture.stop()


async def _elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada", "ok": True})


async def _sample(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="Hello there"),
                                     model="test-model")


async def _roots(_ctx: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


def _client(gateway: GatewayProcess, **kwargs: Any) -> Any:
    return gateway.client(mode=MODERN, elicitation_callback=_elicit, sampling_callback=_sample,
                          list_roots_callback=_roots, **kwargs)


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def _outcomes(gateway: GatewayProcess) -> list[dict[str, Any]]:
    records = await read_chain(gateway.state_dir / STORE_FILE)
    return [dict(r.fields) for r in records if r.kind == "outcome"]


@pytest.mark.parametrize(("tool", "expected"), [
    ("test_input_required_result_elicitation", "Ada"),
    ("test_input_required_result_sampling", "Hello there"),
    ("test_input_required_result_list_roots", "file:///work/project"),
    ("test_input_required_result_multi_round", ""),
    ("test_input_required_result_multiple_inputs", "roots=1"),
], ids=["elicitation", "sampling", "roots", "multi-round", "multiple"])
async def test_sdk_client_completes_an_input_required_call_through_the_gateway(
        mrtr_gateway: GatewayProcess, tool: str, expected: str) -> None:
    """The SDK client answers the upstream's requests round by round and gets the tool's result."""
    async with _client(mrtr_gateway) as client:
        result = await client.call_tool(f"fx.{tool}", {})
    assert not result.is_error, _text(result)
    assert expected in _text(result)


async def test_the_caller_sees_the_gateway_envelope_never_the_upstream_state(mrtr_gateway: GatewayProcess) -> None:
    """The input_required result carries the screened request and the gateway's sealed state only; its
    round is recorded with kinds and keys, never values."""
    async with _client(mrtr_gateway) as client:
        first = await client.session.call_tool("fx.test_input_required_result_elicitation", {},
                                               allow_input_required=True)
    assert isinstance(first, types.InputRequiredResult)
    assert first.request_state is not None and first.request_state.startswith(PREFIX)
    request = first.input_requests["user_name"]
    assert request.method == "elicitation/create" and request.params.message == "What is your name?"
    relayed = [o["client_input"] for o in await _outcomes(mrtr_gateway)
               if o.get("outcome") == "input_required" and o.get("client_input", {}).get("relayed")]
    assert {"key": "user_name", "kind": "elicitation_form"} in relayed[-1]["relayed"]
    assert relayed[-1]["round"] == 1


async def test_a_kind_the_service_does_not_allow_is_refused_and_recorded(mrtr_gateway: GatewayProcess) -> None:
    """The deny-by-default service refuses the upstream's elicitation (-31040), and the trail says so."""
    async with _client(mrtr_gateway) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("shut.test_input_required_result_elicitation", {})
    assert info.value.error.code == -31040
    assert info.value.error.data == {"reason": "not_allowed"}
    refused = [o for o in await _outcomes(mrtr_gateway) if o.get("outcome") == "client_request_refused"]
    assert refused[-1]["client_input"]["refused"] == {"key": "user_name", "kind": "elicitation_form",
                                                     "reason": "not_allowed"}


async def test_a_capability_the_caller_did_not_declare_is_never_asked(mrtr_gateway: GatewayProcess) -> None:
    """The upstream is told only what the caller declared and the service allows: a caller without
    sampling, elicitation or roots is asked for none of them."""
    async with mrtr_gateway.client(mode=MODERN) as client:  # no callbacks: no client capabilities declared
        with pytest.raises(MCPError) as info:
            await client.call_tool("fx.test_input_required_result_elicitation", {})
    assert (info.value.error.code, info.value.error.data) == (-31040, {"reason": "not_declared"})


async def test_a_forged_request_state_is_refused(mrtr_gateway: GatewayProcess) -> None:
    """A requestState the gateway did not seal gets the one fixed refusal; the attempt is recorded."""
    async with _client(mrtr_gateway) as client:
        with pytest.raises(MCPError) as info:
            await client.session.call_tool("fx.test_input_required_result_elicitation", {},
                                           request_state=PREFIX + "A" * 80,
                                           input_responses={"user_name": types.ElicitResult(action="accept")},
                                           allow_input_required=True)
    assert (info.value.error.code, info.value.error.message) == (-32602, MESSAGE)
    refused = [o for o in await _outcomes(mrtr_gateway) if o.get("outcome") == "request_state_refused"]
    assert refused[-1]["client_input"] == {"state_refused": "unauthentic"}


async def test_another_callers_request_state_is_refused(mrtr_gateway: GatewayProcess) -> None:
    """Bob cannot resume Alice's state (nor Alice resume it for another tool); the reason is recorded."""
    async with _client(mrtr_gateway) as alice:
        first = await alice.session.call_tool("fx.test_input_required_result_elicitation", {},
                                              allow_input_required=True)
    assert isinstance(first, types.InputRequiredResult)
    answer = {"user_name": types.ElicitResult(action="accept", content={"name": "Mallory"})}
    async with _client(mrtr_gateway, token=mrtr_gateway.token(user="bob")) as bob:
        with pytest.raises(MCPError) as info:
            await bob.session.call_tool("fx.test_input_required_result_elicitation", {},
                                        request_state=first.request_state, input_responses=answer,
                                        allow_input_required=True)
    assert (info.value.error.code, info.value.error.message) == (-32602, MESSAGE)
    async with _client(mrtr_gateway) as alice:
        with pytest.raises(MCPError) as other_tool:
            await alice.session.call_tool("fx.test_input_required_result_sampling", {},
                                          request_state=first.request_state, allow_input_required=True)
        done = await alice.session.call_tool("fx.test_input_required_result_elicitation", {},
                                             request_state=first.request_state, input_responses=answer,
                                             allow_input_required=True)
    assert other_tool.value.error.message == MESSAGE
    assert isinstance(done, types.CallToolResult) and "Mallory" in _text(done)
    reasons = [o["client_input"]["state_refused"] for o in await _outcomes(mrtr_gateway)
               if o.get("outcome") == "request_state_refused"]
    assert reasons[-2:] == ["other_principal", "other_target"]

