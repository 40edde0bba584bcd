"""Resources, resource templates and prompts end to end: the official SDK client (2025-11-25 and
2026-07-28) and raw 2026-07-28 HTTP, through a gateway process, to an SDK service over stdio (the SDK
connector) and over Streamable HTTP (the raw relay)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import yaml
from mcp import Client, MCPError, StdioServerParameters, types

from portcullis.pinning import surface_hash
from tests.e2e.harness import (
    REPO,
    GatewayProcess,
    cli_in_process,
    free_port,
    manifest_from_live,
    stop_child,
    write_deployment,
)
from tests.e2e.surface_service import CANARY

MODULE = "tests.e2e.surface_service"
WRITERS = {"allowed_callers": ["role:writer"]}
EVERYONE = {"allowed_callers": ["scope:mcp:tools"]}
NOTES, PAGE, PROMPT = "surf+notes://team", "surf+notes://pages/{id}", "surf.brief"


def _live() -> dict[str, Any]:
    async def listing() -> dict[str, Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", MODULE], cwd=str(REPO))
        async with Client(params, cache=None) as client:
            return {"tools": [t.model_dump(by_alias=True, exclude_none=True, mode="json")
                              for t in (await client.list_tools()).tools]}

    return asyncio.run(listing())


# the pinned deployment, built (and pinned against the live service) once per test process: both fixture
# params and the subscriptions module copy it and only change how the gateway reaches the service
_PINNED: list[Path] = []


def _pinned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _PINNED:
        return _PINNED[0]
    root = tmp_path_factory.mktemp("surface-pinned") / "deployment"
    service = {"transport": "stdio", "command": sys.executable, "args": ["-m", MODULE], "cwd": str(REPO)}
    live = _live()
    controls = [manifest_from_live("surf", t) for t in live["tools"] if t["name"] in ("mutate", "touch")]
    write_deployment(root, {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
                            "services": {"surf": service}}, controls)
    common = {"service": "surf", "owner": "tests@example.com",
              "classification": {"input": "Internal", "output": "Internal"}}
    files = {
        "resources/surf/team-notes.yml": {**common, "name": "team-notes", "uri": "notes://team",
                                           "description": "The team's notes.", "policy": EVERYONE},
        "resources/surf/page.yml": {**common, "name": "page", "uri_template": "notes://pages/{id}",
                                     "description": "One page by id.", "policy": WRITERS},
        "prompts/surf/brief.yml": {**common, "name": "brief", "description": "Write a brief about a topic.",
                                    "arguments": [{"name": "topic", "required": True}], "policy": WRITERS},
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(yaml.safe_dump(data, sort_keys=False))
    code, output = cli_in_process("pin", str(root))
    assert code == 0, output
    for relative in files:  # every manifest now carries the live definition's pin
        assert yaml.safe_load((root / relative).read_text())["pin"].startswith("sha256:")
    _PINNED.append(root)
    return root


def _deployment(root: Path, service: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the pinned deployment whose gateway reaches the surface service as ``service`` says (the
    service's definitions, hence the pins, are the same over either transport)."""
    shutil.copytree(_pinned(tmp_path_factory), root)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["services"]["surf"] = service
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def start_http_service() -> tuple[subprocess.Popen[bytes], str]:
    """The surface service over Streamable HTTP on a free port, answering; returns it and its URL."""
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", MODULE], cwd=str(REPO),
                             env={**os.environ, "SURFACE_HTTP_PORT": str(port)})
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            return child, f"http://127.0.0.1:{port}/mcp"
        except httpx2.TransportError:
            assert time.monotonic() < deadline, "surface service did not start"
            time.sleep(0.1)


