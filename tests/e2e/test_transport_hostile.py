"""Hostile transport input against a real gateway process: precise errors, never a stack trace."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.e2e.harness import GatewayProcess

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
MODERN = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
          "MCP-Protocol-Version": "2026-07-28"}
LEGACY = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def call_body(name: str = "billing.get_invoice", **extra: Any) -> dict[str, Any]:
    params = {"name": name, "arguments": {"invoice_id": "INV-1001"}, "_meta": META, **extra}
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


def modern_call_headers(name: str = "billing.get_invoice") -> dict[str, str]:
    return {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name}


def raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


CASES: list[tuple[str, str, dict[str, str], Any, int, int | None]] = [
    # (case id, HTTP method, headers, body, expected status, expected JSON-RPC code or None for plain text)
    ("foreign-origin", "POST", {**modern_call_headers(), "Origin": "http://evil.example"}, call_body(), 403, None),
    ("foreign-host", "POST", {**modern_call_headers(), "Host": "evil.example:8080"}, call_body(), 421, None),
    # GET: a 2025-era session's notification stream (docs/mcp-surface.md); 2026-07-28 has none
    ("get-modern-not-allowed", "GET", {"Accept": "text/event-stream", "MCP-Protocol-Version": "2026-07-28"}, None,
     405, None),
    ("get-legacy-no-session", "GET", {"Accept": "text/event-stream"}, None, 400, -32600),
    ("get-legacy-forged-session", "GET",
     {"Accept": "text/event-stream", "Mcp-Session-Id": "pcs1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, None, 404, -32600),
    ("get-legacy-not-sse", "GET", {"Accept": "application/json"}, None, 406, None),
    ("delete-not-allowed", "DELETE", {}, None, 405, None),
    ("text-plain-body", "POST", {**modern_call_headers(), "Content-Type": "text/plain"}, call_body(), 415, None),
    ("accept-html-only", "POST", {**modern_call_headers(), "Accept": "text/html"}, call_body(), 406, None),
    ("not-json", "POST", modern_call_headers(), b"{not json", 400, -32700),
    ("invalid-utf8", "POST", modern_call_headers(), b'{"a":"\xff"}', 400, -32700),
    ("duplicate-keys", "POST", modern_call_headers(),
     b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{}}', 400, -32700),
    ("too-deep", "POST", modern_call_headers(), b'{"a":' * 200 + b"1" + b"}" * 200, 400, -32700),
    ("very-deep", "POST", modern_call_headers(), b"[" * 100_000 + b"]" * 100_000, 400, -32700),
    ("batch", "POST", modern_call_headers(), [call_body(), call_body()], 400, -32600),
    ("no-jsonrpc-version", "POST", modern_call_headers(), {"id": 1, "method": "tools/call"}, 400, -32600),
    ("params-not-object", "POST", {**MODERN, "Mcp-Method": "ping"},
     {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1, 2]}, 400, -32600),
    ("unknown-method", "POST", {**MODERN, "Mcp-Method": "foo/bar"},
     {"jsonrpc": "2.0", "id": 1, "method": "foo/bar", "params": {"_meta": META}}, 404, -32601),
    ("missing-mcp-method", "POST", MODERN, call_body(), 400, -32020),
    ("mcp-method-mismatch", "POST", {**modern_call_headers(), "Mcp-Method": "tools/list"}, call_body(), 400, -32020),
    ("mcp-name-mismatch", "POST", modern_call_headers("files.read_file"), call_body(), 400, -32020),
    ("unsupported-version", "POST", {**modern_call_headers(), "MCP-Protocol-Version": "2099-01-01"},
     call_body(), 400, -32022),
    ("missing-meta", "POST", modern_call_headers(),
     {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "billing.get_invoice"}}, 400, -32602),
    ("response-posted", "POST", {**MODERN, "Mcp-Method": "x"}, {"jsonrpc": "2.0", "id": 1, "result": {}}, 400, -32600),
    ("legacy-no-session", "POST", LEGACY, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 400, -32600),
    ("legacy-forged-session", "POST", {**LEGACY, "Mcp-Session-Id": "pcs1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
     {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 404, -32600),
    ("legacy-sdk-style-session", "POST", {**LEGACY, "Mcp-Session-Id": "05f936ef5bc543069d8af7a48bc4bcd8"},
     {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 404, -32600),
    ("arguments-not-object", "POST", modern_call_headers(),
     {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
      "params": {"name": "billing.get_invoice", "arguments": "INV-1001", "_meta": META}}, 400, -32602),
]


@pytest.fixture(scope="module")
def http(demo_gateway: GatewayProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=demo_gateway.base, timeout=10, headers=demo_gateway.auth_headers()) as client:
        yield client


@pytest.mark.parametrize(("case", "method", "headers", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_hostile_transport_input_gets_a_precise_error(http: httpx2.Client, case: str, method: str,
                                                      headers: dict[str, str], body: Any, status: int,
                                                      code: int | None) -> None:
    """Each hostile request gets its exact status and JSON-RPC code, and no internal detail."""
    response = http.request(method, "/mcp", headers=headers, content=None if body is None else raw(body))
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and "File \"" not in response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
    if status == 405:
        assert response.headers["allow"] == "POST"


def test_streamed_body_over_the_limit_is_refused_while_reading(http: httpx2.Client) -> None:
    """A chunked body with no Content-Length is cut off at the limit with 413."""
    def chunks() -> Iterator[bytes]:
        yield b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'
        for _ in range(2048):
            yield b"x" * 1024
        yield b'"}}'

    response = http.post("/mcp", headers={**MODERN, "Mcp-Method": "ping"}, content=chunks())
    assert response.status_code == 413


def test_declared_oversized_body_is_refused_before_reading(demo_gateway: GatewayProcess) -> None:
    """A Content-Length over the limit gets 413 without the gateway waiting for the body."""
    with socket.create_connection(("127.0.0.1", demo_gateway.port), timeout=5) as sock:
        auth = f"Authorization: Bearer {demo_gateway.token()}\r\n".encode()
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + auth +
                     b"Content-Length: 99999999\r\n\r\n{")
        head = sock.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413")


def test_legacy_session_round_trip_over_raw_http(http: httpx2.Client) -> None:
    """initialize mints a sealed session id that later requests must carry."""
    init = http.post("/mcp", headers=LEGACY, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200
    assert init.json()["result"]["protocolVersion"] == "2025-06-18"
    session = init.headers["mcp-session-id"]
    assert session.startswith("pcs1.")
    headers = {**LEGACY, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
    note = http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert note.status_code == 202
    listed = http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    names = {tool["name"] for tool in listed.json()["result"]["tools"]}
    # the harness token is agent billing-bot without the analyst role: summarize_revenue is not listed
    assert names == {"billing.get_invoice", "billing.process_refund", "files.list_dir", "files.read_file"}
    unknown_version = http.post("/mcp", headers={**headers, "MCP-Protocol-Version": "2024-01-01"},
                                json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert unknown_version.status_code == 400
    assert unknown_version.json()["error"]["code"] == -32022


def test_modern_unicode_tool_name_uses_the_base64_sentinel(http: httpx2.Client) -> None:
    """A non-ASCII Mcp-Name in sentinel form is decoded before comparison with the body."""
    name = "billing.gét"
    sentinel = "=?base64?" + __import__("base64").b64encode(name.encode()).decode() + "?="
    response = http.post("/mcp", headers={**modern_call_headers(), "Mcp-Name": sentinel}, json=call_body(name))
    assert response.status_code == 400
    assert response.json()["error"] == {"code": -32602, "message": "Unknown tool"}
