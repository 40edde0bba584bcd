"""Authentication end to end: bearer tokens, challenges, revocation, session binding, no passthrough."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.harness import GatewayProcess, run_cli
from tests.e2e.test_upstream_failures import build

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
MODERN = {"Content-Type": "application/json", "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
          "Mcp-Method": "tools/list"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = build(tmp_path_factory.mktemp("auth") / "deployment", billing=False)  # no test calls billing
    with GatewayProcess(root) as process:
        yield process


def claims_of(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def post(gateway: GatewayProcess, token: str | None) -> httpx2.Response:
    headers = dict(MODERN)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.post(gateway.url, headers=headers, json=LIST, timeout=10)


def test_no_token_gets_401_with_a_challenge_naming_the_metadata(gateway: GatewayProcess) -> None:
    """A request without credentials gets 401 and WWW-Authenticate with resource_metadata and scope."""
    response = post(gateway, None)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{gateway.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="mcp:tools"' in challenge


@pytest.mark.parametrize("make_token", [
    lambda g: "not-a-jwt",
    lambda g: g.token() + "x",
    lambda g: ".".join(g.token().split(".")[:2]) + ".",
    lambda g: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + g.token().split(".")[1] + ".",
], ids=["garbage", "bad-signature", "stripped-signature", "alg-none"])
def test_forged_tokens_get_401_invalid_token(gateway: GatewayProcess, make_token) -> None:  # type: ignore[no-untyped-def]
    """Malformed, tampered, unsigned and alg:none tokens are refused with error="invalid_token"."""
    response = post(gateway, make_token(gateway))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json() == {"error": "invalid_token", "error_description": "Authentication required"}


def test_a_token_for_another_resource_is_refused(gateway: GatewayProcess, tmp_path: Path) -> None:
    """A token whose audience is another service (token passthrough) is refused."""
    from portcullis.identity.dev_issuer import issue_token

    token = issue_token(gateway.state_dir, audience="https://other.example/mcp", user="alice", agent=None,
                        client=None, scopes=["mcp:tools"])
    assert post(gateway, token).status_code == 401


def test_expired_token_is_refused(gateway: GatewayProcess) -> None:
    """A token past its expiry (beyond the leeway) is refused."""
    from portcullis.identity.dev_issuer import issue_token

    token = issue_token(gateway.state_dir, audience=gateway.audience, user="alice", agent=None, client=None,
                        scopes=["mcp:tools"], ttl_s=60, now=time.time() - 3600)
    assert post(gateway, token).status_code == 401


def test_missing_scope_gets_403_insufficient_scope(gateway: GatewayProcess) -> None:
    """A valid token without the required scope gets 403 naming the scopes needed."""
    response = post(gateway, gateway.token(scopes=("other:scope",)))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp:tools"' in challenge


def test_protected_resource_metadata_and_jwks_are_published(gateway: GatewayProcess) -> None:
    """RFC 9728 metadata names the resource; the JWKS has public keys only."""
    prm = httpx2.get(f"{gateway.base}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["resource"] == gateway.url and prm["authorization_servers"]
    assert prm["bearer_methods_supported"] == ["header"]
    jwks = httpx2.get(f"{gateway.base}/.well-known/jwks.json").json()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"])


async def test_upstream_gets_a_minted_token_never_the_callers(gateway: GatewayProcess) -> None:
    """The service sees a short-lived gateway token for itself, carrying the principal, not the client's."""
    caller_token = gateway.token(user="alice", agent="billing-bot", tenant="acme")
    async with gateway.client(token=caller_token) as client:
        seen = (await client.call_tool("flaky.actor_token", {})).structured_content["result"]
    assert seen != caller_token and caller_token not in seen
    claims = claims_of(seen)
    assert claims["aud"] == "portcullis-service:flaky"
    assert claims["iss"] == "portcullis://gateway"
    assert claims["exp"] - claims["iat"] <= 60
    assert claims["target"] == "actor_token" and claims["tool"] == "flaky.actor_token"
    assert claims["act"]["agent_id"] == "billing-bot" and claims["act"]["tenant"] == "acme"
    assert claims["act"]["user_id"] == "alice"


