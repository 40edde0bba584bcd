"""Helpers of the console's browser tests: the console's security headers, the agent's calls (through the
official SDK client), logging a person in through the provider's form, accessibility checks. The stack they
drive is tests/support/console_stack.py."""

from __future__ import annotations

from typing import Any

from mcp import MCPError

from tests.browser.browsing import run_async
from tests.e2e.harness import GatewayProcess
from tests.support.console_stack import Console

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
