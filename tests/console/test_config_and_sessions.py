"""The console's configuration (lint and serve refuse the same bad configs), session expiry (idle, absolute),
the in-memory store's bound, and failing closed when the session store is down."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.console.sessions import Sessions
from portcullis.console.store import ConsoleStoreUnavailable, MemoryConsoleStore
from portcullis.errors import ConfigError
from portcullis.identity.principal import Principal
from tests.console.conftest import Harness, csrf_of, dev_login

BOB = Principal(client_id="bob", auth_method="dev", issuer="dev", user_id="bob", person=True, issuer_name="dev")
OIDC = {"issuer": "https://login.example.com", "client_id": "portcullis-console",
        "redirect_url": "https://gw.example.com:9464/console/oidc/callback"}
CORP = {"name": "corp", "issuer": "https://login.example.com", "algorithms": ["ES256"],
        "jwks_url": "https://login.example.com/jwks", "audience": "http://127.0.0.1:8080/mcp"}


def _demo(tmp_path: Path, change: dict[str, Any]) -> Path:
    root = tmp_path / "deployment"
    shutil.copytree(str(resources.files("portcullis.demo") / "deployment"), root)
    gateway = yaml.safe_load((root / "gateway.yaml").read_text())
    for key, value in change.items():
        if value is None:
            gateway.pop(key, None)
        else:
            gateway[key] = value
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    return root


def _refusal(root: Path) -> str:
    errors = [str(p) for p in lint_deployment(root) if p.severity == "error"]
    with pytest.raises(ConfigError) as served:
        load_deployment(root)
    assert errors and any(e.split(": ", 1)[-1][:60] in str(served.value) for e in errors), (errors, served.value)
    return " ".join(errors)


def test_the_demo_has_the_console_on_with_the_development_login(tmp_path: Path) -> None:
    gateway = load_deployment(_demo(tmp_path, {})).gateway
    assert gateway.console.enabled and gateway.console.dev_login and gateway.console.oidc is None


@pytest.mark.parametrize(("change", "message"), [
    ({"console": {"enabled": True, "dev_login": True},
      "identity": {"issuers": [CORP]}}, "console.dev_login needs identity.allow_insecure_dev_issuer"),
    ({"console": {"enabled": True}}, "needs a way to log in"),
    ({"console": {"enabled": True, "oidc": OIDC}}, "must be the 'issuer' of one of identity.issuers"),
    ({"console": {"enabled": True, "oidc": {**OIDC, "redirect_url": "https://gw.example.com/elsewhere"}},
      "identity": {"issuers": [CORP]}}, "must end in /console/oidc/callback"),
    ({"console": {"enabled": True, "oidc": {**OIDC, "redirect_url": "http://gw.example.com:9464/console/oidc/"
                                                                     "callback"}},
      "identity": {"issuers": [CORP]}}, "https (or http to a loopback host)"),
    ({"console": {"enabled": True, "oidc": {**OIDC, "scopes": ["profile"]}},
      "identity": {"issuers": [CORP]}}, "must include 'openid'"),
    ({"console": {"enabled": True, "oidc": {**OIDC, "client_secret_ref": "hunter2"}},
      "identity": {"issuers": [CORP]}}, "client_secret_ref"),
    ({"console": {"enabled": True, "dev_login": True, "idle_timeout_s": 7200, "session_ttl_s": 3600}},
     "idle_timeout_s must not exceed"),
    ({"console": {"enabled": True, "dev_login": True}, "admin": {"port": None}}, "needs the admin listener"),
])
def test_lint_and_serve_refuse_the_same_bad_console_configs(tmp_path: Path, change: dict[str, Any],
                                                            message: str) -> None:
    assert message in _refusal(_demo(tmp_path, change))


def test_an_oidc_console_on_a_trusted_issuer_is_accepted(tmp_path: Path) -> None:
    root = _demo(tmp_path, {"console": {"enabled": True, "oidc": {**OIDC, "client_secret_ref": "secret://env/X"}},
                            "identity": {"issuers": [CORP]}})
    assert not [p for p in lint_deployment(root) if p.severity == "error" and "console" in p.message]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_sessions_end_when_idle_and_at_their_absolute_lifetime() -> None:
    clock = Clock()
    sessions = Sessions(MemoryConsoleStore(clock=clock), ttl_s=3600, idle_s=600, login_ttl_s=60, clock=clock)
    session_id, _ = await sessions.create(BOB, dev=True, jti=None)
    clock.now += 599
    assert await sessions.load(session_id) is not None  # used: the idle clock restarts
    clock.now += 599
    assert await sessions.load(session_id, touch=False) is not None  # a poll: does not restart it
    clock.now += 2
    assert await sessions.load(session_id) is None  # idle past 600 s since the last use
    session_id, _ = await sessions.create(BOB, dev=True, jti=None)
    for _ in range(7):  # in use all along: alive up to the absolute lifetime (3500 s of 3600)...
        clock.now += 500
        assert await sessions.load(session_id) is not None
    clock.now += 500
    assert await sessions.load(session_id) is None  # ...and not past it


async def test_a_store_full_of_sessions_refuses_new_records_after_dropping_expired_ones() -> None:
    clock = Clock()
    store = MemoryConsoleStore(clock=clock, max_records=2)
    await store.put("session:a", {}, 10)
    await store.put("session:b", {}, 100)
    with pytest.raises(ConsoleStoreUnavailable):
        await store.put("session:c", {}, 10)
    clock.now += 11
    await store.put("session:c", {}, 10)  # "a" expired and made room
    assert await store.get("session:a") is None and await store.get("session:b") == {}


async def test_a_flood_of_login_page_visits_never_evicts_a_session_or_locks_out_a_login() -> None:
    clock = Clock()
    sessions = Sessions(MemoryConsoleStore(clock=clock, max_records=50), ttl_s=3600, idle_s=600, login_ttl_s=600,
                        clock=clock)
    session_id, _ = await sessions.create(BOB, dev=True, jti=None)
    for _ in range(5000):  # anonymous visitors, each a new pre-login record, none expired
        await sessions.pre_login(None)
    pre_id, pre = await sessions.pre_login(None)  # a real person still gets one ...
    assert await sessions.find_pre_login(pre_id) == pre
    assert await sessions.load(session_id) is not None  # ... and a logged-in person stays logged in


class DownStore:
    async def _down(self, *args: Any) -> Any:
        raise ConsoleStoreUnavailable(detail="console store get failed: ConnectionError")

    put = get = take = delete = _down


async def test_a_store_that_is_down_fails_closed_with_a_clear_page(harness: Harness) -> None:
    await dev_login(harness.client, "bob", "finance-approver")
    page = await harness.client.get("/console/login")
    token = csrf_of(page.text)
    app = harness.client._transport.app.__dict__["_console"]  # type: ignore[attr-defined]
    app.sessions.store = DownStore()
    for answer in (await harness.client.get("/console/approvals"), await harness.client.get("/console/login"),
                   await harness.client.post("/console/login/dev", data={"csrf_token": token, "user": "bob"})):
        assert answer.status_code == 503
        assert "session store is unavailable" in answer.text and "<h1>Log in</h1>" in answer.text
        assert 'id="dev-login-form"' not in answer.text and "__Host-portcullis_console=" not in str(answer.headers)


async def test_a_started_login_expires_after_login_ttl_s() -> None:
    clock = Clock()
    sessions = Sessions(MemoryConsoleStore(clock=clock), ttl_s=3600, idle_s=600, login_ttl_s=60, clock=clock)
    pre_id, _ = await sessions.pre_login(None)
    await sessions.start_flow(pre_id, "s1", {"nonce": "n"})
    await sessions.start_flow(pre_id, "s2", {"nonce": "n"})
    clock.now += 59
    assert await sessions.take_flow(pre_id, "s1") == {"nonce": "n"}
    clock.now += 2
    assert await sessions.take_flow(pre_id, "s2") is None


async def test_a_form_posted_after_the_session_ended_says_so_and_changes_nothing(harness: Harness) -> None:
    """Without a session a POST is refused before its CSRF check (nothing can change either way): with the
    ended session's token and with none, the page says to log in again (another site's post is refused
    earlier, by the admin listener's Origin guard)."""
    await dev_login(harness.client, "bob", "finance-approver")
    token = csrf_of((await harness.client.get("/console/approvals")).text)
    await harness.client.post("/console/logout", data={"csrf_token": token})
    for data in ({"csrf_token": token, "reason": "x"}, {"reason": "x"}):
        answer = await harness.client.post("/console/approvals/apr_" + "0" * 32 + "/approve", data=data)
        assert answer.status_code == 403 and "Your session has ended. Log in again." in answer.text
        assert "security token" not in answer.text
