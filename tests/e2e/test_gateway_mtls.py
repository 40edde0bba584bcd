"""mTLS at the gateway: a client certificate, verified in the handshake, becomes the principal."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import GatewayProcess
from tests.e2e.test_upstream_failures import build
from tests.pki import Issued, Pki, make_pki

BILLING_BOT = "spiffe://example.org/agent/billing-bot"


def client_context(pki: Pki, cert: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[GatewayProcess]:
    root = build(tmp_path_factory.mktemp("mtls") / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["listen"] = {"host": "127.0.0.1", "tls": {
        "cert_file": str(pki.server.cert_file), "key_file": str(pki.server.key_file),
        "client_ca_file": str(pki.ca_file), "client_auth": "optional"}}
    config["identity"] = {"allow_insecure_dev_issuer": True, "mtls": [
        {"match_spiffe_prefix": BILLING_BOT, "client_id": "billing-bot-client", "agent_id": "billing-bot",
         "tenant": "acme"}]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # two identity sources (dev tokens and certificates): every allow pattern names its source
    for path in (root / "tools" / "flaky").glob("*.yml"):
        manifest = yaml.safe_load(path.read_text())
        manifest["policy"]["allowed_callers"] = ["issuer:dev/scope:mcp:tools", "issuer:mtls/agent:billing-bot"]
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    with GatewayProcess(root, ssl_context=client_context(pki, pki.billing_bot)) as process:
        yield process


async def test_a_certificate_identity_calls_tools_and_reaches_the_upstream(gateway: GatewayProcess, pki: Pki) -> None:
    """The SDK client with a SPIFFE client certificate is served, and the minted token names its agent."""
    async with httpx2.AsyncClient(verify=client_context(pki, pki.billing_bot), timeout=30) as http:
        async with Client(streamable_http_client(gateway.url, http_client=http), cache=None) as client:
            seen = (await client.call_tool("flaky.actor_token", {})).structured_content["result"]
    body = seen.split(".")[1]
    act = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["act"]
    assert (act["client_id"], act["agent_id"], act["tenant"], act["auth_method"], act["issuer_name"]) == (
        "billing-bot-client", "billing-bot", "acme", "mtls", "mtls")


def test_no_certificate_and_no_token_is_401(gateway: GatewayProcess, pki: Pki) -> None:
    """Without a certificate (allowed by client_auth: optional) a request still needs a token."""
    response = httpx2.post(gateway.url, verify=client_context(pki, None), json={}, headers={
        "Content-Type": "application/json"})
    assert response.status_code == 401


def test_a_trusted_certificate_that_no_rule_maps_is_refused(gateway: GatewayProcess, pki: Pki) -> None:
    """A certificate from the trusted CA with an unmapped identity gets 401, not a default identity."""
    response = httpx2.post(gateway.url, verify=client_context(pki, pki.cn_client), json={}, headers={
        "Content-Type": "application/json"})
    assert response.status_code == 401


@pytest.mark.parametrize("who", ["untrusted", "expired"])
def test_untrusted_or_expired_certificates_fail_the_handshake(gateway: GatewayProcess, pki: Pki, who: str) -> None:
    """Certificates the CA does not vouch for never get an HTTP answer."""
    with pytest.raises(httpx2.TransportError):
        httpx2.post(gateway.url, verify=client_context(pki, getattr(pki, who)), json={}, timeout=5)


def test_plain_http_is_not_served_on_a_tls_listener(gateway: GatewayProcess) -> None:
    """The TLS listener does not answer plaintext HTTP requests."""
    with pytest.raises(httpx2.TransportError):
        httpx2.post(gateway.url.replace("https", "http"), json={}, timeout=5)

