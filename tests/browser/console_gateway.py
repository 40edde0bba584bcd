"""The demo deployment with the console on, logging people in through the test OpenID Provider.

People: ``bob`` and ``carol`` hold the finance-approver role (they may decide the held refunds), ``dave``
is a person without it. The agent stays billing-bot with development tokens (:meth:`GatewayProcess.token`),
as in tests/e2e/test_approvals.py; people come from the provider (issuer ``corp``), whose role claim the
approver rule names (``issuer:corp/role:finance-approver``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml
from mcp import MCPError

from tests.browser.browsing import OidcProvider, run_async
from tests.e2e.harness import GatewayProcess, copy_demo
from tests.ports import free_port

CLIENT_ID = "portcullis-console"
PERSON = {"principal_type": "person"}
PEOPLE: dict[str, dict[str, Any]] = {
    "bob": {**PERSON, "name": "Bob", "roles": ["finance-approver"]},
    "carol": {**PERSON, "name": "Carol", "roles": ["finance-approver"]},
    "dave": {**PERSON, "name": "Dave", "roles": ["support"]},
    "rita": {**PERSON, "name": "Rita", "roles": ["oncall", "platform"]},  # a responder and an operator
}
CSP = {"default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self'",
       "connect-src": "'self'", "form-action": "'self'", "frame-ancestors": "'none'", "base-uri": "'none'"}


def assert_console_headers(response: Any) -> None:
    """The console's CSP (every directive, nothing looser) and the other security headers of a page."""
    assert response is not None
    headers = response.all_headers()
    policy = dict(d.strip().split(" ", 1) for d in headers["content-security-policy"].split(";") if d.strip())
    assert policy == CSP, policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"  # no referrer to another origin; no-referrer breaks posts
    assert headers["cache-control"] == "no-store"


REFUND = "billing.process_refund"
META = "io.portcullis/approval-id"


def refund(amount: float, order: str = "ORD-20001", reason: str = "duplicate charge") -> dict[str, Any]:
    return {"order_id": order, "amount": amount, "currency": "USD", "reason": reason}


@dataclass
class Console:
    gateway: GatewayProcess
    provider: OidcProvider

    @property
    def url(self) -> str:
        return f"{self.gateway.admin_base}/console"

    def stop(self) -> None:
        try:
            self.gateway.stop()
        finally:
            self.provider.stop()


def start_console(directory: Path, *, people: dict[str, dict[str, Any]] | None = None, edit: Any = None,
                  prepare: Any = None) -> Console:
    """The provider, then the gateway whose console trusts it (``edit(config)`` may change gateway.yaml,
    ``prepare(root)`` the deployment's other files)."""
    port, admin_port = free_port(), free_port()
    callback = f"http://127.0.0.1:{admin_port}/console/oidc/callback"
    provider = OidcProvider(directory / "provider", users=people or PEOPLE, client_id=CLIENT_ID,
                            redirect_uris=[callback])
    try:
        root = copy_demo(directory / "deployment")
        if prepare is not None:
            prepare(root)
        config = yaml.safe_load((root / "gateway.yaml").read_text())
        config["identity"]["issuers"] = [{
            "name": "corp", "issuer": provider.issuer,
            "discovery_url": f"{provider.issuer}/.well-known/openid-configuration",
            "algorithms": ["ES256"], "audience": f"http://127.0.0.1:{port}/mcp",
            "person": {"claim": "principal_type", "equals": "person"}}]
        config["approvals"]["approvers"] = [{"tools": ["billing.*"], "approvers": [
            "issuer:dev/role:finance-approver", "issuer:corp/role:finance-approver"]}]
        config["console"] = {"enabled": True, "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID,
                                                        "redirect_url": callback}}
        if edit is not None:
            edit(config)
        (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        gateway = GatewayProcess(root, port=port, admin_port=admin_port)
        try:
            gateway.wait_ready()
        except BaseException:
            gateway.stop()
            raise
    except BaseException:
        provider.stop()
        raise
    return Console(gateway, provider)


def show_free_text(root: Path) -> None:
    """Drop the demo policy's obligation that hides a refund's free-text ``reason`` (as a keyed hash) from
    approvers and the audit, so that requester-chosen text reaches the approval page."""
    rego = root / "policy" / "portcullis_demo.rego"
    text = rego.read_text()
    start = text.index("# A free-text reason")
    end = text.index("}\n", text.index('obligations contains {"kind": "redact", "pointer": "/reason"}')) + 2
    rego.write_text(text[:start] + text[end:])


def agent_call(gateway: GatewayProcess, arguments: dict[str, Any], *, approval_id: str | None = None,
               justification: str | None = None, token: str | None = None, tool: str = REFUND) -> Any:
    """One call (a refund unless ``tool`` says otherwise) by billing-bot (for alice) through the official SDK
    client: its result or its MCPError."""
    meta: dict[str, Any] = {}
    if approval_id:
        meta[META] = approval_id
    if justification:
        meta["io.portcullis/justification"] = justification

    async def call() -> Any:
        async with gateway.client(token=token) as client:
            try:
                return await client.call_tool(tool, arguments, meta=meta or None)
            except MCPError as exc:
                return exc

    return run_async(call)


def held(gateway: GatewayProcess, arguments: dict[str, Any], **kwargs: Any) -> str:
    """Ask for a refund the policy holds for approval; its approval id."""
    answer = agent_call(gateway, arguments, **kwargs)
    assert isinstance(answer, MCPError) and answer.code == -31010, answer
    return str(answer.data["approval_id"])


def log_in(tab: Any, console: Console, user: str, *, start: str | None = None) -> None:
    """Log ``user`` in through the console's login page and the provider's form; ends on the console."""
    page = tab.page
    page.goto(start or f"{console.url}/login")
    page.locator("#oidc-login").click()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(console.provider.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.url}/approvals")


def status_of(console: Console, approval_id: str) -> dict[str, Any]:
    """The approval as an approver reads it through the JSON API (a development approver, not a browser)."""
    token = console.gateway.token(user="erin", agent=None, roles=["finance-approver"])
    answer = httpx2.get(f"{console.gateway.admin_base}/approvals/{approval_id}", timeout=15,
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !(el.tagName === 'BUTTON' && el.innerText.trim()))
    .map(el => el.outerHTML)"""


def assert_accessible_basics(page: Any) -> None:
    """Every form control has a name a screen reader reads (a label, aria-label, or a button's text), the
    page has one h1 and says its language, and its first Tab lands on the skip link."""
    assert page.evaluate(UNLABELLED) == [], page.url
    assert page.locator("h1").count() == 1, page.url
    assert page.locator("html").get_attribute("lang") == "en"
    page.locator("body").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip", page.url


def tab_to(page: Any, element_id: str, presses: int = 80) -> None:
    """Move the keyboard focus forward with Tab until it is on ``#element_id``."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with the keyboard on {page.url}")
