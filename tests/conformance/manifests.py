"""A Portcullis deployment directory that puts the conformance fixture behind the gateway.

:func:`write_deployment` writes ``gateway.yaml`` (one HTTP service, ``fixture``, whose tools and prompts
keep their bare names and whose resources their URIs) and one manifest per fixture tool under
``tools/conformance/<tool>.yml``, per resource or template under ``resources/conformance/`` and per
prompt under ``prompts/conformance/``. Each
manifest's schemas, description and annotations are read from the fixture's live ``tools/list``
(the fixture runs in memory for that), so they cannot drift from what the fixture serves. No
manifest carries a ``pin:``; ``portcullis pin <dir>`` records them against the running fixture.

Every file is validated against ``portcullis.config.model`` before it is written.

Manual use (from the repository root)::

    python -m tests.conformance.manifests /tmp/conf-deploy http://127.0.0.1:3001/mcp
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client

from portcullis.config.model import GatewayConfig, PromptManifest, ResourceManifest, ToolManifest

from .fixture_server import build_server

SERVICE = "fixture"
# The fixture's push-style tools ask their caller mid-call (sampling/createMessage, elicitation/create):
# only a 2025-era session carries such a request, so the same fixture is a second service whose leg is
# always the handshake (protocol: legacy), allowed to relay exactly those kinds (client_requests).
PUSH_SERVICE = "fixture_push"
PUSH_TOOLS = frozenset({"test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults",
                        "test_elicitation_sep1330_enums"})
DOMAIN = "conformance"
OWNER = "conformance@example.com"


async def fixture_tools() -> list[dict[str, Any]]:
    """The fixture's tools as ``tools/list`` shows them (camelCase wire form)."""
    async with Client(build_server(), cache=None) as client:
        tools = (await client.list_tools()).tools
    return [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in tools]


async def fixture_surface() -> dict[str, list[dict[str, Any]]]:
    """The fixture's resources, resource templates and prompts (wire form), by kind."""
    async with Client(build_server(), cache=None) as client:
        found = {"resource": (await client.list_resources()).resources,
                 "template": (await client.list_resource_templates()).resource_templates,
                 "prompt": (await client.list_prompts()).prompts}
    return {kind: [item.model_dump(by_alias=True, mode="json", exclude_none=True) for item in items]
            for kind, items in found.items()}


def surface_manifest(kind: str, item: dict[str, Any]) -> ResourceManifest | PromptManifest:
    """The manifest of one live fixture resource, template or prompt."""
    data: dict[str, Any] = {
        "name": item["name"], "service": SERVICE, "owner": OWNER,
        "description": item.get("description") or f"Conformance fixture {kind} {item['name']}.",
        "classification": {"input": "Public", "output": "Public"},
        "policy": {"allowed_callers": ["client:anonymous"]},
    }
    if kind == "prompt":
        data["arguments"] = [{k: v for k, v in arg.items() if k in ("name", "description", "required")}
                             for arg in item.get("arguments") or ()]
        return PromptManifest.model_validate(data)
    data["uri" if kind == "resource" else "uri_template"] = item["uri" if kind == "resource" else "uriTemplate"]
    if item.get("mimeType"):
        data["mime_type"] = item["mimeType"]
    return ResourceManifest.model_validate(data)


