"""The console in a real browser: logging in through the OpenID Provider's form, the session cookie, the
Content-Security-Policy and where the pages fetch from, session fixation and cross-site request forgery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.browsing import Shots, Site, origin
from tests.browser.conftest import Tab
from tests.browser.console_pages import (
    assert_accessible_basics,
    assert_console_headers,
    held,
    log_in,
    refund,
)
from tests.support.console_stack import Console, status_of

SESSION = "__Host-portcullis_console"
LOGIN = "__Host-portcullis_console_login"
def cookie(tab: Tab, name: str) -> dict[str, Any] | None:
    return next((c for c in tab.context.cookies() if c["name"] == name), None)


def plant(tab: Tab, name: str, value: str) -> None:
    """An attacker's cookie in this browser before the login (as a sibling subdomain or an XSS would)."""
    tab.context.add_cookies([{"name": name, "value": value, "domain": "127.0.0.1", "path": "/", "secure": True,
                              "httpOnly": True, "sameSite": "Lax"}])


def who(tab: Tab, console: Console) -> str | None:
    """Whom this browser's session is, or None when the console sends it to the login page. The tab is left
    on a blank page: a queue left open polls, and once its session ends htmx navigates to the login page,
    which would race the next check's navigation."""
    tab.page.goto(f"{console.url}/approvals")
    name = None if tab.page.url.startswith(f"{console.url}/login") else str(tab.page.locator("#who").inner_text())
    tab.page.goto("about:blank")
    return name


def test_a_person_logs_in_through_the_providers_form(console: Console, tab: Tab, shots: Shots) -> None:
    """The console sends a stranger to its login page, the button to the provider's form, the form back to
    the queue with a Secure, HttpOnly, SameSite=Strict session; every page carries the CSP, nothing is
    fetched from anywhere but the gateway (and the provider, during the login), and no script is blocked."""
    page, admin = tab.page, console.gateway.admin_base
    grants = len(console.provider.events("token"))
    first = page.goto(console.url)
    assert page.url == f"{console.url}/login"
    assert_console_headers(first)
    assert_accessible_basics(page)
    assert page.locator("#dev-banner, #dev-login-form").count() == 0  # no development login configured
    shots.shoot(page, "login")
    page.locator("#oidc-login").click()
    page.get_by_label("Username").wait_for()
    assert page.url.startswith(f"{console.provider.issuer}/authorize?")
    shots.shoot(page, "provider-login-form")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill(console.provider.passwords["bob"])
    with page.expect_response(f"{console.url}/approvals") as queue:
        page.get_by_role("button", name="Sign in").click()
    assert_console_headers(queue.value)
    assert page.locator("#who").inner_text() == "bob"
    shots.shoot(page, "approvals-queue-empty")

    session = cookie(tab, SESSION)
    assert session is not None and cookie(tab, LOGIN) is None
    assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True, "Strict")
    assert [e["username"] for e in console.provider.events("token")[grants:]] == ["bob"]  # redeemed with PKCE
    assert tab.watch.origins() <= {admin, console.provider.issuer}, tab.watch.origins()

    after_login = len(tab.watch.requests)
    with page.expect_request(f"{console.url}/approvals/list"):  # htmx runs under the CSP and polls the queue
        assert_console_headers(page.reload())
    assert {origin(u) for u in tab.watch.requests[after_login:]} == {admin}
    tab.watch.assert_inert(page)


def test_a_cookie_planted_before_login_is_not_the_session_after_it(
        console: Console, new_tab: Callable[[], Tab]) -> None:
    """Session fixation: neither a made-up session cookie, nor the attacker's own live session, nor the
    attacker's own pre-login cookie becomes the victim's session; the session ends at logout."""
    attacker = new_tab()
    log_in(attacker, console, "dave")
    attacker.page.goto("about:blank")  # not on the polling queue (see who())
    attackers_session = cookie(attacker, SESSION)
    assert attackers_session is not None
    lurker = new_tab()  # the attacker's second browser, parked on the login page
    lurker.page.goto(f"{console.url}/login")
    attackers_login = cookie(lurker, LOGIN)
    assert attackers_login is not None

    for name, value in ((SESSION, "planted-by-an-attacker-0123456789"), (SESSION, attackers_session["value"]),
                        (LOGIN, attackers_login["value"])):
        victim = new_tab()
        plant(victim, name, value)
        log_in(victim, console, "bob")
        session = cookie(victim, SESSION)
        assert session is not None and session["value"] != value, name
        assert who(victim, console) == "bob"
        assert who(attacker, console) != "bob"
        assert who(lurker, console) is None  # the attacker's pre-login cookie logged nobody in

    victim.page.goto(f"{console.url}/approvals")
    victim.page.locator("#logout").click()
    victim.page.wait_for_url(f"{console.url}/login")
    replay = new_tab()
    plant(replay, SESSION, str(session["value"]))
    assert who(replay, console) is None  # the session ended at logout: its cookie opens nothing