@pytest.fixture(scope="module", params=["stdio", "http"])
def surface_gateway(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("surface") / "deployment"
    child = None
    if request.param == "stdio":
        service: dict[str, Any] = {"transport": "stdio", "command": sys.executable, "args": ["-m", MODULE],
                                   "cwd": str(REPO)}
    else:
        child, url = start_http_service()
        service = {"transport": "http", "url": url}
    try:
        with GatewayProcess(_deployment(root, service, tmp_path_factory)) as gateway:
            yield gateway
    finally:
        if child is not None:
            stop_child(child)


def writer(gateway: GatewayProcess) -> str:
    return gateway.token(roles=["writer"])


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_list_read_and_get_with_the_sdk_client(surface_gateway: GatewayProcess, mode: str) -> None:
    async with surface_gateway.client(mode=mode, token=writer(surface_gateway)) as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        prompts = (await client.list_prompts()).prompts
        assert [r.uri for r in resources] == [NOTES]
        assert [t.uri_template for t in templates] == [PAGE]
        assert [p.name for p in prompts] == [PROMPT]
        notes = (await client.read_resource(NOTES)).contents[0]
        page = (await client.read_resource("surf+notes://pages/42")).contents[0]
        prompt = await client.get_prompt(PROMPT, {"topic": "releases"})
    assert notes.uri == NOTES and notes.text.startswith("Team notes. Deploy token: ")
    assert CANARY not in notes.text  # the output filter redacted the canary secret
    assert page.uri == "surf+notes://pages/42" and orjson.loads(page.text) == {"id": "42", "text": "Page 42"}
    text = prompt.messages[0].content.text
    assert text.startswith("Write a brief about releases.") and CANARY not in text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_caller_who_may_not_see_gets_unknown(surface_gateway: GatewayProcess, mode: str) -> None:
    async with surface_gateway.client(mode=mode) as client:  # not a writer
        assert [t.uri_template for t in (await client.list_resource_templates()).resource_templates] == []
        assert [p.name for p in (await client.list_prompts()).prompts] == []
        assert [r.uri for r in (await client.list_resources()).resources] == [NOTES]
        errors = []
        for uri in ("surf+notes://pages/42", "surf+notes://nothing"):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            errors.append((caught.value.code, caught.value.error.message, caught.value.error.data))
        with pytest.raises(MCPError) as hidden_prompt:
            await client.get_prompt(PROMPT, {"topic": "x"})
        with pytest.raises(MCPError) as missing_prompt:
            await client.get_prompt("surf.nothing", {})
    assert errors == [(-32602, "Resource not found", {"uri": "surf+notes://pages/42"}),
                      (-32602, "Resource not found", {"uri": "surf+notes://nothing"})]
    assert (hidden_prompt.value.code, hidden_prompt.value.error.message) == (
        missing_prompt.value.code, missing_prompt.value.error.message) == (-32602, "Unknown prompt")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_completion_through_the_gateway(surface_gateway: GatewayProcess, mode: str) -> None:
    """The SDK client completes a prompt argument and a template variable in the exposed names; the value that
    carries a secret is dropped; a caller who may not see the prompt or template gets the unknown answers."""
    prompt, template = types.PromptReference(type="ref/prompt", name=PROMPT), types.ResourceTemplateReference(
        type="ref/resource", uri=PAGE)
    async with surface_gateway.client(mode=mode, token=writer(surface_gateway)) as client:
        if mode == "legacy":  # 2026-07-28 has no initialize (the SDK client asks server/discover lazily)
            assert client.server_capabilities is not None and client.server_capabilities.completions is not None
        topics = (await client.complete(prompt, {"name": "topic", "value": ""})).completion
        ids = (await client.complete(template, {"name": "id", "value": "4"})).completion
        with pytest.raises(MCPError) as undeclared:
            await client.complete(prompt, {"name": "exfil", "value": ""})
    assert topics.values == ["releases", "roadmap"] and topics.total == 3  # the canary's value is dropped
    assert ids.values == ["42"]
    assert undeclared.value.code == -32602
    async with surface_gateway.client(mode=mode) as client:  # not a writer
        with pytest.raises(MCPError) as hidden_prompt:
            await client.complete(prompt, {"name": "topic", "value": ""})
        with pytest.raises(MCPError) as hidden_template:
            await client.complete(template, {"name": "id", "value": ""})
    assert (hidden_prompt.value.code, hidden_prompt.value.error.message) == (-32602, "Unknown prompt")
    assert (hidden_template.value.code, hidden_template.value.error.message, hidden_template.value.error.data) == (
        -32602, "Resource not found", {"uri": PAGE})


def _raw(gateway: GatewayProcess, method: str, params: dict[str, Any], name: str, token: str) -> tuple[Any, ...]:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {
        **params, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                            "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method,
               "Mcp-Name": name}
    answer = httpx2.post(gateway.url, headers=headers, content=orjson.dumps(body), timeout=15)
    return answer.status_code, answer.headers.get("content-type"), answer.content


def test_raw_2026_hidden_resource_answers_the_bytes_of_an_unknown_one(surface_gateway: GatewayProcess) -> None:
    token = surface_gateway.token()  # not a writer
    uri = "surf+notes://pages/42"
    hidden = _raw(surface_gateway, "resources/read", {"uri": uri}, uri, token)
    # the same URI with a writer token, after the definitions are the same: readable; an unknown URI with the
    # same text length gets the same status and content type, and the body differs only by the URI echoed
    unknown_uri = "surf+notes://nothing"
    unknown = _raw(surface_gateway, "resources/read", {"uri": unknown_uri}, unknown_uri, token)
    assert hidden[:2] == unknown[:2] == (400, "application/json")
    assert hidden[2] == unknown[2].replace(unknown_uri.encode(), uri.encode())
    allowed = _raw(surface_gateway, "resources/read", {"uri": uri}, uri, writer(surface_gateway))
    assert allowed[0] == 200 and orjson.loads(allowed[2])["result"]["resultType"] == "complete"
    ok = _raw(surface_gateway, "prompts/get", {"name": PROMPT, "arguments": {"topic": "x"}}, PROMPT,
              writer(surface_gateway))
    assert ok[0] == 200 and CANARY.encode() not in ok[2]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_definition_changes_are_quarantined(surface_gateway: GatewayProcess, mode: str) -> None:
    """Runs last in the module (it changes the service for good): a hostile change of the resource's and
    the prompt's definitions, announced by the service, takes them out of every listing and read as soon as
    the gateway's background re-listing has checked the pins (no read triggers it)."""
    token = writer(surface_gateway)
    async with surface_gateway.client(mode=mode, token=token) as client:
        await client.call_tool("surf.mutate", {"kind": "resource"})
        await client.call_tool("surf.mutate", {"kind": "prompt"})
        deadline = time.monotonic() + 15
        while (await client.list_resources()).resources or (await client.list_prompts()).prompts:
            assert time.monotonic() < deadline, "the announced change was not checked in time"
            await asyncio.sleep(0.1)
        with pytest.raises(MCPError) as caught:
            await client.read_resource(NOTES)
        assert (caught.value.code, caught.value.error.message) == (-32602, "Resource not found")
        with pytest.raises(MCPError) as caught:
            await client.get_prompt(PROMPT, {"topic": "x"})
        assert caught.value.error.message == "Unknown prompt"
        # the template's definition did not change: still served
        assert (await client.read_resource("surf+notes://pages/1")).contents[0].uri == "surf+notes://pages/1"
    assert "live definition differs from the pin" in surface_gateway.log()


def test_pins_cover_the_definition() -> None:
    base = {"uri": "a://b", "name": "b", "description": "d"}
    assert surface_hash("resource", base) == surface_hash("resource", {**base, "size": 10})  # size is content
    assert surface_hash("resource", base) != surface_hash("resource", {**base, "description": "d2"})
    assert surface_hash("resource", base) != surface_hash("template", {**base})
