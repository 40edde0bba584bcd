"""The responders' and operators' pages in a real browser, against a real gateway: search the audit and read
a request's timeline, set and lift a kill switch (the agent feels both), roll back a policy version (the
gateway follows), the live view; a person without the roles is refused every one of them."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import MCPError

from tests.browser.browsing import Shots
from tests.browser.conftest import Tab
from tests.browser.console_pages import (
    agent_call,
    assert_accessible_basics,
    assert_console_headers,
    held,
    refund,
)
from tests.e2e.harness import run_cli
from tests.support.console_stack import Console, start_console

INVOICE = "billing.get_invoice"


def _roles(config: dict[str, Any]) -> None:
    config.setdefault("admin", {}).update(responders=["issuer:corp/role:oncall"],
                                          operators=["issuer:corp/role:platform", "issuer:dev/role:platform"])


@pytest.fixture(scope="module")
def console(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The console of a deployment whose responders hold role oncall and operators role platform."""
    started = start_console(tmp_path_factory.mktemp("console"), edit=_roles)
    yield started
    started.stop()


def invoice(console: Console) -> Any:
    return agent_call(console.gateway, {"invoice_id": "INV-1001"}, tool=INVOICE)


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds (a change reaches the request path on the gateway's next read)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_responder_searches_the_audit_and_reads_a_requests_timeline(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    """Search by tool and decision finds the held refund; its timeline shows the decision; the chain is
    verified intact; a requester id made of markup is shown as text and runs nothing."""
    hostile_user = '<img src=x onerror="window.__pwned=4">'
    held(console.gateway, refund(260, order="ORD-60001"), token=console.gateway.token(user=hostile_user))
    tab = as_person("rita")
    page = tab.page
    page.locator("#nav-audit").click()
    page.wait_for_url(f"{console.url}/audit")
    page.locator('#chain-state[data-state="ok"]').wait_for(timeout=90_000)
    shots.shoot(page, "audit")

    page.locator("#f-tool").fill("billing.process_refund")
    page.locator("#f-decision").select_option("require_approval")
    page.locator("#audit-search-submit").click()
    page.locator("#audit-results").wait_for()
    assert_console_headers(page.reload())
    shots.shoot(page, "audit-results")
    page.locator("a.request-link").first.click()
    page.locator("#request-summary").wait_for()
    assert page.locator("#summary-decision").inner_text().startswith("require_approval")
    assert "ORD-60001" in page.locator("#timeline").inner_text()
    shots.shoot(page, "audit-timeline")

    request_id = page.locator("#request-id").inner_text()
    page.goto(f"{console.url}/audit")
    page.locator("#f-request-id").fill(request_id)
    page.locator("#f-user").fill(hostile_user)
    page.locator("#audit-search-submit").click()
    assert page.locator("a.request-link").count() >= 1 and hostile_user in page.locator("#audit-results").inner_text()
    tab.watch.assert_inert(page)


def test_a_responder_sets_and_lifts_a_kill_switch_and_the_agent_feels_both(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    assert not isinstance(invoice(console), MCPError)
    tab = as_person("rita")
    page = tab.page
    assert_console_headers(page.goto(f"{console.url}/containment"))
    shots.shoot(page, "containment")
    page.locator("#kill-kind").select_option("tool")
    page.locator("#kill-target").fill(INVOICE)
    reason = 'invoices leak <script>window.__pwned=5</script><img src=x onerror="window.__pwned=6"> <b>#42</b>'
    page.locator("#kill-reason").fill(reason)
    page.locator("#kill-set-review").click()
    assert page.locator("#confirm-target").inner_text() == INVOICE
    shots.shoot(page, "kill-switch-confirm")
    page.locator("#kill-set-confirm").click()
    assert page.locator("#containment-notice").inner_text() == "Kill switch set."
    row = page.locator("#active-switches tr[data-switch-id]")
    assert row.count() == 1 and INVOICE in row.inner_text() and reason in row.inner_text()  # markup as text
    shots.shoot(page, "kill-switch-set")
    eventually(lambda: isinstance(invoice(console), MCPError), "the agent's call is still served")

    switch_id = row.get_attribute("data-switch-id")
    page.locator(f"#lift-reason-{switch_id}").fill("fixed")
    page.locator(f"#lift-{switch_id}").click()
    assert page.locator("#containment-notice").inner_text() == "Kill switch lifted."
    assert page.locator("#no-active-switches").is_visible()
    shots.shoot(page, "kill-switch-lifted")
    eventually(lambda: not isinstance(invoice(console), MCPError), "the agent's call is still refused")
    tab.watch.assert_inert(page)


def test_an_operator_rolls_back_a_policy_and_the_gateway_follows(
        console: Console, as_person: Callable[[str], Tab], shots: Shots, tmp_path: Path) -> None:
    """A pushed version that locks billing-bot out of invoices, rolled back in the console: the start
    version is active again and the agent's call runs."""
    changed = tmp_path / "changed"
    shutil.copytree(console.gateway.config, changed, ignore=shutil.ignore_patterns("state-*", "*.log"))
    manifest = changed / "tools" / "billing" / "get_invoice.yml"
    data = yaml.safe_load(manifest.read_text())
    data["policy"]["allowed_callers"] = ["issuer:dev/role:finance"]
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    (changed / "policy" / "fixtures" / "billing.yaml").unlink()  # its golden cases expect billing-bot let in
    operator = console.gateway.token(user="ops", agent=None, roles=["platform"])
    pushed = run_cli("policy", "apply", str(changed), "-m", "lock invoices", "--admin-url",
                     console.gateway.admin_base, "--token", operator)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    eventually(lambda: isinstance(invoice(console), MCPError), "the pushed version is not in effect")

    tab = as_person("rita")
    page = tab.page
    assert_console_headers(page.goto(f"{console.url}/containment/policy"))
    active = page.locator("#active-version").inner_text()
    shots.shoot(page, "policy-versions")
    earlier = page.locator("#policy-history tr[data-version]", has=page.locator("form.rollback-form")).first
    target = earlier.get_attribute("data-version")
    assert target and target != active
    earlier.locator("form.rollback-form button").click()
    assert page.locator("#confirm-version").inner_text() == target
    page.locator("#rollback-message").fill("invoices back")
    shots.shoot(page, "policy-rollback-confirm")
    page.locator("#rollback-confirm").click()
    assert page.locator("#policy-notice").inner_text() == "Rolled back."
    assert page.locator("#active-version").inner_text() == target
    shots.shoot(page, "policy-rolled-back")
    eventually(lambda: not isinstance(invoice(console), MCPError), "the rolled-back version is not in effect")
    tab.watch.assert_inert(page)


def test_the_live_view_shows_the_calls(console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    assert not isinstance(invoice(console), MCPError)
    tab = as_person("rita")
    assert_console_headers(tab.page.goto(f"{console.url}/live"))
    assert INVOICE in tab.page.locator("#live-calls").inner_text()
    assert tab.page.locator("#live-queues").is_visible()
    shots.shoot(tab.page, "live")
    tab.watch.assert_inert(tab.page)


@pytest.mark.parametrize("path", ["/audit", "/containment", "/containment/policy", "/live"])
def test_a_person_without_the_roles_is_refused_every_responders_page(
        console: Console, as_person: Callable[[str], Tab], shots: Shots, path: str) -> None:
    tab = as_person("dave")
    answer = tab.page.goto(console.url + path)
    assert answer is not None and answer.status == 403
    assert tab.page.locator("#error-message").is_visible()
    assert tab.page.locator("#kill-set-form, #audit-search, #policy-history, #live-figures").count() == 0
    shots.shoot(tab.page, "refused" + path.replace("/", "-"))


def test_every_responders_page_labels_its_controls(console: Console, as_person: Callable[[str], Tab]) -> None:
    tab = as_person("rita")
    for path in ("/audit", "/containment", "/containment/policy", "/live"):
        tab.page.goto(console.url + path)
        assert_accessible_basics(tab.page)