HOSTILE_FORM = """<!doctype html><title>win a prize</title>
<form method="post" action="{action}"><input name="csrf_token" value="{token}"><input name="reason" value="csrf">
</form><script>document.forms[0].submit()</script>"""


@pytest.mark.parametrize("where", ["same-site-other-port", "other-site", "same-site-null-origin"])
def test_a_form_another_origin_posts_changes_nothing(
        console: Console, as_person: Callable[[str], Tab], site: Site, foreign_site: Site, shots: Shots,
        where: str) -> None:
    """A logged-in approver visits a hostile page that posts an approval to the console, even carrying the
    session's real CSRF token (as if it had leaked): refused, and the approval stays pending without a vote.
    From another port of the same host the SameSite=Strict cookie goes along (same site); with the page's
    referrer policy no-referrer the browser sends ``Origin: null``."""
    approval_id = held(console.gateway, refund(150, order="ORD-40001"))
    tab = as_person("bob")
    tab.page.goto(f"{console.url}/approvals/{approval_id}")
    token = tab.page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    target = f"{console.url}/approvals/{approval_id}/approve"
    form = HOSTILE_FORM.format(action=target, token=token)
    if where == "same-site-null-origin":
        form = form.replace("<title>", '<meta name="referrer" content="no-referrer"><title>')
    url = (foreign_site if where == "other-site" else site).page(f"/prize-{where}-{approval_id}", form)

    with tab.page.expect_response(lambda r: r.request.method == "POST" and r.url == target) as answer:
        tab.page.goto(url)
    tab.page.wait_for_url(target)
    sent = answer.value.request.all_headers()
    assert sent.get("origin") == {"same-site-other-port": site.base, "other-site": foreign_site.base,
                                  "same-site-null-origin": "null"}[where]
    assert ("__Host-portcullis_console=" in sent.get("cookie", "")) == (where != "other-site")
    assert answer.value.status >= 400, answer.value.status
    shots.shoot(tab.page, f"csrf-refused-{where}")
    state = status_of(console, approval_id)
    assert state["status"] == "pending" and state["votes"] == [], state


def test_a_form_from_the_consoles_own_origin_without_its_token_changes_nothing(
        console: Console, as_person: Callable[[str], Tab]) -> None:
    """The synchronizer token on its own: a same-origin post without the session's token, or with another
    one, is refused and records nothing."""
    approval_id = held(console.gateway, refund(160, order="ORD-40002"))
    tab = as_person("bob")
    tab.page.goto(f"{console.url}/approvals/{approval_id}")
    for token in (None, "0" * 43):
        field = "" if token is None else f'<input name="csrf_token" value="{token}">'
        with tab.page.expect_navigation() as answer:  # the post's answer, loaded
            tab.page.evaluate("""([action, field]) => {
                const form = document.createElement("form");
                form.method = "post"; form.action = action;
                form.innerHTML = field + '<input name="reason" value="forged">';
                document.body.appendChild(form); form.submit();
            }""", [f"{console.url}/approvals/{approval_id}/approve", field])
        assert answer.value is not None and answer.value.status == 403
    state = status_of(console, approval_id)
    assert state["status"] == "pending" and state["votes"] == [], state


def test_a_hostile_page_cannot_frame_the_console(
        console: Console, as_person: Callable[[str], Tab], site: Site, shots: Shots) -> None:
    """Clickjacking: the approval page inside another origin's frame is not rendered (CSP frame-ancestors
    'none', X-Frame-Options DENY), so no Approve button can sit under a decoy."""
    approval_id = held(console.gateway, refund(170, order="ORD-40003"))
    tab = as_person("bob")
    target = f"{console.url}/approvals/{approval_id}"
    url = site.page(f"/frame-{approval_id}", f'<!doctype html><title>decoy</title><iframe src="{target}"></iframe>')
    with tab.page.expect_response(target) as framed:
        tab.page.goto(url)
    assert framed.value.status == 200  # the console answered (the session cookie went along: same site) ...
    frame = tab.page.frame_locator("iframe")
    tab.page.wait_for_load_state("load")
    assert frame.locator("#approve").count() == 0 and frame.locator("#approval-id").count() == 0  # ... unshown
    shots.shoot(tab.page, "framed-refused")
    assert status_of(console, approval_id)["status"] == "pending"