def _run_sync(coro_fn: Any) -> Any:
    """Run ``coro_fn()`` to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(coro_fn)
    result: list[Any] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            result.append(anyio.run(coro_fn))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=worker, name="fixture-tools")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def gateway_data(upstream_url: str) -> dict[str, Any]:
    """``gateway.yaml``: the fixture as the only service, its tools exposed under their bare names."""
    return {
        "version": 1,
        "listen": {"host": "127.0.0.1"},
        # The conformance suite cannot present credentials: this run accepts anonymous callers, through
        # the loud, named switch (the gateway warns at start and on every request). Authentication has
        # its own end-to-end tests (tests/e2e/test_authentication.py).
        "identity": {"allow_insecure_anonymous": True},
        # bare tool and prompt names, and resource URIs as the fixture names them (the only service)
        # the fixture's MRTR tools ask for every kind of client request: this deployment allows them all (the
        # default allows none); the screening, sealing and the caller's declared capabilities still apply
        "services": {SERVICE: {"transport": "http", "url": upstream_url, "tool_prefix": "", "resource_prefix": "",
                               "client_requests": {"sampling": True, "elicitation_form": True,
                                                   "elicitation_url": True, "roots": True}},
                     PUSH_SERVICE: {"transport": "http", "url": upstream_url, "tool_prefix": "", "protocol": "legacy",
                                    "client_requests": {"sampling": True, "elicitation_form": True}}},
    }


def tool_manifest(tool: dict[str, Any]) -> ToolManifest:
    """The manifest of one live fixture tool (wire form), with the fixture's own definition."""
    data: dict[str, Any] = {
        "name": tool["name"],
        "service": PUSH_SERVICE if tool["name"] in PUSH_TOOLS else SERVICE,
        "owner": OWNER,
        "description": tool.get("description") or f"Conformance fixture tool {tool['name']}.",
        "risk": "low",
        "classification": {"input": "Public", "output": "Public"},
        "annotations": tool.get("annotations") or {},
        "input_schema": tool["inputSchema"],
        # the conformance runner calls anonymously (allow_insecure_anonymous): admit exactly that client
        "policy": {"allowed_callers": ["client:anonymous"]},
    }
    if tool.get("outputSchema") is not None:
        data["output_schema"] = tool["outputSchema"]
    return ToolManifest.model_validate(data)


def _dump(header: str, data: dict[str, Any]) -> str:
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return f"# {header}\n{body}"


def write_deployment(root: Path, upstream_url: str) -> None:
    """Write ``gateway.yaml`` and ``tools/conformance/<tool>.yml`` for the fixture at ``upstream_url``."""
    root = Path(root)
    tools: list[dict[str, Any]] = _run_sync(fixture_tools)
    gateway = gateway_data(upstream_url)
    GatewayConfig.model_validate(gateway)
    manifests = [tool_manifest(tool) for tool in tools]  # all validated before anything is written

    root.mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(
        _dump("Portcullis in front of the MCP conformance fixture (tests/conformance). Generated.", gateway),
        encoding="utf-8",
    )
    tool_dir = root / "tools" / DOMAIN
    tool_dir.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        data = manifest.model_dump(mode="json", exclude_none=True)
        path = tool_dir / f"{manifest.name}.yml"
        path.write_text(
            _dump(f"{DOMAIN}/{manifest.name}: conformance fixture tool, generated from its live definition.",
                  data),
            encoding="utf-8",
        )
        # What was written must read back as the same manifest.
        if ToolManifest.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))) != manifest:
            raise AssertionError(f"{path}: does not round-trip through YAML")
    surface: dict[str, list[dict[str, Any]]] = _run_sync(fixture_surface)
    for kind, items in surface.items():
        folder = root / ("prompts" if kind == "prompt" else "resources") / DOMAIN
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            surface_item = surface_manifest(kind, item)
            (folder / f"{surface_item.name}.yml").write_text(
                _dump(f"{DOMAIN}/{surface_item.name}: conformance fixture {kind}, generated from its live definition.",
                      surface_item.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    if GatewayConfig.model_validate(yaml.safe_load((root / "gateway.yaml").read_text(encoding="utf-8"))) \
            != GatewayConfig.model_validate(gateway):
        raise AssertionError("gateway.yaml does not round-trip through YAML")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m tests.conformance.manifests DIR UPSTREAM_URL")
    write_deployment(Path(args[0]), args[1])
    print(f"wrote {args[0]}")


if __name__ == "__main__":
    main()
