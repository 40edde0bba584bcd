"""2025-era sessions are sealed into the session id, so any replica serves any session."""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import GatewayProcess, copy_demo

RESOURCE = "https://gateway.example/mcp"


class AlternatingTransport(httpx2.AsyncBaseTransport):
    """Sends each request to the next gateway replica in turn, recording which one served it."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = itertools.cycle(ports)
        self._inner = httpx2.AsyncHTTPTransport()
        self.served: list[tuple[int, str, int]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._ports)
        request.url = request.url.copy_with(port=port)
        request.headers["host"] = f"127.0.0.1:{port}"
        response = await self._inner.handle_async_request(request)
        self.served.append((port, request.method, response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _deployment(root: Path) -> Path:
    copy_demo(root)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["sessions"] = {"key_ref": "secret://env/PORTCULLIS_TEST_SESSION_KEY"}
    # replicas behind one name share the canonical resource URI (the token audience) and trust
    config["identity"] = {"allow_insecure_dev_issuer": True, "resource": RESOURCE}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    root = _deployment(tmp_path_factory.mktemp("replicas") / "deployment")
    env = {"PORTCULLIS_TEST_SESSION_KEY": base64.b64encode(os.urandom(32)).decode()}
    state = root.parent / "shared-state"
    # one audit chain and one counters file per replica: a second writer on either is refused at start
    gateways = [GatewayProcess(root, env={**env, "PORTCULLIS_AUDIT_PATH": str(root.parent / f"audit-{i}.sqlite3"),
                                          "PORTCULLIS_COUNTERS_PATH": str(root.parent / f"counters-{i}.sqlite3")},
                               state_dir=state, audience=RESOURCE) for i in range(2)]
    try:
        for gateway in gateways:
            gateway.wait_ready()
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


async def test_one_legacy_client_alternating_between_two_replicas(replicas: list[GatewayProcess]) -> None:
    """The SDK client in legacy mode initializes on one replica and keeps working on both."""
    transport = AlternatingTransport([g.port for g in replicas])
    async with httpx2.AsyncClient(transport=transport, timeout=30, headers=replicas[0].auth_headers()) as http:
        async with Client(streamable_http_client(replicas[0].url, http_client=http), cache=None,
                          mode="legacy") as client:
            assert client.protocol_version == "2025-11-25"
            for i in range(6):
                result = await client.call_tool("billing.get_invoice", {"invoice_id": f"INV-100{i + 1}"})
                assert not result.is_error
    posts = [(port, status) for port, method, status in transport.served if method == "POST"]
    assert {port for port, _ in posts} == {g.port for g in replicas}
    assert all(status in (200, 202) for _, status in posts)


async def test_a_replica_with_another_key_does_not_know_the_session(
        replicas: list[GatewayProcess], tmp_path: Path) -> None:
    """A session sealed by the shared key is 'not found' on a gateway with a different key."""
    root = _deployment(tmp_path / "other")
    other = GatewayProcess(root, env={"PORTCULLIS_TEST_SESSION_KEY": base64.b64encode(os.urandom(32)).decode()},
                           state_dir=replicas[0].state_dir, audience=RESOURCE)
    try:
        other.wait_ready()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   **replicas[0].auth_headers()}
        init = httpx2.post(replicas[0].url, headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}})
        session = init.headers["mcp-session-id"]
        same_key = httpx2.post(replicas[1].url, headers={**headers, "Mcp-Session-Id": session},
                               json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        other_key = httpx2.post(other.url, headers={**headers, "Mcp-Session-Id": session},
                                json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
    finally:
        other.stop()
    assert same_key.status_code == 200
    assert other_key.status_code == 404