async def test_principal_is_in_the_access_log(gateway: GatewayProcess) -> None:
    """The call's log line names the verified principal."""
    async with gateway.client(token=gateway.token(user="carol", agent="report-bot")) as client:
        await client.call_tool("flaky.pid", {})
    for _ in range(50):
        lines = [json.loads(x) for x in gateway.log().splitlines() if x.startswith("{")]
        mine = [x for x in lines if x.get("logger") == "portcullis.access" and x.get("principal.user_id") == "carol"]
        if mine:
            break
        await asyncio.sleep(0.1)
    assert mine[-1]["principal.agent_id"] == "report-bot"
    assert mine[-1]["principal.auth_method"] == "dev"


def test_a_legacy_session_cannot_be_used_by_another_principal(gateway: GatewayProcess) -> None:
    """A session id opened by alice is 'not found' when presented with bob's token."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    init = httpx2.post(gateway.url, headers={**headers, "Authorization": f"Bearer {gateway.token(user='alice')}"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                           "protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}})
    session = init.headers["mcp-session-id"]
    as_bob = httpx2.post(gateway.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={
        **headers, "Mcp-Session-Id": session, "Authorization": f"Bearer {gateway.token(user='bob')}"})
    as_alice = httpx2.post(gateway.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={
        **headers, "Mcp-Session-Id": session, "Authorization": f"Bearer {gateway.token(user='alice')}"})
    assert as_bob.status_code == 404
    assert as_alice.status_code == 200


@pytest.mark.parametrize("kind", ["jti", "agent", "client"])
def test_revoked_tokens_agents_and_clients_are_refused_within_seconds(gateway: GatewayProcess, kind: str) -> None:
    """`portcullis token revoke` takes effect on the running gateway within about a second."""
    token = gateway.token(user=f"user-{kind}", agent=f"agent-{kind}", client=f"client-{kind}")
    assert post(gateway, token).status_code == 200
    value = {"jti": claims_of(token)["jti"], "agent": f"agent-{kind}", "client": f"client-{kind}"}[kind]
    done = run_cli("token", "revoke", "--config", str(gateway.config), f"--{kind}", value,
                   env={"PORTCULLIS_STATE_DIR": str(gateway.state_dir)})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and post(gateway, token).status_code == 200:
        time.sleep(0.1)
    assert post(gateway, token).status_code == 401
    assert post(gateway, gateway.token(user="someone-else", agent="other-agent")).status_code == 200


def test_a_gateway_without_identity_refuses_to_start(tmp_path: Path) -> None:
    """A deployment with no way to authenticate is a configuration error, not an open door."""
    root = build(tmp_path / "deployment", pin=False)
    config = (root / "gateway.yaml").read_text().replace("identity:\n  allow_insecure_dev_issuer: true\n", "")
    (root / "gateway.yaml").write_text(config)
    done = run_cli("serve", "--config", str(root), "--port", "1")
    assert done.returncode == 2
    assert "identity: missing" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_sdk_client_authenticates_end_to_end(gateway: GatewayProcess) -> None:
    """The official client with a bearer token lists and calls; without one it cannot connect."""
    async with gateway.client(mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "flaky.pid" in names
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces 401 as an exception group
        async with gateway.client(token="forged.token.value") as client:
            await client.list_tools()


async def test_unreadable_revocation_list_denies_every_request(gateway: GatewayProcess) -> None:
    """If the revocation list cannot be read, requests are denied (fail closed), not allowed.

    Last in the module: it breaks the module's gateway for good (every later request is refused)."""
    token = gateway.token()
    assert post(gateway, token).status_code == 200
    logged = len(gateway.log())  # earlier tests revoked tokens: only what is logged from here on counts
    (gateway.state_dir / "revocations.db").write_bytes(b"this is not a sqlite database" * 100)
    deadline = time.monotonic() + 15
    status = 200
    while time.monotonic() < deadline:
        status = post(gateway, token).status_code
        if status != 200:
            break
        await asyncio.sleep(0.25)
    assert status == 503
    assert "revocation" in gateway.log()[logged:]
