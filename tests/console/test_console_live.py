"""The console on a real gateway process over HTTP, with the test OpenID Provider as a process (the stack
of tests/support/console_stack.py, the development login on too): a refund is held, a person logs in through
OIDC (code flow, PKCE), sees it, approves it with a reason, and the agent's retry runs. Cookies are handled
by hand here: an HTTP client does not send Secure cookies over http, a browser does to 127.0.0.1
(docs/console.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import MCPError

from tests.e2e.test_approvals import ask, pending, refund
from tests.support.console_stack import PEOPLE, Console, start_console, with_dev_login

pytestmark = pytest.mark.xdist_group("console-live")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    people = {**PEOPLE, "dana": {"principal_type": "person", "roles": ["finance-approver"]}}
    running = start_console(tmp_path_factory.mktemp("console"), people=people, edit=with_dev_login)
    yield running
    running.stop()


class Browser:
    """Just enough of a browser: cookies by name (Secure ones too, over http to 127.0.0.1), same-origin
    headers on POST, no redirects followed unless asked."""

    def __init__(self, origin: str) -> None:
        self.origin, self.cookies = origin, {}  # type: ignore[var-annotated]
        self.http = httpx2.Client(timeout=30, follow_redirects=False)

    def _keep(self, response: httpx2.Response) -> httpx2.Response:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in header.lower() or not value or value == '""':
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def _headers(self, url: str) -> dict[str, str]:
        if not url.startswith(self.origin):
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def get(self, url: str) -> httpx2.Response:
        return self._keep(self.http.get(url, headers=self._headers(url)))

    def post(self, url: str, data: dict[str, str]) -> httpx2.Response:
        headers = {**self._headers(url), "origin": self.origin, "sec-fetch-site": "same-origin"}
        if not url.startswith(self.origin):
            headers = {"origin": "null"}
        return self._keep(self.http.post(url, data=data, headers=headers))


def _field(page: str, name: str) -> str:
    found = re.search(f'name="{name}" value="([^"]+)"', page)
    assert found is not None, name
    return found.group(1)


def _csrf(page: str) -> str:
    return _field(page, "csrf_token")


async def test_oidc_login_approve_in_the_console_and_the_agent_retry_runs(stack: Console) -> None:
    data: dict[str, Any] = await pending(stack.gateway, refund(300, order="ORD-20002"))
    approval_id = data["approval_id"]
    admin = stack.gateway.admin_base
    browser = Browser(admin)
    login = browser.get(f"{admin}/console/login")
    assert login.status_code == 200 and 'id="oidc-login"' in login.text and 'id="dev-banner"' in login.text
    start = browser.get(f"{admin}/console/login/oidc")
    op = stack.provider.issuer
    assert start.status_code == 303 and start.headers["location"].startswith(f"{op}/authorize?")
    form = browser.get(start.headers["location"])
    assert form.status_code == 200 and 'id="password"' in form.text
    granted = browser.post(f"{op}/login", {"request": _field(form.text, "request"), "username": "dana",
                                           "password": stack.provider.passwords["dana"]})
    assert granted.status_code == 302 and granted.headers["location"].startswith(f"{admin}/console/oidc/callback?")
    landed = browser.get(granted.headers["location"])
    assert landed.status_code == 200 and "__Host-portcullis_console" in browser.cookies
    queue = browser.get(f"{admin}/console/approvals")
    assert queue.status_code == 200 and approval_id in queue.text and '<span id="who">dana</span>' in queue.text
    detail = browser.get(f"{admin}/console/approvals/{approval_id}")
    assert "ORD-20002" in detail.text and "content-security-policy" in detail.headers
    voted = browser.post(f"{admin}/console/approvals/{approval_id}/approve",
                         {"csrf_token": _csrf(detail.text), "reason": "checked with the customer"})
    assert voted.status_code == 303, voted.text
    result = await ask(stack.gateway, refund(300, order="ORD-20002"), approval_id=approval_id)
    assert not isinstance(result, MCPError), result
    assert approval_id not in browser.get(f"{admin}/console/approvals/list").text
    out = browser.post(f"{admin}/console/logout", {"csrf_token": _csrf(detail.text)})
    assert out.status_code == 303
    assert browser.get(f"{admin}/console/approvals").status_code == 303


async def test_a_responder_searches_the_audit_sets_and_lifts_a_switch_on_the_gateway(
        stack: Console) -> None:
    """The responders' and operators' pages wired to the gateway's own services (its audit reader, chain
    verification, kill switches, policy reloader, metrics)."""
    await pending(stack.gateway, refund(250, order="ORD-30003"))
    base = stack.url
    browser = Browser(stack.gateway.admin_base)
    login = browser.get(f"{base}/login")
    assert browser.post(f"{base}/login/dev", {"csrf_token": _csrf(login.text), "user": "rita",
                                              "roles": "oncall platform"}).status_code == 200
    found = browser.get(f"{base}/audit?tool=billing.process_refund&decision=require_approval")
    assert found.status_code == 200 and 'id="audit-results"' in found.text, found.text
    request_id = re.search(r'class="request-link" href="/console/audit/request\?id=([^"]+)"', found.text)
    assert request_id is not None
    timeline = browser.get(f"{base}/audit/request?id={request_id.group(1)}")
    assert "ORD-30003" in timeline.text and 'id="summary-decision">require_approval' in timeline.text
    state = ""
    for _ in range(100):
        state = browser.get(f"{base}/audit/chain").text
        if 'data-state="ok"' in state:
            break
        await anyio.sleep(0.1)
    assert 'data-state="ok"' in state
    page = browser.get(f"{base}/containment")
    token = _csrf(page.text)
    form = {"csrf_token": token, "kind": "tool", "target": "files.read", "reason": "live test"}
    assert 'id="kill-set-confirm"' in browser.post(f"{base}/containment/kill-switches/confirm", form).text
    assert browser.post(f"{base}/containment/kill-switches", {**form, "confirm": "yes"}).status_code == 303
    listed = browser.get(f"{base}/containment").text
    switch = re.search(r'data-switch-id="(ks_[0-9a-f]{24})"', listed)
    assert switch is not None
    lifted = browser.post(f"{base}/containment/kill-switches/{switch.group(1)}/lift",
                          {"csrf_token": token, "reason": "done"})
    assert lifted.status_code == 303 and 'id="no-active-switches"' in browser.get(f"{base}/containment").text
    kill_records = browser.get(f"{base}/audit?request_id=&tool=&agent=&user=&since=2000-01-01T00:00").text
    assert "kill_switch" in kill_records
    policy = browser.get(f"{base}/containment/policy")
    assert policy.status_code == 200 and 'id="active-version"' in policy.text
    live = browser.get(f"{base}/live/figures")
    assert live.status_code == 200 and "billing.process_refund" in live.text and 'id="live-queues"' in live.text
