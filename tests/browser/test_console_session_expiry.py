"""Console sessions end in the browser as configured: after ``idle_timeout_s`` without a page of the person's
(the pages' own polling does not count) and ``session_ttl_s`` after login however busy the person is. The
next click of an ended session lands on the login page, and a form posted from a page of it changes nothing.

The deployment's console: idle 60 s, absolute 120 s (the smallest values the configuration accepts, so the
test waits about two minutes). Bob logs in, opens a held refund, and leaves it; Carol logs in after him and
keeps clicking every 10 s: past Bob's idle time his session is over and Carol's is not, and past Carol's
absolute time hers is over too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.browsing import Shots
from tests.browser.conftest import Tab
from tests.browser.console_pages import held, log_in, refund
from tests.support.console_stack import Console, start_console, status_of

IDLE_S, TTL_S = 60, 120
MARGIN_S = 8  # past a deadline before looking (the gateway's clock and this one are the same machine's)
CLICK_EVERY_S = 10  # Carol's pace (a session's last use is written at most every 15 s)

pytestmark = pytest.mark.timeout(IDLE_S + TTL_S + 240)


def _short_sessions(config: dict[str, Any]) -> None:
    config["console"].update(idle_timeout_s=IDLE_S, session_ttl_s=TTL_S)


@pytest.fixture(scope="module")
def console(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    started = start_console(tmp_path_factory.mktemp("console"), edit=_short_sessions)
    yield started
    started.stop()


def _who(tab: Tab, console: Console) -> str | None:
    """Whom the session of this browser is (a click on the Approvals page), None on the login page."""
    tab.page.goto(f"{console.url}/approvals")
    if tab.page.url == f"{console.url}/login":
        return None
    return str(tab.page.locator("#who").inner_text())


def _keep_clicking(tab: Tab, console: Console, until: float, alive_before: float) -> None:
    """Click every few seconds until ``until`` (monotonic); logged in while before ``alive_before``."""
    while (now := time.monotonic()) < until:
        who = _who(tab, console)
        if now < alive_before:
            assert who == "carol", f"Carol's session ended {now - alive_before + TTL_S:.0f} s after her login"
        time.sleep(min(CLICK_EVERY_S, max(0.0, until - time.monotonic())))


def test_an_idle_session_ends_then_a_busy_one_at_its_absolute_time(
        console: Console, new_tab: Callable[..., Tab], shots: Shots) -> None:
    approval_id = held(console.gateway, refund(300, order="ORD-70001"))
    # Bob, in a browser without scripts (nothing polls: the page waits as he left it), and in a second tab
    # with scripts on the queue, which polls every 2 s and must not keep the session alive
    bob = new_tab(java_script_enabled=False)
    log_in(bob, console, "bob")
    bob.page.goto(f"{console.url}/approvals/{approval_id}")
    bob_form = bob.context.new_page()  # the same page in another tab of his: for a post after a click
    bob_form.goto(f"{console.url}/approvals/{approval_id}")
    bob_queue = new_tab(bob.context.storage_state())
    assert _who(bob_queue, console) == "bob"
    bob_seen = time.monotonic()  # Bob's last page: his session's last use is at most this
    carol = new_tab()
    carol_started = time.monotonic()  # before her login: her session's creation is after this
    log_in(carol, console, "carol")
    carol_in = time.monotonic()

    _keep_clicking(carol, console, until=bob_seen + IDLE_S + MARGIN_S, alive_before=carol_started + TTL_S - 20)
    assert _who(carol, console) == "carol"  # busy: not idle, and not yet at its absolute time
    bob_queue.page.wait_for_url(f"{console.url}/login")  # the queue's next poll was refused: to the login page
    shots.shoot(bob_queue.page, "idle-queue-to-login")

    bob.page.locator("#nav-approvals").click()
    assert bob.page.url == f"{console.url}/login"
    shots.shoot(bob.page, "idle-click-to-login")
    bob_form.get_by_label("Reason for approving (optional)").fill("approved after a coffee")
    with bob_form.expect_response(f"{console.url}/approvals/{approval_id}/approve") as posted:
        bob_form.locator("#approve").click()
    assert posted.value.status == 403
    assert "Your session has ended" in bob_form.locator("main").inner_text()  # not "reload the page"
    shots.shoot(bob_form, "idle-approve-refused")
    assert status_of(console, approval_id)["status"] == "pending"
    bob_form.get_by_role("link", name="Back to the console").click()
    assert bob_form.url == f"{console.url}/login"

    _keep_clicking(carol, console, until=carol_in + TTL_S + MARGIN_S, alive_before=carol_started + TTL_S - 20)
    assert _who(carol, console) is None, "Carol's session outlived session_ttl_s"
    shots.shoot(carol.page, "absolute-time-to-login")
    assert status_of(console, approval_id)["status"] == "pending"
