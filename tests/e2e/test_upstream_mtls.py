"""TLS and mTLS from the gateway to an HTTPS service that requires client certificates."""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from tests.e2e import tls_upstream
from tests.e2e.harness import (
    REPO,
    GatewayProcess,
    dev_identity,
    free_port,
    manifest_from_live,
    run_cli,
    write_deployment,
)
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream(pki: Pki) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.tls_upstream", "--port", str(port),
                             "--cert", str(pki.server.cert_file), "--key", str(pki.server.key_file),
                             "--ca", str(pki.ca_file)], cwd=REPO)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "TLS upstream did not start"
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


async def _live() -> list[dict]:
    async with Client(tls_upstream.server) as client:
        return [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in (await client.list_tools()).tools]


def deployment(root: Path, url: str, tls: dict[str, str]) -> Path:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable from inside a running loop too
        (tool,) = pool.submit(anyio.run, _live).result()
    write_deployment(root, dev_identity({"version": 1, "services": {"secure": {"transport": "http", "url": url,
                                                                              "tls": tls}}}),
                     [manifest_from_live("secure", tool)])
    return root


async def test_gateway_presents_its_client_certificate_and_a_minted_token(
        tmp_path: Path, pki: Pki, upstream: str) -> None:
    """With the CA and a client certificate configured, calls reach the mTLS service with a service token."""
    root = deployment(tmp_path / "ok", upstream, {"ca_file": str(pki.ca_file), "cert_file": str(
        pki.billing_bot.cert_file), "key_file": str(pki.billing_bot.key_file)})
    pinned = run_cli("pin", str(root))
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    with GatewayProcess(root) as gateway:
        async with gateway.client() as client:
            result = await client.call_tool("secure.token_audience", {})
    assert result.structured_content["result"] == "portcullis-service:secure"


def test_without_a_client_certificate_the_service_stays_unreachable(tmp_path: Path, pki: Pki, upstream: str) -> None:
    """Without the gateway's certificate the handshake fails: the service is down, never silently downgraded."""
    root = deployment(tmp_path / "nocert", upstream, {"ca_file": str(pki.ca_file)})
    assert run_cli("pin", str(root)).returncode == 1
    assert_service_down(root)


def assert_service_down(root: Path) -> None:
    gateway = GatewayProcess(root)
    try:
        gateway.wait_ready(require_ready=False)
        time.sleep(1.0)
        health = httpx2.get(f"{gateway.base}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["services"]["secure"] == "down"
        assert "service connection failed" in gateway.log()
    finally:
        gateway.stop()


def test_an_untrusted_service_certificate_is_refused(tmp_path: Path, pki: Pki, upstream: str) -> None:
    """With the system trust store (no ca_file) the test CA's certificate is not trusted: nothing is listed."""
    root = deployment(tmp_path / "noca", upstream, {"cert_file": str(pki.billing_bot.cert_file),
                                                     "key_file": str(pki.billing_bot.key_file)})
    assert run_cli("pin", str(root)).returncode == 1
    assert_service_down(root)
