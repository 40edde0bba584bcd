"""The approval queue in a real browser: an approver sees a held refund arrive, reads it in full, approves
or denies it, and the agent's retry runs or is refused; two approvers are shown as such; a person without
the role has nothing to decide; hostile strings from the requester render inert and visible."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mcp import MCPError

from portcullis.approvals.model import visible
from tests.browser.browsing import Shots, origin, run_async
from tests.browser.conftest import Tab
from tests.browser.console_pages import (
    agent_call,
    assert_accessible_basics,
    assert_console_headers,
    held,
    refund,
    tab_to,
)
from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.support.console_stack import Console, show_free_text, start_console, status_of


@pytest.fixture(scope="module")
def console(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The console of a demo deployment that shows approvers a refund's free-text reason."""
    started = start_console(tmp_path_factory.mktemp("console"), prepare=show_free_text)
    yield started
    started.stop()


def shown_fields(page: Any, where: str) -> dict[str, str]:
    """The top-level keys of a value the page shows as a key/value table, and each value's text."""
    return dict(page.eval_on_selector(where, """el => Object.fromEntries(
        [...el.querySelector(':scope > table > tbody').children].map(tr => [tr.children[0].innerText,
                                                                           tr.children[1].innerText]))"""))


def open_approval(tab: Tab, console: Console, approval_id: str) -> None:
    assert_console_headers(tab.page.goto(f"{console.url}/approvals/{approval_id}"))
    assert tab.page.locator("#approval-id").inner_text() == approval_id


