"""An external OIDC issuer end to end: discovery, JWKS over HTTP, ES256 tokens, claims to principal."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.harness import GatewayProcess
from tests.e2e.test_authentication import claims_of, post
from tests.e2e.test_upstream_failures import build

KEY = ec.generate_private_key(ec.SECP256R1())


class _Idp(BaseHTTPRequestHandler):
    issuer = ""
    hits: list[str] = []  # noqa: RUF012 - test-only shared record

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path == "/.well-known/openid-configuration":
            body = {"issuer": self.issuer, "jwks_uri": self.issuer + "/jwks"}
        elif self.path == "/jwks":
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
            body = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def idp() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Idp)
    _Idp.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Idp.issuer
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: str) -> Iterator[GatewayProcess]:
    root = build(tmp_path_factory.mktemp("idp") / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    resource = "https://gateway.example/mcp"
    config["identity"] = {"resource": resource, "issuers": [
        {"name": "corp", "issuer": idp, "discovery_url": idp + "/.well-known/openid-configuration",
         "algorithms": ["ES256"], "audience": resource}]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    invoice = root / "tools" / "billing" / "get_invoice.yml"  # the demo's, scoped to its dev issuer
    invoice.write_text(invoice.read_text().replace("issuer:dev/", "issuer:corp/"))
    with GatewayProcess(root, audience=resource) as process:
        yield process


def token(issuer: str, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": issuer, "aud": "https://gateway.example/mcp", "sub": "u-123", "iat": now, "exp": now + 300,
            "jti": f"j-{time.monotonic_ns()}", "scope": "mcp:tools", **claims}
    return jwt.encode(body, KEY, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})


async def test_idp_tokens_become_principals_with_mapped_attributes(gateway: GatewayProcess, idp: str) -> None:
    """Discovery finds the JWKS; claims map to user, agent, tenant, roles and attributes."""
    access = token(idp, agent_id="billing-bot", client_id="agent-platform", tenant="acme", roles=["billing"],
                   department="finance", employment_type="contractor", region="eu")
    async with gateway.client(token=access) as client:
        seen = (await client.call_tool("flaky.actor_token", {})).structured_content["result"]
    act = claims_of(seen)["act"]
    assert (act["user_id"], act["agent_id"], act["client_id"], act["tenant"]) == (
        "u-123", "billing-bot", "agent-platform", "acme")
    assert act["roles"] == ["billing"] and act["auth_method"] == "bearer" and act["issuer"] == idp
    assert act["attributes"] == {"department": "finance", "employment_type": "contractor", "region": "eu"}
    assert "/.well-known/openid-configuration" in _Idp.hits and "/jwks" in _Idp.hits


def test_tokens_from_a_lookalike_issuer_or_other_key_are_refused(gateway: GatewayProcess, idp: str) -> None:
    """A token naming another issuer, or signed by another key with the same kid, is refused."""
    other = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    forged = jwt.encode({"iss": idp, "aud": "https://gateway.example/mcp", "sub": "u", "iat": now, "exp": now + 60,
                         "scope": "mcp:tools"}, other, algorithm="ES256", headers={"kid": "k1"})
    assert post(gateway, forged).status_code == 401
    assert post(gateway, token(idp + "/evil")).status_code == 401
    assert post(gateway, token(idp)).status_code == 200

