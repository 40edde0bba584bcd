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


# WCAG 2.2 contrast (1.4.3): every visible piece of text against the background it is drawn on (ancestors'
# backgrounds composited, white canvas below), at least 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold)
LOW_CONTRAST = """() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, below) => { const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat(1); };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const background = (el) => { const layers = []; for (let e = el; e; e = e.parentElement) {
      const b = parse(getComputedStyle(e).backgroundColor);
      if (b && b[3] > 0) layers.push(b); if (b && b[3] >= 1) break; }
    let bg = [255, 255, 255, 1]; for (const layer of layers.reverse()) bg = over(layer, bg); return bg; };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const st = getComputedStyle(el); if (st.visibility === 'hidden' || Number(st.opacity) === 0) continue;
    const bg = background(el), fg = over(parse(st.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a), ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(st.fontSize), large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} ${ratio.toFixed(2)}`);
  }
  return bad; }"""


def assert_accessible_basics(page: Any) -> None:
    """Every form control has a name a screen reader reads (a label, aria-label, or a button's text), the
    page has one h1 and says its language, its first Tab lands on the skip link, every text has enough
    contrast with its background, and the page fits a laptop screen's width (no sideways scrolling)."""
    assert page.evaluate(UNLABELLED) == [], page.url
    assert page.evaluate(LOW_CONTRAST) == [], page.url
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url
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
