"""Consumers of vault references: the gateway's start (fail closed) and the ones that read at each use."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from portcullis.audit.siem.webhook import WebhookExporter
from portcullis.audit.witness.client import WitnessExporter
from portcullis.config.console import ConsoleOidcConfig
from portcullis.config.loader import load_deployment
from portcullis.config.secret_providers.config import SecretsConfig
from portcullis.config.secret_store import SecretStore, activate
from portcullis.console.oidc import LoginFailed, OidcClient
from portcullis.errors import ConfigError
from portcullis.gateway import build_gateway
from portcullis.identity.config import ClaimMap
from portcullis.identity.jwks import JwksCache
from tests.console.conftest import CLIENT_ID, OP, REDIRECT, issuer_config
from tests.e2e.harness import write_deployment
from tests.secrets.conftest import Bao

CHECKPOINT = {"kind": "checkpoint", "size": 1, "note": "note"}
RECORD = {"kind": "decision", "hash": "00" * 32}


@pytest.fixture
def token_env(bao: Bao, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PORTCULLIS_TEST_VAULT_TOKEN", bao.root_token)
    yield
    activate(None)


def _store(bao: Bao) -> SecretStore:
    return SecretStore(SecretsConfig.model_validate({"vault": {
        "address": bao.address, "auth": {"method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}}))


def _capture(seen: list[str]) -> httpx2.ASGITransport:
    """A receiver that records each request's Authorization header and answers 200."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return httpx2.ASGITransport(app=app)


async def test_siem_and_witness_send_the_rotated_credential_without_a_restart(bao: Bao, token_env: None) -> None:
    """The SIEM webhook's authorization and the witness token are read at each send: a refresh is enough."""
    bao.put("audit/siem", {"authorization": "Bearer first-siem", "token": "first-witness"})
    store = _store(bao)
    siem_seen: list[str] = []
    witness_seen: list[str] = []
    siem = WebhookExporter("http://siem.example/in", b"k" * 32, allow_insecure_http=True,
                           authorization=store.current("secret://vault/secret/audit/siem#authorization"),
                           transport=_capture(siem_seen))
    witness = WitnessExporter("http://witness.example/add-checkpoint", allow_insecure_http=True,
                              token=store.current("secret://vault/secret/audit/siem#token"),
                              transport=_capture(witness_seen))
    await siem.send([RECORD])
    await witness.send([CHECKPOINT])
    bao.put("audit/siem", {"authorization": "Bearer second-siem", "token": "second-witness"})
    assert len(store.refresh()) == 2
    await siem.send([RECORD])
    await witness.send([CHECKPOINT])
    assert siem_seen == ["Bearer first-siem", "Bearer second-siem"]
    assert witness_seen == ["Bearer first-witness", "Bearer second-witness"]
    await siem.aclose()
    await witness.aclose()


def _deployment(tmp_path: Path, bao: Bao, key_ref: str) -> Path:
    return write_deployment(tmp_path / "deployment", {
        "version": 1, "identity": {"allow_insecure_dev_issuer": True},
        "sessions": {"key_ref": key_ref},
        "secrets": {"vault": {"address": bao.address,
                              "auth": {"method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}},
        "services": {"s": {"transport": "http", "url": "http://127.0.0.1:9/mcp"}}}, [])


def test_the_gateway_starts_with_a_vault_session_key(bao: Bao, token_env: None, tmp_path: Path) -> None:
    """sessions.key_ref may be a vault reference: the gateway resolves it at build, through its own store."""
    bao.put("gateway/sessions", {"keys": base64.b64encode(os.urandom(32)).decode()})
    root = _deployment(tmp_path, bao, "secret://vault/secret/gateway/sessions#keys")
    gateway = build_gateway(load_deployment(root), environ={"PORTCULLIS_STATE_DIR": str(tmp_path / "state")})
    assert gateway.resource.endswith("/mcp")


def test_the_gateway_refuses_to_start_on_a_missing_vault_field(bao: Bao, token_env: None, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A vault reference that cannot be read stops the start; the error names the reference, never a value."""
    caplog.set_level(logging.DEBUG)
    value = secrets.token_hex(16)
    bao.put("gateway/other", {"keys": value})
    root = _deployment(tmp_path, bao, "secret://vault/secret/gateway/other#missing")
    with pytest.raises(ConfigError) as caught:
        build_gateway(load_deployment(root), environ={"PORTCULLIS_STATE_DIR": str(tmp_path / "state")})
    assert [p.message for p in caught.value.problems] == [
        "secret secret://vault/secret/gateway/other#missing cannot be resolved: the field does not exist"]
    assert value not in caplog.text and bao.root_token not in caplog.text


async def test_console_sends_the_rotated_client_secret_at_the_next_login(bao: Bao, token_env: None) -> None:
    """The console's OIDC client secret is read at each code exchange: a refresh is enough."""
    bao.put("console/oidc", {"secret": "first-client-secret"})
    store = _store(bao)
    sent: list[str] = []

    async def fetch(url: str) -> bytes:
        return json.dumps({"issuer": OP, "authorization_endpoint": f"{OP}/authorize",
                           "token_endpoint": f"{OP}/token"}).encode()

    async def post(url: str, form: dict[str, str]) -> bytes:
        sent.append(form["client_secret"])
        return b"{}"  # no ID token: the login fails after the exchange, which is all this test needs

    config = ConsoleOidcConfig(issuer=OP, client_id=CLIENT_ID, redirect_url=REDIRECT,
                               client_secret_ref="secret://vault/secret/console/oidc#secret")
    issuer = issuer_config()
    client = OidcClient(config, issuer, JwksCache(issuer), ClaimMap(), fetch=fetch, post=post,
                        client_secret=store.current("secret://vault/secret/console/oidc#secret"))
    flow = {"nonce": "n", "verifier": "v"}
    with pytest.raises(LoginFailed):
        await client.finish("code-1", flow)
    bao.put("console/oidc", {"secret": "second-client-secret"})
    store.refresh()
    with pytest.raises(LoginFailed):
        await client.finish("code-2", flow)
    assert sent == ["first-client-secret", "second-client-secret"]
