"""mTLS end to end: real uvicorn servers, real handshakes, identity from the ASGI TLS extension."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
import uvicorn

from portcullis.identity.certs import CertIdentityMapper, CertMappingRule
from portcullis.identity.tls import TlsConfig, peer_certificate, uvicorn_kwargs
from tests.pki import BILLING_BOT, Issued, Pki, make_pki

MAPPER = CertIdentityMapper([
    CertMappingRule(match_spiffe_prefix=BILLING_BOT, client_id="billing", agent_id="billing-bot"),
    CertMappingRule(match_subject_cn="reporting-job", client_id="reporting"),
])


async def echo_identity(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the identity derived from the connection's verified client certificate."""
    assert scope["type"] == "http"
    pem = peer_certificate(scope)
    identity = MAPPER.map(pem) if pem else None
    tls = scope.get("extensions", {}).get("tls", {})
    body = json.dumps({
        "client_id": identity.client_id if identity else None,
        "spiffe_id": identity.spiffe_id if identity else None,
        "has_cert": pem is not None,
        "tls_version": tls.get("tls_version"),
        "cipher_suite": tls.get("cipher_suite"),
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serving(pki: Pki, client_auth: str, http: str, loop: str) -> Iterator[str]:
    """A uvicorn server on a loopback socket in a background thread; yields its base URL."""
    cfg = TlsConfig(cert_file=str(pki.server.cert_file), key_file=str(pki.server.key_file),
                    client_ca_file=str(pki.ca_file), client_auth=client_auth)  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(echo_identity, lifespan="off", log_level="critical", access_log=False, loop=loop,
                            timeout_graceful_shutdown=2, **uvicorn_kwargs(cfg, http=http))  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=[("httptools", "uvloop"), ("h11", "asyncio")], ids=["httptools", "h11"])
def servers(request: pytest.FixtureRequest, pki: Pki) -> Iterator[dict[str, str]]:
    """One 'required' and one 'optional' server, for each of uvicorn's HTTP/1.1 protocols."""
    http, loop = request.param
    with serving(pki, "required", http, loop) as required, serving(pki, "optional", http, loop) as optional:
        yield {"required": required, "optional": optional}


def client(pki: Pki, cert: Issued | None, *, max_version: ssl.TLSVersion | None = None) -> httpx2.Client:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if max_version is not None:
        ctx.maximum_version = max_version
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return httpx2.Client(verify=ctx, timeout=5.0, trust_env=False)


def test_trusted_spiffe_client_gets_its_identity(servers: dict[str, str], pki: Pki) -> None:
    """A client certificate from the trusted CA with a SPIFFE id maps to its client id, on every request."""
    with client(pki, pki.billing_bot) as c:
        for _ in range(2):  # the second request rides the same keep-alive connection
            response = c.get(servers["required"] + "/whoami")
            assert response.status_code == 200
            body = response.json()
            assert body["client_id"] == "billing" and body["spiffe_id"] == BILLING_BOT
            assert body["tls_version"] == 0x0304 and body["cipher_suite"] in (0x1301, 0x1302, 0x1303)


def test_trusted_cn_client_gets_its_identity_over_tls12(servers: dict[str, str], pki: Pki) -> None:
    """A CN-only certificate maps by its CN, and TLS 1.2 reports 0x0303."""
    with client(pki, pki.cn_client, max_version=ssl.TLSVersion.TLSv1_2) as c:
        body = c.get(servers["required"] + "/").json()
    assert body["client_id"] == "reporting" and body["tls_version"] == 0x0303


def test_trusted_certificate_that_maps_to_nothing_has_no_identity(servers: dict[str, str], pki: Pki) -> None:
    """A CA-trusted certificate with two URI SANs completes the handshake but maps to no identity."""
    with client(pki, pki.two_uris) as c:
        body = c.get(servers["required"] + "/").json()
    assert body["has_cert"] is True and body["client_id"] is None


@pytest.mark.parametrize("max_version", [None, ssl.TLSVersion.TLSv1_2], ids=["tls13", "tls12"])
@pytest.mark.parametrize("who", ["no-cert", "untrusted", "expired"])
def test_required_refuses_missing_untrusted_and_expired_certificates(
    servers: dict[str, str], pki: Pki, who: str, max_version: ssl.TLSVersion | None
) -> None:
    """With client_auth 'required' the connection fails: no response is ever produced."""
    cert = {"no-cert": None, "untrusted": pki.untrusted, "expired": pki.expired}[who]
    with client(pki, cert, max_version=max_version) as c, pytest.raises(httpx2.TransportError):
        c.get(servers["required"] + "/")


@pytest.mark.parametrize("who", ["untrusted", "expired"])
def test_optional_still_refuses_a_bad_certificate(servers: dict[str, str], pki: Pki, who: str) -> None:
    """With client_auth 'optional' a certificate that is presented must still verify."""
    cert = {"untrusted": pki.untrusted, "expired": pki.expired}[who]
    with client(pki, cert) as c, pytest.raises(httpx2.TransportError):
        c.get(servers["optional"] + "/")


def test_optional_lets_a_client_without_certificate_through_with_no_identity(
    servers: dict[str, str], pki: Pki
) -> None:
    """With client_auth 'optional' a client without a certificate is served, with identity None."""
    with client(pki, None) as c:
        response = c.get(servers["optional"] + "/")
    assert response.status_code == 200
    assert response.json()["client_id"] is None and response.json()["has_cert"] is False
    with client(pki, pki.billing_bot) as c:
        assert c.get(servers["optional"] + "/").json()["client_id"] == "billing"
