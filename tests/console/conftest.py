"""The console on an admin listener app, with a real ApprovalService (SQLite), the test OpenID Provider
(tests/support/oidc_provider.py, in-process) reached over HTTP (an ASGI transport) and a revocation list the
test controls."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from portcullis.approvals.service import ApprovalService
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.config.console import ConsoleConfig
from portcullis.config.model import ApprovalsConfig
from portcullis.console.build import build_console
from portcullis.console.oidc import HttpsPoster, OidcClient
from portcullis.console.services import ConsoleServices
from portcullis.console.store import MemoryConsoleStore
from portcullis.identity.config import ClaimMap
from portcullis.identity.issuers import IssuerConfig, PersonSignal
from portcullis.identity.jwks import HttpsFetcher, JwksCache
from portcullis.identity.revocation import Revoked
from portcullis.transport.admin import AdminApp
from portcullis.transport.origin_guard import OriginGuard
from tests.support.oidc_provider import Provider

ADMIN = "https://127.0.0.1:9464"
ORIGIN = ADMIN
OP = "https://op.test"
CLIENT_ID = "portcullis-console"
REDIRECT = f"{ADMIN}/console/oidc/callback"
APPROVERS = ApprovalsConfig.model_validate({"ttl_s": 600, "approvers": [
    {"tools": ["billing.*"], "approvers": ["role:finance-approver"]}]})
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOGIN_REQUEST = re.compile(r'name="request" value="([^"]+)"')


class Revocations:
    def __init__(self) -> None:
        self.revoked: set[str] = set()

    def check(self, *, jti: str | None, client_id: str | None, agent_id: str | None) -> None:
        if {jti, client_id, agent_id} & self.revoked:
            raise Revoked()

    async def run(self) -> None:  # pragma: no cover - the protocol's background task
        pass


class Audit:
    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class Harness:
    client: httpx2.AsyncClient
    op: Provider
    op_client: httpx2.AsyncClient
    approvals: ApprovalService
    revocations: Revocations
    store: MemoryConsoleStore

    def new_client(self) -> httpx2.AsyncClient:
        """Another browser: its own cookies."""
        return httpx2.AsyncClient(transport=self.client._transport, base_url=ADMIN,
                                  headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})

    async def op_grant(self, authorize: str, user: str, roles: str = "") -> httpx2.Response:
        """A person signs in on the provider's form at ``authorize`` (the console's redirect to it): the
        provider's answer, a redirect to the callback with a code. ``user`` is registered as a person
        (``principal_type: user``) with ``roles`` (split on commas and spaces) first."""
        assert authorize.startswith(f"{OP}/authorize?"), authorize
        form = await self.op_client.get(authorize.removeprefix(OP))
        assert form.status_code == 200, form.text
        found = _LOGIN_REQUEST.search(form.text)
        assert found is not None, "no login request on the provider's form"
        password = self.op.add_user(user, {"principal_type": "user",
                                           "roles": [r for r in roles.replace(",", " ").split() if r]})
        return await self.op_client.post("/login", data={"request": found.group(1), "username": user,
                                                         "password": password})


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "no csrf_token field on the page"
    return found.group(1)


async def dev_login(client: httpx2.AsyncClient, user: str, roles: str = "") -> httpx2.Response:
    page = await client.get("/console/login")
    response = await client.post("/console/login/dev", data={"csrf_token": csrf_of(page.text), "user": user,
                                                             "roles": roles})
    assert response.status_code == 200, response.text
    return response


async def oidc_login(client: httpx2.AsyncClient, harness: Harness, user: str, roles: str = "") -> httpx2.Response:
    """The whole code flow as a browser does it; answers the callback's response."""
    await client.get("/console/login")
    start = await client.get("/console/login/oidc")
    assert start.status_code == 303, start.text
    granted = await harness.op_grant(start.headers["location"], user, roles)
    assert granted.status_code == 302, granted.text
    callback = granted.headers["location"]
    assert callback.startswith(REDIRECT)
    return await client.get(callback.removeprefix(ADMIN))


def issuer_config() -> IssuerConfig:
    return IssuerConfig(name="corp", issuer=OP, discovery_url=f"{OP}/.well-known/openid-configuration",
                        algorithms=("ES256",), audience="http://127.0.0.1:8080/mcp",
                        person=PersonSignal(claim="principal_type", equals="user"))


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    op = Provider(OP, {"clients": [{"client_id": CLIENT_ID, "redirect_uris": [REDIRECT]}]})
    to_op = httpx2.ASGITransport(app=op.app)
    issuer = issuer_config()
    cache = JwksCache(issuer, fetch=HttpsFetcher(transport=to_op))
    config = ConsoleConfig.model_validate({"enabled": True, "dev_login": True, "oidc": {
        "issuer": OP, "client_id": CLIENT_ID, "redirect_url": REDIRECT}})
    assert config.oidc is not None
    oidc = OidcClient(config.oidc, issuer, cache, ClaimMap(), fetch=HttpsFetcher(transport=to_op),
                      post=HttpsPoster(transport=to_op))
    store = SqliteApprovalStore.open(tmp_path / "approvals.sqlite3")
    approvals = ApprovalService(store, APPROVERS, clock=__import__("time").time, audit=Audit())
    revocations = Revocations()
    console_store = MemoryConsoleStore()
    console = build_console(config, ConsoleServices(approvals=approvals, revocations=revocations),
                            store=console_store, issuers=[issuer], caches={"corp": cache}, claim_map=ClaimMap(),
                            origin=tmp_path / "gateway.yaml", oidc=oidc)

    admin = AdminApp(metrics=lambda: (b"", "text/plain"), readiness=lambda: (True, {}),
                     guard=OriginGuard(("127.0.0.1:*",), ("https://127.0.0.1:*",)), console=console)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=admin), base_url=ADMIN,
                                  headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"}) as client, \
            httpx2.AsyncClient(transport=to_op, base_url=OP) as op_client:
        yield Harness(client, op, op_client, approvals, revocations, console_store)