def test_an_approver_approves_a_held_refund_and_the_agents_retry_runs(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    """The held call appears in the open queue without a reload; its page shows the call in full; the
    approval is recorded for the approver with the reason, and the agent's retry runs exactly that call."""
    tab = as_person("bob")
    page = tab.page
    after_login = len(tab.watch.requests)
    approval_id = held(console.gateway, refund(300, order="ORD-50001"), justification="customer charged twice")
    row = page.locator(f'tr[data-approval-id="{approval_id}"]')
    row.wait_for()  # live: the list polls, nobody reloads
    assert "billing.process_refund" in row.inner_text()
    shots.shoot(page, "approvals-queue")

    row.locator("a.approval-link").click()
    page.wait_for_url(f"{console.url}/approvals/{approval_id}")
    arguments = shown_fields(page, "#arguments")
    assert (arguments["order_id"], arguments["amount"], arguments["currency"]) == ('"ORD-50001"', "300", '"USD"')
    assert page.locator("#arguments-hash").inner_text().startswith("sha256:")
    assert page.locator("#justification").inner_text() == "customer charged twice"
    assert page.locator("#approval-count").inner_text().startswith("0 of 1 required")
    assert "billing-bot" in page.locator("#requester").inner_text()
    shots.shoot(page, "approval-detail")

    page.get_by_label("Reason for approving (optional)").fill("order checked")
    page.locator("#approve").click()
    page.wait_for_url(f"{console.url}/approvals/{approval_id}?done=approve")
    assert page.locator("#approval-status").inner_text() == "approved"
    assert page.locator("#vote-notice").is_visible()
    shots.shoot(page, "approval-approved")

    retried = agent_call(console.gateway, refund(300, order="ORD-50001"), approval_id=approval_id)
    assert not isinstance(retried, MCPError), retried
    assert retried.structured_content["status"] == "processed"
    records = run_async(lambda: read_chain(console.gateway.state_dir / STORE_FILE))
    steps = [r for r in records if r.kind == "approval" and r.fields["approval_id"] == approval_id]
    assert [r.fields["event"] for r in steps] == ["proposed", "approved", "executed"]
    assert steps[1].fields["approver"]["user_id"] == "bob" and steps[1].fields["reason"] == "order checked"
    assert steps[1].fields["approver"]["issuer"] == console.provider.issuer
    assert {origin(u) for u in tab.watch.requests[after_login:]} == {console.gateway.admin_base}
    tab.watch.assert_inert(page)


def test_an_approver_denies_and_the_agents_retry_is_refused(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    approval_id = held(console.gateway, refund(200, order="ORD-50002"))
    tab = as_person("bob")
    open_approval(tab, console, approval_id)
    tab.page.get_by_label("Reason for denying (optional)").fill("not our customer")
    tab.page.locator("#deny").click()
    tab.page.wait_for_url(f"{console.url}/approvals/{approval_id}?done=deny")
    assert tab.page.locator("#approval-status").inner_text() == "denied"
    assert "not our customer" in tab.page.locator("#votes").inner_text()
    shots.shoot(tab.page, "approval-denied")
    retried = agent_call(console.gateway, refund(200, order="ORD-50002"), approval_id=approval_id)
    assert isinstance(retried, MCPError) and retried.code == -31011, retried
    tab.page.goto(f"{console.url}/approvals")
    assert tab.page.locator(f'tr[data-approval-id="{approval_id}"]').count() == 0  # decided: out of the queue


def test_two_approvers_are_shown_as_such_and_both_are_needed(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    """Over 400 the policy wants two different people: one approval leaves the call pending (the same person
    approving again is refused), the second (another person) lets the retry run, and the first approver's
    open page shows the approval without a reload."""
    approval_id = held(console.gateway, refund(450, order="ORD-50003"))
    bob = as_person("bob")
    open_approval(bob, console, approval_id)
    assert bob.page.locator("#approval-count").inner_text() == (
        "0 of 2 required — two different people must approve")
    bob.page.locator("#approve").click()
    bob.page.wait_for_url(f"{console.url}/approvals/{approval_id}?done=approve")
    assert bob.page.locator("#approval-status").inner_text() == "pending"
    assert bob.page.locator("#approval-count").inner_text().startswith("1 of 2 required")
    shots.shoot(bob.page, "approval-two-person-one-of-two")
    bob.page.locator("#approve").click()  # the same person again counts for nothing
    bob.page.locator("#vote-error").wait_for()
    assert bob.page.locator("#approval-count").inner_text().startswith("1 of 2 required")
    early = agent_call(console.gateway, refund(450, order="ORD-50003"), approval_id=approval_id)
    assert isinstance(early, MCPError) and early.code == -31010, early  # one person is not enough

    carol = as_person("carol")
    open_approval(carol, console, approval_id)
    carol.page.locator("#approve").click()
    carol.page.wait_for_url(f"{console.url}/approvals/{approval_id}?done=approve")
    assert carol.page.locator("#approval-status").inner_text() == "approved"
    assert carol.page.locator("#votes tbody tr").count() == 2
    from playwright.sync_api import expect  # here: the module imports without Playwright (conftest skips)

    expect(bob.page.locator("#approval-status")).to_have_text("approved", timeout=30_000)  # live, no reload
    shots.shoot(carol.page, "approval-two-person-approved")
    retried = agent_call(console.gateway, refund(450, order="ORD-50003"), approval_id=approval_id)
    assert not isinstance(retried, MCPError), retried


def test_a_person_without_the_role_sees_nothing_to_decide_and_is_refused(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    """Dave is a person but no finance approver: an empty queue while a refund waits, "no such approval"
    at its URL, and a vote he forges with his own session's token is refused."""
    approval_id = held(console.gateway, refund(180, order="ORD-50004"))
    tab = as_person("dave")
    page = tab.page
    assert page.locator("#no-approvals").is_visible() and page.locator("a.approval-link").count() == 0
    shots.shoot(page, "approvals-nothing-to-decide")
    answer = page.goto(f"{console.url}/approvals/{approval_id}")
    assert answer is not None and answer.status == 404
    assert page.locator("#approval-id").count() == 0 and "process_refund" not in page.content()
    shots.shoot(page, "approval-refused")
    with page.expect_navigation() as vote:
        page.evaluate("""(action) => {
            const form = document.createElement("form");
            form.method = "post"; form.action = action;
            const token = document.querySelector('meta[name="csrf-token"]').content;
            form.innerHTML = '<input name="csrf_token"><input name="reason" value="let me">';
            form.elements.csrf_token.value = token;
            document.body.appendChild(form); form.submit();
        }""", f"{console.url}/approvals/{approval_id}/approve")
    assert vote.value is not None and vote.value.status in (403, 404)
    state = status_of(console, approval_id)
    assert state["status"] == "pending" and state["votes"] == [], state


MARKUP = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"><b>bold</b>'
HOSTILE = f"{MARKUP} \u202eevil\u202c zero\u200bwidth\u2066"


def test_hostile_strings_from_the_requester_render_inert_and_visible(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    """Markup, script, bidi overrides and zero-width characters in the arguments, the justification, the
    requester's user id and a vote's reason: shown as text with every hidden character escaped, and no
    script runs (no ``window.__pwned``, no dialog, nothing the CSP had to block)."""
    requester = '<img src=x onerror="window.__pwned=3">'
    token = console.gateway.token(user=requester)
    approval_id = held(console.gateway, refund(190, order="ORD-50005", reason=HOSTILE), justification=HOSTILE,
                       token=token)
    tab = as_person("bob")
    page = tab.page
    row = page.locator(f'tr[data-approval-id="{approval_id}"]')
    assert requester in row.inner_text()  # the markup as text
    shots.shoot(page, "approvals-queue-hostile")

    open_approval(tab, console, approval_id)
    shown = visible(HOSTILE)  # each hidden character once as \\u{XXXX}: exactly what the requester sent
    assert page.locator("#justification").inner_text() == shown
    assert shown_fields(page, "#arguments")["reason"] == f'"{shown}"'
    assert shown_fields(page, "#requester")["user_id"] == f'"{requester}"'
    for where in ("#arguments", "#justification"):
        text = page.locator(where).inner_text()
        assert "<script>window.__pwned=1</script>" in text and "<b>bold</b>" in text, where
        for hidden in "\u202e\u202c\u200b\u2066":
            assert f"u{{{ord(hidden):04X}}}" in text and hidden not in text, (where, hidden)
    assert page.locator("b", has_text="bold").count() == 0  # no element made of the requester's markup
    page.get_by_label("Reason for denying (optional)").fill(HOSTILE)
    page.locator("#deny").click()
    page.wait_for_url(f"{console.url}/approvals/{approval_id}?done=deny")
    assert page.locator("#votes tbody td").nth(3).inner_text() == shown
    shots.shoot(page, "approval-hostile")
    tab.watch.assert_inert(page)


def test_an_approver_decides_with_the_keyboard_alone_on_labelled_pages(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    """The queue and the approval page: every control labelled, one h1, a skip link first; Tab reaches the
    reason and the Approve button, Enter approves."""
    approval_id = held(console.gateway, refund(120, order="ORD-50006"))
    tab = as_person("bob")
    page = tab.page
    assert_accessible_basics(page)
    open_approval(tab, console, approval_id)
    assert_accessible_basics(page)
    tab_to(page, "approve-reason")
    page.keyboard.type("checked by keyboard")
    tab_to(page, "approve")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{console.url}/approvals/{approval_id}?done=approve")
    assert page.locator("#approval-status").inner_text() == "approved"
    assert "checked by keyboard" in page.locator("#votes").inner_text()
