"""The policy page's replay-diff in a real browser against a real gateway: an operator compares the version
the gateway started with (A) and a pushed one (B: refunds in EUR only), replays the window's recorded
decisions against both, and sees the USD refund that A allowed and B denies in the result table; a form
whose fields were tampered with (hostile version ids or window) gets a clear error page and no replay runs."""

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
from tests.browser.console_pages import agent_call, assert_console_headers, refund
from tests.e2e.harness import run_cli
from tests.support.console_stack import Console, show_free_text, start_console

REPLAY_ERROR = "Not replayed: choose two stored versions (ps-…) and a window of 1h, 24h, 7d."


def _operators(config: dict[str, Any]) -> None:
    config.setdefault("admin", {}).update(operators=["issuer:corp/role:platform", "issuer:dev/role:platform"])


@pytest.fixture(scope="module")
def console(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The console of a deployment whose operators hold role platform (rita), with version B pushed after
    the agent's USD refund of 30 was allowed under A (the refund's reason recorded in clear: a hashed
    argument cannot be replayed)."""
    started = start_console(tmp_path_factory.mktemp("console"), edit=_operators, prepare=show_free_text)
    try:
        small = refund(30, order="ORD-20001", reason="damaged")
        assert not isinstance(agent_call(started.gateway, small), MCPError)
        changed = tmp_path_factory.mktemp("eur-only") / "deployment"
        shutil.copytree(started.gateway.config, changed, ignore=shutil.ignore_patterns("state-*", "*.log"))
        manifest = changed / "tools" / "billing" / "process_refund.yml"
        data = yaml.safe_load(manifest.read_text())
        data["policy"]["allowed_currencies"] = ["EUR"]
        manifest.write_text(yaml.safe_dump(data, sort_keys=False))
        shutil.rmtree(changed / "policy" / "fixtures")  # golden cases that expect USD refunds allowed
        operator = started.gateway.token(user="ops", agent=None, roles=["platform"])
        pushed = run_cli("policy", "apply", str(changed), "-m", "EUR refunds only", "--admin-url",
                         started.gateway.admin_base, "--token", operator)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        deadline = time.monotonic() + 60
        while not isinstance(agent_call(started.gateway, refund(31, order="ORD-20001")), MCPError):
            assert time.monotonic() < deadline, "version B is not in effect"
            time.sleep(0.2)
    except BaseException:
        started.stop()
        raise
    yield started
    started.stop()


def _open_diff(tab: Tab, console: Console) -> tuple[str, str]:
    """From the policy page, the diff of the start version (A) to the active one (B); their ids."""
    page = tab.page
    assert_console_headers(page.goto(f"{console.url}/containment/policy"))
    new = page.locator("#active-version").inner_text()
    versions = [v for v in page.locator("#diff-from option").evaluate_all("els => els.map(e => e.value)")]
    assert new in versions and len(versions) == 2, versions
    old = next(v for v in versions if v != new)
    page.locator("#diff-from").select_option(old)
    page.locator("#diff-to").select_option(new)
    page.locator("#policy-diff-submit").click()
    assert (page.locator("#diff-old").inner_text(), page.locator("#diff-new").inner_text()) == (old, new)
    return old, new


def test_an_operator_replays_two_versions_and_sees_the_decision_that_would_change(
        console: Console, as_person: Callable[[str], Tab], shots: Shots) -> None:
    tab = as_person("rita")
    page = tab.page
    old, new = _open_diff(tab, console)
    assert 'allowed_currencies' in page.locator("#policy-diff").inner_text()
    shots.shoot(page, "policy-diff")
    for _ in range(10):  # the allowed call's decision record reaches the trail within the writer's delay
        page.locator("#replay-window-choice").select_option("1h")
        page.locator("#replay-run").click()
        assert page.locator("h1").inner_text() == "Replay-diff results", page.content()
        if page.locator("#replay-changed").inner_text() != "0":
            break
        time.sleep(1)
        page.go_back()
    assert (page.locator("#replay-old").inner_text(), page.locator("#replay-new").inner_text(),
            page.locator("#replay-window").inner_text()) == (old, new, "1h")
    changed = int(page.locator("#replay-changed").inner_text())  # the refund of 30, and any probe A allowed
    rows = page.locator("#replay-rows tbody tr")
    assert changed >= 1 and rows.count() == changed
    for row in rows.all():
        cells = row.locator("td").all_inner_texts()
        assert cells[2:6] == ["billing-bot", "alice", "billing.process_refund", "allow → deny"], cells
        assert cells[6] == "" and cells[7] == "billing.process_refund/allowed_currencies", cells
    shots.shoot(page, "policy-replay-results")
    tab.watch.assert_inert(page)


@pytest.mark.parametrize(("field", "value"), [
    ("from", "ps-1$(touch {marker})"),
    ("to", "--config=/etc/passwd"),
    ("from", '"><img src=x onerror="window.__pwned=1">'),
    ("window", "1h; touch {marker}"),
    ("window", "30d"),
])
def test_a_tampered_replay_form_gets_an_error_page_and_nothing_runs(
        console: Console, as_person: Callable[[str], Tab], shots: Shots, tmp_path: Path, field: str,
        value: str) -> None:
    """The operator's own page, its fields edited (as a tampering extension or a devtools user would): the
    answer is a 400 that says what is accepted, never echoes the input, and no replay child starts (a
    command substitution would leave its marker file; a replay right after is not refused as "running")."""
    tab = as_person("rita")
    page = tab.page
    _open_diff(tab, console)
    marker = tmp_path / "replayed"
    hostile = value.format(marker=marker)
    if field == "window":
        page.locator("#replay-window-choice").evaluate("(el, v) => { el.options[0].value = v; el.value = v; }",
                                                       hostile)
    else:
        page.locator(f'#replay-form input[name="{field}"]').evaluate("(el, v) => { el.value = v; }", hostile)
    with page.expect_response(lambda r: r.url.endswith("/containment/policy/replay")) as answered:
        page.locator("#replay-run").click()
    assert answered.value.status == 400
    assert page.locator("main").inner_text().count(REPLAY_ERROR) == 1, page.locator("main").inner_text()
    assert hostile not in page.content() and "Replay-diff results" not in page.content()
    shots.shoot(page, f"policy-replay-refused-{field}")
    assert not marker.exists()
    tab.watch.assert_inert(page)
    _open_diff(tab, console)  # nothing was left running: a well-formed replay is not refused as busy
    page.locator("#replay-run").click()
    assert page.locator("h1").inner_text() == "Replay-diff results"
